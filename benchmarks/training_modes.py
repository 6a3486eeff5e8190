"""Which training mode to run on a CPU: val and test R1 of `global` after the same training time.

Modes (README, "Feature cache"), each a real `train_variant` run (MLflow store in a temporary folder):
- `frozen`: ImageNet EfficientNet-Lite0 and MiniLM fixed, projections and head trained on the cache;
- `top`: the top 2 image stages and the top MiniLM layer trained on the cache of the stages below;
- `backbone_then_frozen`: `top` for half the time (the backbone fine-tuned once), then a fresh head
  on the cache of those encoders for the other half: what every variant x seed does in the main job;
- `end_to_end`: images decoded and augmented every step, both encoders trained (MiniLM's lower 3
  layers fixed, the default).
Each mode gets `--minutes` of training (the trainer's time budget: no epoch starts once it is spent;
"train s" counts epochs with their val evaluation); "wall s" adds the cache build (once per dataset and
backbone, shared by every variant and seed), model loading and the test evaluation.
Usage:

    .venv/bin/python benchmarks/training_modes.py --data DATA [--minutes 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tasks.core.device import set_threads
from tasks.train.config import TrainConfig
from tasks.train.loop import TrainResult, train_variant

FROZEN = {"image": {"freeze": True}, "text": {"freeze_layers": 6}}
TOP = {"image": {"freeze_stages": 16}, "text": {"freeze_layers": 5}}


def run(data: Path, out: Path, minutes: float, **settings: Any) -> tuple[TrainResult, float]:
    config = TrainConfig.model_validate(
        {
            "variant": "global",
            "sampler": "identity",
            "device": "cpu",
            "epochs": 30,
            "time_budget_minutes": minutes,
            "output_dir": out,
            **settings,
        }
    )
    start = time.perf_counter()
    result = train_variant(data, config, progress=False)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=3.0, help="training time per mode")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="frozen,top,backbone_then_frozen,end_to_end")
    args = parser.parse_args()
    set_threads(args.threads)
    console = Console(width=140)  # the table is read from logs: never truncate its columns
    table = Table(
        title=f"global on {args.data.name}: {args.minutes:g} min of training per mode, {args.threads} threads"
    )
    for column in (
        "mode",
        "epochs",
        "samples/s",
        "train s",
        "wall s",
        "best epoch",
        "val R1",
        "test R1",
        "test mAP",
    ):
        table.add_column(column, justify="left" if column == "mode" else "right")
    with tempfile.TemporaryDirectory() as root:
        os.environ["TBPR_HOME"] = root  # a fresh feature cache, MLflow store and runs folder
        for mode in args.modes.split(","):
            out = Path(root) / mode
            results = []
            if mode == "frozen":
                results.append(run(args.data, out, args.minutes, features="cached", model=FROZEN))
            elif mode == "top":
                results.append(run(args.data, out, args.minutes, features="cached", model=TOP))
            elif mode == "backbone_then_frozen":
                results.append(
                    run(args.data, out / "backbone", args.minutes / 2, features="cached", model=TOP)
                )
                init = str(results[0][0].checkpoint_dir)
                head = run(
                    args.data, out / "head", args.minutes / 2, features="cached", model=FROZEN, init_from=init
                )
                results.append(head)
            elif mode == "end_to_end":
                results.append(run(args.data, out, args.minutes, features="raw"))
            else:
                raise SystemExit(f"unknown mode {mode!r}")
            result = results[-1][0]
            table.add_row(
                mode,
                "+".join(str(r.epochs) for r, _ in results),
                "/".join(f"{r.samples_per_s:.0f}" for r, _ in results),
                f"{sum(r.train_seconds for r, _ in results):.0f}",
                f"{sum(w for _, w in results):.0f}",
                str(result.best_epoch),
                f"{result.val_metrics['R1']:.2f}",
                f"{result.test_metrics['R1']:.2f}",
                f"{result.test_metrics['mAP']:.2f}",
            )
            console.print(
                f"{mode}: test R1 {result.test_metrics['R1']:.2f} (val {result.val_metrics['R1']:.2f})"
            )
    console.print(table)


if __name__ == "__main__":
    main()
