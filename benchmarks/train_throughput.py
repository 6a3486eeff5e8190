"""Training throughput per variant: samples/s of a full step (losses, backward, AdamW) at the default
model config (images 3x192x64, MiniLM text, D=256), with the trainer's own param groups and autocast.

Batches are synthetic (random pixels, captions of `--words` tokens), so the figure is the model's;
`--data DIR` also measures the input pipeline (Parquet -> decode -> augment -> collate) per
`num_workers`, to compare with it. Prints a table; the CPU-second figure is steadier when the
machine is shared. Usage:

    .venv/bin/python benchmarks/train_throughput.py [--device cpu] [--steps 20] [--batch 64]
        [--precision bf16] [--variants global,channel] [--threads 2] [--data DATA --workers 0,1,2]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from tasks.core.device import autocast, resolve_device, set_threads
from tasks.train.config import TrainConfig, model_config
from tasks.train.loop import param_groups
from tbpr_models import VARIANTS, Batch, build_model

NUM_CLASSES = 1000


def synthetic_batch(config: TrainConfig, batch: int, words: int, device: torch.device) -> Batch:
    mc = model_config(config, NUM_CLASSES)
    return Batch(
        pixels=torch.randn(batch, 3, mc.image.height, mc.image.width),  # (B, 3, H, W)
        input_ids=torch.randint(1000, mc.text.vocab_size, (batch, words)),  # (B, L)
        attention_mask=torch.ones(batch, words, dtype=torch.long),  # (B, L)
        person_ids=torch.randint(0, NUM_CLASSES, (batch,)),
    ).to(device)


def timed_steps(
    model: torch.nn.Module, config: TrainConfig, batches: Iterator[Batch], steps: int
) -> tuple[float, float]:
    """(samples per wall second, per process CPU second) over `steps` steps after two warm-up steps."""
    mc = model.config
    optimizer = torch.optim.AdamW(param_groups(model, mc, config), lr=config.lr)
    model.train()
    device = next(model.parameters()).device

    def step(batch: Batch) -> int:
        batch = batch.to(device)
        with autocast(device, config.precision):
            losses = model.losses(batch)
        total = torch.stack([mc.weight(k) * v.float() for k, v in losses.items()]).sum()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        return len(batch.person_ids)

    for _ in range(2):
        step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, start_cpu, samples = time.perf_counter(), time.process_time(), 0
    for _ in range(steps):
        samples += step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return samples / (time.perf_counter() - start), samples / (time.process_time() - start_cpu)


def step_throughput(variant: str, args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """(samples per wall second, samples per process CPU second) after two warm-up steps."""
    config = TrainConfig(variant=variant, batch_size=args.batch, precision=args.precision)
    model = build_model(model_config(config, NUM_CLASSES)).to(device)
    batch = synthetic_batch(config, args.batch, args.words, device)
    return timed_steps(model, config, itertools.repeat(batch), args.steps)


def loader_throughput(data: Path, workers: int, args: argparse.Namespace) -> float:
    """Samples/s of the training input pipeline alone (decode, augment, collate) over `--steps` batches."""
    from tasks.data.reader import load_prepared
    from tasks.train.batches import CaptionImageDataset, RandomBatchSampler, class_indices, epoch_loader
    from tbpr_models import build_tokenizer, image_transform

    mc = model_config(TrainConfig(), NUM_CLASSES)
    train = load_prepared(data, splits=("train",)).splits["train"]
    _, classes = class_indices(train.caption_pids)
    transform = image_transform(mc.image, train=True)
    dataset = CaptionImageDataset(train, classes, build_tokenizer(mc.text), transform)
    sampler = RandomBatchSampler(len(dataset), args.batch, seed=0)
    loader = epoch_loader(dataset, sampler, epoch=1, seed=0, num_workers=workers)
    start, samples = time.perf_counter(), 0
    for index, batch in enumerate(loader):
        samples += len(batch.person_ids)
        if index + 1 == args.steps:
            break
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--words", type=int, default=32, help="caption length in tokens")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--variants", default=",".join(sorted(VARIANTS)))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--data", type=Path, help="a prepared DATA folder: also time the input pipeline")
    parser.add_argument("--workers", default="0,1,2", help="num_workers values for --data")
    args = parser.parse_args()
    if args.threads:
        set_threads(args.threads)
    device = resolve_device(args.device)
    table = Table(title=f"train step, batch {args.batch}, {args.words} tokens, {args.precision}, {device}")
    for column in ("variant", "samples/s", "samples/CPU-s"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for variant in args.variants.split(","):
        wall, cpu = step_throughput(variant, args, device)
        table.add_row(variant, f"{wall:.1f}", f"{cpu:.1f}")
    console = Console()
    console.print(table)
    if args.data is not None:
        loading = Table(title=f"input pipeline, {args.data}")
        loading.add_column("num_workers")
        loading.add_column("samples/s", justify="right")
        for workers in (int(w) for w in args.workers.split(",")):
            loading.add_row(str(workers), f"{loader_throughput(args.data, workers, args):.1f}")
        console.print(loading)


if __name__ == "__main__":
    main()
