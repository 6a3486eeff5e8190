"""Throughput of the SCAN pair scorer (`scan_similarity`) next to a dense matmul, at CUHK-PEDES test
scale (6,156 captions x 3,074 images = 18.9M pairs, D=256). Times a slice of the captions against the
whole gallery and extrapolates; prints pairs/s, GFLOP/s (matmul FLOPs of the Gram formulation) and the
share of a dense matmul's GFLOP/s measured in the same run, in the same dtype.

Run: .venv/bin/python benchmarks/pair_scorer.py [--threads 2] [--queries 128] [--repeats 3]
The machine is shared: scorer and matmul runs are interleaved; rates are the best of `repeats` runs and
"% dense" is the median over repeats of (scorer GFLOP/s) / (matmul GFLOP/s) of the same repeat.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table

from tasks.core.device import set_threads
from tbpr_models.variants.cross_scan import scan_similarity

QUERIES, GALLERY, DIM = 6_156, 3_074, 256
DENSE = 2048  # size of the square reference matmul


@dataclass(frozen=True)
class Case:
    dtype: torch.dtype
    max_words: int  # L, padded length
    real_words: int  # mean number of real words per caption
    regions: int  # N


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def scan_flops_per_pair(words: float, regions: int, dim: int) -> float:
    """Word-region cosines (2 L N D) + the attended vectors' norms through the Gram matrix (2 L N^2)."""
    return 2 * words * regions * dim + 2 * words * regions * regions


def run_case(case: Case, queries: int, repeats: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(queries, case.max_words, DIM, generator=gen).to(case.dtype)
    lengths = torch.randint(case.real_words - 4, case.real_words + 5, (queries, 1), generator=gen)
    mask = torch.arange(case.max_words).unsqueeze(0) < lengths  # (Q, L)
    images = torch.randn(GALLERY, case.regions, DIM, generator=gen).to(case.dtype)
    a = torch.randn(DENSE, DENSE, generator=gen).to(case.dtype)
    pairs = queries * GALLERY
    flops = pairs * scan_flops_per_pair(float(mask.sum()) / queries, case.regions, DIM)
    scan_rates, dense_rates = [], []
    with torch.inference_mode():
        scan_similarity(text[:8], mask[:8], images)  # warm-up
        for _ in range(repeats):  # interleaved, so both see the same load on a shared machine
            dense_rates.append(2 * DENSE**3 / seconds(lambda: a @ a))
            scan_rates.append(flops / seconds(lambda: scan_similarity(text, mask, images)))
    ratio = statistics.median(s / d for s, d in zip(scan_rates, dense_rates, strict=True))
    gflops = max(scan_rates) / 1e9
    pairs_per_s = max(scan_rates) / flops * pairs
    return {
        "pairs_per_s": pairs_per_s,
        "gflops": gflops,
        "dense_gflops": max(dense_rates) / 1e9,
        "ratio": ratio,
        "full_minutes": QUERIES * GALLERY / pairs_per_s / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--queries", type=int, default=128, help="captions timed (extrapolated to 6,156)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    set_threads(args.threads)
    cases = [
        Case(dtype, max_words, real, regions)
        for dtype in (torch.float32, torch.bfloat16)
        for max_words, real, regions in ((48, 32, 48), (48, 32, 24), (48, 44, 48))
    ]
    table = Table(title=f"scan_similarity, {QUERIES:,} x {GALLERY:,} pairs, D={DIM}, {args.threads} threads")
    for column in (
        "dtype",
        "words (mean)",
        "N",
        "pairs/s",
        "GFLOP/s",
        "dense GFLOP/s",
        "% dense",
        "full run",
    ):
        table.add_column(column, justify="right")
    for case in cases:
        result = run_case(case, args.queries, args.repeats)
        table.add_row(
            str(case.dtype).removeprefix("torch."),
            str(case.real_words),
            str(case.regions),
            f"{result['pairs_per_s']:,.0f}",
            f"{result['gflops']:.0f}",
            f"{result['dense_gflops']:.0f}",
            f"{100 * result['ratio']:.0f}%",
            f"{result['full_minutes']:.1f} min",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
