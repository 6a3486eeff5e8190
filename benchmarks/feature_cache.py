"""The feature cache's speed-up: cache build time, and training samples/s on the cache against end to end.

For one variant on a prepared DATA folder, with the trainer's own batches, param groups and autocast:
- `end_to_end`: decoded, augmented images and captions through both encoders (the trainer's default);
- each cached mode: batches gathered from the feature cache, only the stages above the split point run.
Modes (`--modes`): `frozen` (backbones fixed: projections and head train), `top` (the top 2 image stages
and the top MiniLM layer train on cached lower activations). The cache is built in a fresh folder, so
its time is the cold build (both images and their mirrors, every split). Usage:

    .venv/bin/python benchmarks/feature_cache.py --data DATA [--variant global] [--steps 30]
        [--batch 64] [--threads 2] [--modes frozen,top]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from train_throughput import timed_steps  # benchmarks/ is the script's folder

from tasks.cache.features import build_cache
from tasks.core.device import resolve_device, set_threads
from tasks.data.reader import load_prepared
from tasks.train.batches import (
    CachedBatches,
    CaptionImageDataset,
    RandomBatchSampler,
    class_indices,
    epoch_loader,
)
from tasks.train.config import TrainConfig, model_config
from tbpr_models import Batch, build_model, build_tokenizer, image_transform

# The model overrides of each training mode (README, "Feature cache"); end_to_end is the default config.
MODES: dict[str, dict[str, object]] = {
    "end_to_end": {},
    "frozen": {"image": {"freeze": True}, "text": {"freeze_layers": 6}},
    "top": {"image": {"freeze_stages": 16}, "text": {"freeze_layers": 5}},
}


def forever(make: Callable[[int], Iterator[Batch]]) -> Iterator[Batch]:
    epoch = 0
    while True:
        epoch += 1
        yield from make(epoch)


def _loader(dataset: CaptionImageDataset, sampler: RandomBatchSampler, epoch: int) -> Iterator[Batch]:
    return iter(epoch_loader(dataset, sampler, epoch=epoch, seed=0, num_workers=1))


def _cached(source: CachedBatches, sampler: RandomBatchSampler, epoch: int) -> Iterator[Batch]:
    return source.epoch(sampler, epoch=epoch, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--variant", default="global")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--modes", default="frozen,top")
    parser.add_argument("--e2e-steps", type=int, default=8, help="steps of the (slow) end-to-end mode")
    args = parser.parse_args()
    if args.threads:
        set_threads(args.threads)
    device = resolve_device(args.device)
    data = load_prepared(args.data)
    train = data.splits["train"]
    _, classes = class_indices(train.caption_pids)
    console = Console(width=140)
    table = Table(title=f"{args.variant}, batch {args.batch}, {device}, {torch.get_num_threads()} threads")
    for column in ("mode", "cache build s", "images/s", "samples/s", "samples/CPU-s", "speed-up"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    rows: dict[str, tuple[float, float]] = {}
    for mode in ["end_to_end", *args.modes.split(",")]:
        config = TrainConfig(variant=args.variant, batch_size=args.batch, model=MODES[mode], sampler="random")
        mc = model_config(config, len(set(classes.tolist())))
        torch.manual_seed(0)
        model = build_model(mc).to(device)
        tokenize = build_tokenizer(mc.text)
        sampler = RandomBatchSampler(len(classes), args.batch, seed=0)
        build_s = images_per_s = float("nan")
        if mode == "end_to_end":
            dataset = CaptionImageDataset(train, classes, tokenize, image_transform(mc.image, train=True))
            make = functools.partial(_loader, dataset, sampler)
            steps = args.e2e_steps
        else:
            with tempfile.TemporaryDirectory() as root:
                start = time.perf_counter()
                cache = build_cache(data, model, tokenize, root=Path(root), device=device, progress=False)
                build_s = time.perf_counter() - start
                images = sum(len(s.image_ids) for s in data.splits.values())
                images_per_s = images / build_s
                cached = {k: v for k, v in cache.splits.items()}
                source = CachedBatches(cached["train"], train, classes, tokenize, cache.point)
                make = functools.partial(_cached, source, sampler)
                steps = args.steps
                rows[mode] = timed_steps(model, config, forever(make), steps)
        if mode == "end_to_end":
            rows[mode] = timed_steps(model, config, forever(make), steps)
        wall, cpu = rows[mode]
        base = rows["end_to_end"][0]
        table.add_row(
            mode,
            "" if mode == "end_to_end" else f"{build_s:.1f}",
            "" if mode == "end_to_end" else f"{images_per_s:.0f}",
            f"{wall:.1f}",
            f"{cpu:.1f}",
            f"{wall / base:.1f}x",
        )
        console.print(f"{mode}: {wall:.1f} samples/s ({cpu:.1f}/CPU-s)")
    console.print(table)


if __name__ == "__main__":
    main()
