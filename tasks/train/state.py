"""The training folder and its resumable state, never pickled: tensors in safetensors, the rest JSON.

```
TRAIN/train_config.json            the TrainConfig of the run
TRAIN/epoch_NNN/model.safetensors  a checkpoint (`tbpr_models.save_checkpoint`, with config.json):
TRAIN/epoch_NNN/config.json        `embed`, `score` and `search` take this folder
TRAIN/epoch_NNN/train_state.*      optimizer, scheduler, history (.safetensors + .json)
```
An epoch folder is written under a temporary name and renamed, so an existing one is always
complete; the last and the best epoch are kept. Random state needs no saving: every generator is
reseeded from (seed, epoch) at each epoch start.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from tasks.core.errors import TbprError
from tasks.tracking.selection import best_epoch_index, plateaued

TRAIN_CONFIG = "train_config.json"
STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch did; handed to `on_epoch_end` callbacks and kept in the state's history."""

    epoch: int
    loss: float
    losses: dict[str, float]
    val: dict[str, float]
    samples_per_s: float
    seconds: float
    peak_memory_mb: float = 0.0  # CUDA allocator peak, or this process's peak RSS on the CPU


STOP_EPOCHS = "epochs"  # ran every configured epoch
STOP_PLATEAU = "plateau"  # the smoothed val R1 stopped improving for `patience` epochs
STOP_BUDGET = "budget"  # the user's wall-clock safety limit cut it: the result depends on the machine
STOP_REASONS = (STOP_EPOCHS, STOP_PLATEAU, STOP_BUDGET)


@dataclass
class TrainState:
    epoch: int = 0  # last completed epoch (0: none)
    step: int = 0  # optimizer steps so far
    train_seconds: float = 0.0  # time spent training and evaluating, summed over resumed calls
    history: list[EpochRecord] = field(default_factory=list)
    smooth: int = 1  # the window of `smoothed` val R1 (the run's TrainConfig.smooth)

    def val_r1(self) -> list[float]:
        return [r.val["R1"] for r in self.history]

    @property
    def best(self) -> EpochRecord:
        """The selected epoch (`selection.best_epoch_index`: the best smoothed val R1)."""
        return self.history[best_epoch_index(self.val_r1(), self.smooth)]

    def plateaued(self, patience: int, min_delta: float = 0.0) -> bool:
        """`selection.plateaued` on this run's val R1."""
        return plateaued(self.val_r1(), self.smooth, patience, min_delta)


def epoch_dir(root: Path, epoch: int) -> Path:
    return root / f"epoch_{epoch:03d}"


def last_complete_epoch(root: Path) -> int:
    epochs = [int(p.name.removeprefix("epoch_")) for p in root.glob("epoch_[0-9][0-9][0-9]") if p.is_dir()]
    return max(epochs, default=0)


def seed_everything(seed: int, epoch: int, rank: int = 0) -> None:
    """torch, numpy and random seeded from (seed, epoch): an epoch replays the same after a resume.
    torch's generator differs per data-parallel process (`rank`), so that their dropout and masking differ."""
    value = seed * 1_000_003 + epoch
    torch.manual_seed(value + 7_919 * rank)
    np.random.seed(value % 2**32)
    random.seed(value)


def _split_tensors(value: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """JSON-able copy of `value` with every tensor moved into `tensors` and replaced by {"tensor": key}."""
    if isinstance(value, Tensor):
        tensors[prefix] = value.detach().cpu().contiguous()
        return {"tensor": prefix}
    if isinstance(value, dict):
        return {"dict": [[k, _split_tensors(v, f"{prefix}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        items = [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(value)]
        return {"tuple" if isinstance(value, tuple) else "list": items}
    return value


def _join_tensors(value: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        ((kind, inner),) = value.items()
        if kind == "tensor":
            return tensors[inner]
        if kind == "dict":
            return {k: _join_tensors(v, tensors) for k, v in inner}
        if kind in ("list", "tuple"):
            items = [_join_tensors(v, tensors) for v in inner]
            return tuple(items) if kind == "tuple" else items
    return value


def save_train_state(
    directory: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainState,
    scaler: Any | None = None,
) -> None:
    """Write the optimizer, the scheduler, the fp16 loss scaler and `state` into `directory` (a
    not-yet-renamed epoch dir)."""
    tensors: dict[str, Tensor] = {}
    document = {
        "optimizer": _split_tensors(optimizer.state_dict(), "optimizer", tensors),
        "scheduler": _split_tensors(scheduler.state_dict(), "scheduler", tensors),
        "scaler": _split_tensors(scaler.state_dict(), "scaler", tensors) if scaler is not None else {},
        "state": asdict(state),
    }
    save_file(tensors, str(directory / STATE_TENSORS))
    (directory / STATE_JSON).write_text(json.dumps(document, indent=1))


def load_train_state(
    directory: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
    scaler: Any | None = None,
) -> TrainState:
    """Restore the optimizer, the scheduler (and the fp16 loss scaler) from `directory`; returns the
    saved TrainState."""
    tensors = load_file(str(directory / STATE_TENSORS), device=str(device))
    document = json.loads((directory / STATE_JSON).read_text())
    try:
        optimizer.load_state_dict(_join_tensors(document["optimizer"], tensors))
        scheduler.load_state_dict(_join_tensors(document["scheduler"], tensors))
        saved_scaler = _join_tensors(document.get("scaler") or {}, tensors)
        if scaler is not None and saved_scaler:
            scaler.load_state_dict(saved_scaler)
        raw = document["state"]
        return TrainState(
            epoch=int(raw["epoch"]),
            step=int(raw["step"]),
            train_seconds=float(raw["train_seconds"]),
            history=[EpochRecord(**record) for record in raw["history"]],
            smooth=int(raw.get("smooth", 1)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # not the object save_state wrote
        raise TbprError(
            f"{directory / STATE_JSON} is damaged ({type(exc).__name__}: {exc}); train without --resume"
        ) from exc


def commit_epoch_dir(staging: Path, final: Path) -> None:
    """Rename a fully written staging directory to its epoch name (replacing a stale one)."""
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)


def prune_epoch_dirs(root: Path, keep: set[int]) -> None:
    """Delete the epoch directories whose epoch is not in `keep` (the last and the best stay), and the
    optimizer state of every kept one but the last: only the last is resumed from."""
    last = max(keep)
    for path in root.glob("epoch_[0-9][0-9][0-9]"):
        epoch = int(path.name.removeprefix("epoch_"))
        if epoch not in keep:
            shutil.rmtree(path)
        elif epoch != last:
            (path / STATE_TENSORS).unlink(missing_ok=True)


def drop_optimizer_state(root: Path) -> None:
    """A finished run is never resumed: its optimizer state (twice the trained weights) goes."""
    for path in root.glob(f"epoch_[0-9][0-9][0-9]/{STATE_TENSORS}"):
        path.unlink()
