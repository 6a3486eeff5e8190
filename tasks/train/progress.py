"""A rich progress bar for one training epoch: steps, loss and samples/s."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

_REFRESH_STEPS = 10  # read the loss back (a device sync) every this many steps


class EpochProgress:
    """`with EpochProgress(epoch, epochs, steps) as bar: bar.advance(samples, loss)`; silent when disabled."""

    def __init__(self, epoch: int, epochs: int, steps: int, enabled: bool = True) -> None:
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[speed]:.1f} samples/s"),
            TimeRemainingColumn(),
            disable=not enabled,
            transient=False,
        )
        self.task = self.progress.add_task(
            "train", total=steps, epoch=f"{epoch}/{epochs}", loss=float("nan"), speed=0.0
        )
        self.samples = 0
        self.steps = 0
        self.start = time.perf_counter()

    def __enter__(self) -> EpochProgress:
        self.progress.start()
        self.start = time.perf_counter()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.progress.stop()

    def advance(self, samples: int, loss: Tensor) -> None:
        self.samples += samples
        self.steps += 1
        fields: dict[str, Any] = {}
        if self.steps % _REFRESH_STEPS == 1 or self.steps == self.progress.tasks[0].total:
            speed = self.samples / max(time.perf_counter() - self.start, 1e-9)
            fields = {"loss": float(loss.detach()), "speed": speed}
        self.progress.update(self.task, advance=1, **fields)
