"""Training throughput of every registered variant's head on the feature cache, against this machine's
bounds measured in the same run (README "Time and storage").

For each variant: the main job's training config (`configs/main.toml`: frozen EfficientNet-Lite0 and
MiniLM, cached features, identity sampler, bf16), the trainer's own batches, optimizer, losses and
step (`tasks.train.loop.offline_trainer`): samples/s over whole epochs after one warm-up epoch, FLOPs
per sample (forward + backward, `torch.utils.flop_counter`), bytes per sample read from the cache
(float16 activations), and the percent of the compute bound (a dense 2048² matmul in the precision training runs in, samples/s x
FLOPs / its FLOP/s) and of the memory bound (a 256 MB copy, samples/s x bytes / its bytes/s).
Targets (issue "Time and storage"): single-stream heads >= 10,000 samples/s; the pairwise heads
(`cross_scan`, `hard_topk`, ...) >= 40% of their FLOP bound; `cross_fusion` >= 3x the 285 samples/s
of the previous release. Usage:

    .venv/bin/python benchmarks/head_throughput.py [--data DATA] [--variants global,cross_scan]
        [--epochs 2] [--threads 2] [--json OUT.json]

Without `--data` it builds the main job's synthetic DATA (500 identities) in a temporary folder,
and the feature cache under it (about two minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from flows.config import PipelineConfig, load_config, profile_path
from tasks.core.device import resolve_precision, set_threads
from tasks.data.prepare import prepare_dataset
from tasks.data.synth import generate
from tasks.train.loop import offline_trainer
from tbpr_models import VARIANTS

PREVIOUS_CROSS_FUSION = 285.0  # samples/s of cross_fusion in the previous release's README


def matmul_flops(dtype: torch.dtype, size: int = 2048, repeats: int = 10, seconds: float = 2.0) -> float:
    """FLOP/s of a dense (size x size) @ (size x size) product in `dtype`: `repeats` products, or fewer
    when they pass `seconds` (bf16 without hardware support runs ~100x slower)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a[:32] @ b  # warm-up: the kernel's first call
    start = time.perf_counter()
    a[:32] @ b
    probe = 2 * 32 * size**2 / (time.perf_counter() - start)
    if 2 * size**3 / probe > seconds:  # one full product would take longer than the budget
        return probe
    done, start = 0, time.perf_counter()
    while done < repeats and (done == 0 or time.perf_counter() - start < seconds):
        a @ b
        done += 1
    return 2 * size**3 * done / (time.perf_counter() - start)


def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s of copying a float32 tensor (read + write counted)."""
    source = torch.randn(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    target.copy_(source)
    start = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    return 2 * source.numel() * 4 * repeats / (time.perf_counter() - start)


def main_data(root: Path) -> Path:
    """The main job's synthetic DATA, built under `root`."""
    synth = load_config(PipelineConfig, profile_path("main")).data.synth
    source = root / "source"
    generate(source, identities=synth.identities, seed=synth.seed, held_out=synth.held_out, test=synth.test)
    prepare_dataset(source, "cuhk-pedes", root / "data")
    return root / "data"


def measure(data: Path, variant: str, epochs: int) -> dict[str, float | str]:
    config = load_config(PipelineConfig, profile_path("main")).train.for_variant(variant, seed=0)
    trainer = offline_trainer(data, config)
    model = trainer.initial_model()
    optimizer = trainer.new_optimizer(model)
    step_model = trainer.step_model(model)
    model.train()

    def epoch(index: int) -> tuple[int, float, float]:
        samples, start, cpu = 0, time.perf_counter(), time.process_time()
        for batch in trainer.batches(index):
            batch = batch.to(trainer.device)
            trainer.train_step(step_model, batch)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            samples += len(batch.person_ids)
        return samples, time.perf_counter() - start, time.process_time() - cpu

    epoch(1)  # warm-up: oneDNN kernels, page cache
    results = [epoch(index) for index in range(2, 2 + epochs)]
    samples = sum(r[0] for r in results)
    wall, cpu = sum(r[1] for r in results), sum(r[2] for r in results)
    batch = next(iter(trainer.batches(1))).to(trainer.device)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(step_model, batch)
    optimizer.zero_grad(set_to_none=True)
    rows = len(batch.person_ids)
    image_bytes = 1 if trainer.config.cache_dtype == "uint8" else 2  # the cache's codes or float16 values
    read = batch.pixels.numel() * image_bytes + (
        batch.text_hidden.numel() * 2 if batch.text_hidden is not None else 0
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "variant": variant,
        "samples_per_s": samples / wall,
        "samples_per_cpu_s": samples / cpu,
        "flops_per_sample": counter.get_total_flops() / rows,
        "bytes_per_sample": read / rows,
        "trainable_params": float(trainable),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="a prepared DATA folder (default: the main job's, built)")
    parser.add_argument("--variants", help="comma-separated (default: every registered variant)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per variant, after one warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows and bounds as JSON")
    args = parser.parse_args()
    set_threads(args.threads)
    variants = (
        args.variants.split(",") if args.variants else [v for v in VARIANTS if not v.startswith("control")]
    )
    with tempfile.TemporaryDirectory() as scratch:
        os.environ.setdefault("TBPR_HOME", str(Path(scratch) / "home"))  # the feature cache goes here
        data = args.data or main_data(Path(scratch))
        bf16, fp32, bandwidth = matmul_flops(torch.bfloat16), matmul_flops(torch.float32), copy_bandwidth()
        rows = [measure(data, variant, args.epochs) for variant in variants]
    # the compute bound of the precision training runs in here (`auto`: bf16 only where it is native)
    precision = resolve_precision(
        load_config(PipelineConfig, profile_path("main")).train.config.precision, torch.device("cpu")
    )
    peak = bf16 if precision == "bf16" else fp32
    table = Table(
        title=f"head training on the cache, {args.threads} threads, {precision}; bounds: bf16 matmul "
        f"{bf16 / 1e9:.0f} GFLOP/s, fp32 {fp32 / 1e9:.0f} GFLOP/s, copy {bandwidth / 1e9:.1f} GB/s"
    )
    for column in (
        "variant",
        "params",
        "samples/s",
        "per CPU-s",
        "MFLOP/sample",
        "KB/sample",
        "% FLOP",
        "% mem",
    ):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for row in rows:
        speed, flops, read = (
            float(row[k]) for k in ("samples_per_s", "flops_per_sample", "bytes_per_sample")
        )
        table.add_row(
            str(row["variant"]),
            f"{float(row['trainable_params']) / 1e6:.2f}M",
            f"{speed:,.0f}",
            f"{float(row['samples_per_cpu_s']):,.0f}",
            f"{flops / 1e6:.1f}",
            f"{read / 1e3:.0f}",
            f"{100 * speed * flops / peak:.0f}",
            f"{100 * speed * read / bandwidth:.1f}",
        )
    Console(width=120).print(table)
    fusion = [float(r["samples_per_s"]) for r in rows if r["variant"] == "cross_fusion"]
    if fusion:
        print(
            f"cross_fusion: {fusion[0] / PREVIOUS_CROSS_FUSION:.1f}x the previous release's {PREVIOUS_CROSS_FUSION:.0f}"
        )
    if args.json:
        bounds = {"bf16_flops": bf16, "fp32_flops": fp32, "copy_bytes_per_s": bandwidth}
        args.json.write_text(json.dumps({"bounds": bounds, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
