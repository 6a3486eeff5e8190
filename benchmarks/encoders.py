"""Training throughput of the image and text encoders: forward + backward samples/s.

Runs each encoder at the default sizes of `ModelConfig` (images 3x192x64, captions of 48 tokens),
batch 64, under `torch.autocast(device, torch.bfloat16)`, and prints one line per encoder. Usage:

    .venv/bin/python benchmarks/encoders.py [--threads 2] [--steps 5] [--batch 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import torch
from torch import Tensor, nn

from tasks.core.device import set_threads
from tbpr_models.config import ImageEncoderConfig, TextEncoderConfig
from tbpr_models.encoders import build_image_encoder, build_text_encoder


def measure(
    step: Callable[[], Tensor], params: list[nn.Parameter], steps: int, batch: int, device: str
) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second of this process) over `steps` forward+backward
    passes after one warm-up pass. The second figure is steadier on a machine shared with other jobs."""

    def once() -> None:
        for p in params:
            p.grad = None
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = step().float().square().mean()
        loss.backward()

    once()
    if device == "cuda":
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        once()
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return steps * batch / wall, steps * batch / cpu


Row = tuple[str, nn.Module, Callable[[], Tensor]]


def image_rows(batch: int, device: str) -> list[Row]:
    base = ImageEncoderConfig()
    pixels = torch.randn(batch, 3, base.height, base.width, device=device)
    rows: list[Row] = []
    for kind in ("resnet_small", "efficientnet_lite0"):
        encoder = build_image_encoder(replace(base, kind=kind)).to(device).train()
        name = f"image {kind} 3x{base.height}x{base.width} (N={encoder.grid[0] * encoder.grid[1]})"
        rows.append((name, encoder, partial(encoder, pixels)))
    return rows


def text_rows(batch: int, device: str) -> list[Row]:
    base = TextEncoderConfig()
    ids = torch.randint(1000, 20000, (batch, base.max_length), device=device)
    mask = torch.ones_like(ids)
    mask[:, 24:] = 0  # captions of ~24 tokens padded to max_length
    configs = {
        "text minilm (embeddings frozen)": replace(base, kind="minilm", freeze_layers=0),
        "text minilm (embeddings + 3 layers frozen)": replace(base, kind="minilm", freeze_layers=3),
        "text small (2 layers, 256)": replace(base, kind="small"),
    }
    rows: list[Row] = []
    for name, config in configs.items():
        encoder = build_text_encoder(config).to(device).train()
        rows.append((f"{name} L={base.max_length}", encoder, partial(encoder, ids, mask)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default="", help="run only the rows whose name contains this text")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    set_threads(args.threads)
    print(f"device={args.device} threads={args.threads} batch={args.batch} autocast=bf16 steps={args.steps}")
    for name, module, forward in image_rows(args.batch, args.device) + text_rows(args.batch, args.device):
        if args.only not in name:
            continue
        params = [p for p in module.parameters() if p.requires_grad]
        rate, cpu_rate = measure(forward, params, args.steps, args.batch, args.device)
        trainable = sum(p.numel() for p in params) / 1e6
        print(
            f"{name:<52} {rate:7.1f} samples/s {cpu_rate:7.1f} per CPU-s  ({trainable:.1f}M trainable params)"
        )


if __name__ == "__main__":
    main()
