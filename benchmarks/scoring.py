"""Scoring cost: exhaustive against pruned (FAISS top-k, then the pair scorer on the candidates).

Prints, for galleries of 1k to 100k images with twice as many queries (synthetic features of the real
shapes: D=256, N=48 regions, captions of 16-40 real words padded to 48):
- exhaustive `cross_scan` scoring through `tasks.score.exhaustive` (a slice of the queries against
  the whole gallery, extrapolated to Q x G pairs: marked "extrapolated"), its pairs/s and GFLOP/s
  against a dense fp32 matmul measured in the same run;
- pruned scoring with k = 16, 64, 128: FAISS stage 1 (flat and HNSW) and re-ranking, each timed on a
  slice of the queries and extrapolated linearly (re-ranking k candidates costs the same per query
  at any gallery size); at CUHK-PEDES test scale (6,156 x 3,074) the pruned runs are complete;
- at CUHK-PEDES scale, complete pruned runs with k = 16, 64, 128 (one `similarity_candidates` call
  per chunk of queries);
- R1 of pruned against exhaustive: on planted synthetic features (persons = prototype regions plus
  noise; captions = noisy copies of some of the person's regions), or with `--checkpoint/--run` and
  `--data`, on the real test split of a trained model (embedded into `--emb` or a temporary folder).
Writes docs/scoring_time_vs_gallery.png and docs/r1_vs_cost.png. Figures are wall seconds; the
machine is shared, so the process CPU seconds are printed too.

Why this script is over ~400 lines: one run measures every line of README's scoring table and draws
both figures from the same timings, so the setups (planted features, a trained model's split) and the
plots stay beside the measurements they report.

Run: .venv/bin/python benchmarks/scoring.py [--threads 1] [--galleries 1000,3000,10000,30000,100000]
     [--run RUN_OR_CHECKPOINT --data DATA [--emb EMB]]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from tasks.core.device import PRECISIONS, set_threads
from tasks.embed.index import build_index
from tasks.embed.layout import EMBED_JSON
from tasks.score.exhaustive import exhaustive_similarity
from tasks.score.pruned import Candidates, Reranked, batched_chunk_size, first_stage, rerank
from tasks.score.ranking import global_similarity, rank_pruned, ranking_similarity
from tbpr_models import (
    ImageEncoderConfig,
    ModelConfig,
    RetrievalModel,
    TextEncoderConfig,
    build_model,
    variant_config,
)
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.metrics import retrieval_metrics
from tbpr_models.scoring import BlockPlan, Shapes, plan_blocks

D, N, L, WORDS = 256, 48, 48, (16, 40)
CUHK = (6_156, 3_074)
NOISE = (1.7, 2.5, 0.45)  # planted: region noise, word noise, share of filler words
CPU = torch.device("cpu")


@dataclass
class Clock:
    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def clock() -> Iterator[Clock]:
    result = Clock()
    wall, cpu = time.perf_counter(), time.process_time()
    yield result
    result.wall, result.cpu = time.perf_counter() - wall, time.process_time() - cpu


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class Synthetic:
    """A FeatureSource: planted globals (persons of 2 images, 2 captions per image); local features
    either planted (`planted=True`, small sizes) or replicated from a pool (timing only)."""

    num_images: int
    num_texts: int
    seed: int = 0
    planted: bool = False
    pool: int = 1024
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        persons = (self.num_images + 1) // 2
        self.image_pids = np.arange(self.num_images) // 2
        self.text_image = np.arange(self.num_texts) % self.num_images  # caption q describes image q % G
        self.text_pids = self.image_pids[self.text_image]
        lengths = rng.integers(WORDS[0], WORDS[1] + 1, self.num_texts if self.planted else self.pool)
        self.mask = np.arange(L)[None, :] < lengths[:, None]  # (Q or pool, L)
        if self.planted:
            protos = rng.standard_normal((persons, N, D)).astype(np.float32)  # person regions
            image_local = protos[self.image_pids] + NOISE[0] * rng.standard_normal((self.num_images, N, D))
            chosen = rng.integers(0, N, (self.num_texts, L))  # (Q, L) region each word describes
            words = protos[self.text_pids[:, None], chosen]
            words = words + NOISE[1] * rng.standard_normal((self.num_texts, L, D))
            common = rng.standard_normal((64, D)).astype(np.float32)  # words that describe nobody
            filler = rng.random((self.num_texts, L)) < NOISE[2]
            words[filler] = common[rng.integers(0, 64, int(filler.sum()))]
            self.arrays = {
                "image_local": image_local.astype(np.float32),
                "text_local": words.astype(np.float32),
            }
            self.arrays["image_global"] = unit(image_local.mean(axis=1))
            self.arrays["text_global"] = unit((words * self.mask[..., None]).sum(axis=1))
        else:
            proto = rng.standard_normal((persons, D)).astype(np.float32)
            image_global = unit(proto[self.image_pids] + 0.8 * rng.standard_normal((self.num_images, D)))
            noise = rng.standard_normal((self.num_texts, D))
            self.arrays = {
                "image_global": image_global,
                "text_global": unit(image_global[self.text_image] + 1.0 * noise),
                "image_local": rng.standard_normal((self.pool, N, D)).astype(np.float32),
                "text_local": rng.standard_normal((self.pool, L, D)).astype(np.float32),
            }

    def _rows(self, rows: slice | np.ndarray, count: int) -> np.ndarray:
        index = np.arange(count)[rows] if isinstance(rows, slice) else np.asarray(rows)
        return index if self.planted else index % self.pool

    def image_globals(self) -> np.ndarray:
        return self.arrays["image_global"]

    def text_globals(self) -> np.ndarray:
        return self.arrays["text_global"]

    def images(self, rows: slice | np.ndarray, device: torch.device, dtype: torch.dtype) -> ImageFeatures:
        index = self._rows(rows, self.num_images)
        local = torch.from_numpy(self.arrays["image_local"][index]).to(device, dtype)
        return ImageFeatures(global_=torch.zeros(len(index), D), local=local)

    def texts(self, rows: slice | np.ndarray, device: torch.device, dtype: torch.dtype) -> TextFeatures:
        index = self._rows(rows, self.num_texts)
        local = torch.from_numpy(self.arrays["text_local"][index]).to(device, dtype)
        mask = torch.from_numpy(self.mask[index])
        return TextFeatures(global_=torch.zeros(len(index), D), local=local, mask=mask)


def dense_gflops(dtype: torch.dtype, repeats: int = 3, size: int = 2048) -> tuple[float, float]:
    """GFLOP/s of a dense (size x size) matmul in `dtype` per wall second and per process CPU second
    (best of `repeats` each), at the current thread count."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        with clock() as took:
            a @ b
        times.append(took)
    flops = 2 * size**3 / 1e9
    return flops / min(t.wall for t in times), flops / min(t.cpu for t in times)


def scan_flops_per_pair(words: float, regions: int = N, dim: int = D) -> float:
    """Matmul FLOPs of the Gram formulation per pair: word-region cosines (2 L N D) + the attended
    vectors' norms through the region Gram matrix (2 L N^2); the Gram matrices themselves not counted."""
    return 2 * words * regions * dim + 2 * words * regions * regions


def pair_scorer() -> RetrievalModel:
    """A `cross_scan` model (the encoders are tiny; only the head's two scorers are used)."""
    config = ModelConfig(
        variant=variant_config("cross_scan"),
        image=ImageEncoderConfig(widths=(4, 4, 4, 4)),
        text=TextEncoderConfig(kind="small", hidden=16, layers=1, heads=2),
        embed_dim=D,
    )
    model = build_model(config, load_pretrained=False).eval()
    return model


def shapes(source: Synthetic) -> Shapes:
    return Shapes(source.num_texts, source.num_images, L, N, D)


@dataclass(frozen=True)
class Pruned:
    stage1: float  # wall seconds per query
    rerank: float  # wall seconds per query
    pairs: float  # pairs scored per query
    cpu: float  # process CPU seconds per query (both stages)


def time_pruned(
    scorer: RetrievalModel,
    source: Synthetic,
    index: faiss.Index,
    k: int,
    queries: int,
    budget: float,
    dtype: torch.dtype = torch.float32,
) -> Pruned:
    rows = np.arange(min(queries, source.num_texts))
    with clock() as stage1:
        candidates = first_stage(index, source.text_globals()[rows], k)
    with clock() as second:
        reranked = run_rerank(scorer, _Rows(source, rows), candidates, budget, dtype)
    count = len(rows)
    return Pruned(
        stage1.wall / count,
        second.wall / count,
        reranked.pairs_scored / count,
        (stage1.cpu + second.cpu) / count,
    )


def run_rerank(
    scorer: RetrievalModel,
    source: Any,
    candidates: Candidates,
    budget: float,
    dtype: torch.dtype = torch.float32,
) -> Reranked:
    """`rerank` with the chunk size `tasks.score.run` would pick."""
    size = Shapes(source.num_texts, source.num_images, L, N, D)
    image_floats = scorer.head.candidate_image_floats(N, D)
    chunk = batched_chunk_size(candidates.ids.shape[1], size, budget, image_floats, dtype.itemsize)
    return rerank(scorer, source, candidates, device=CPU, dtype=dtype, chunk=chunk, memory_budget_mb=budget)


class _Rows:
    """A view of `source` restricted to some queries (row i of the view = query rows[i])."""

    def __init__(self, source: Synthetic, rows: np.ndarray) -> None:
        self.source, self.rows = source, rows
        self.num_images, self.num_texts = source.num_images, len(rows)

    def images(self, rows: Any, device: torch.device, dtype: torch.dtype) -> ImageFeatures:
        return self.source.images(rows, device, dtype)

    def texts(self, rows: Any, device: torch.device, dtype: torch.dtype) -> TextFeatures:
        return self.source.texts(self.rows[rows], device, dtype)


def exhaustive_rate(
    scorer: RetrievalModel, budget: float, dtype: torch.dtype, repeats: int = 2
) -> tuple[Clock, BlockPlan, float]:
    """(seconds per pair, block plan, mean real words) of exhaustive scoring, from 2 x 2 full blocks
    of the plan at CUHK-PEDES shapes: blocks have the same shape at any Q and G, so the cost per pair is
    the same and totals are extrapolated from it."""
    plan = plan_blocks(Shapes(*CUHK, L, N, D), budget, scorer.head.pair_floats(L, N))
    source = Synthetic(2 * plan.gallery_block, 2 * plan.query_block, seed=1)
    pairs = source.num_images * source.num_texts
    best = min(
        (time_exhaustive_full(scorer, source, plan, dtype) for _ in range(repeats)), key=lambda c: c.wall
    )
    return Clock(best.wall / pairs, best.cpu / pairs), plan, float(source.mask.sum(axis=1).mean())


def time_exhaustive_full(
    scorer: RetrievalModel, source: Synthetic, plan: BlockPlan, dtype: torch.dtype = torch.float32
) -> Clock:
    with clock() as took:
        exhaustive_similarity(scorer.similarity, source, plan, device=CPU, dtype=dtype)
    return took


def scaling(
    scorer: RetrievalModel, galleries: list[int], ks: list[int], per_pair_cpu: float, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Scoring CPU seconds per gallery size (steadier than wall time on a shared machine): exhaustive
    (extrapolated from the per-pair cost) and pruned per (index, k), timed on a slice of the queries."""
    curves: dict[str, list[float]] = {"exhaustive (extrapolated)": []}
    print(
        f"\n== scoring time against gallery size (Q = 2G; pruned timed on {args.slice_queries} queries and "
        "extrapolated; totals in process CPU seconds) =="
    )
    header = (
        "G",
        "Q",
        "index",
        "build s",
        "k",
        "stage1 ms/q",
        "rerank ms/q",
        "CPU ms/q",
        "pruned s",
        "exhaust. s",
    )
    print(" ".join(f"{h:>11}" for h in header), f"{'speed-up':>9}")
    for gallery in galleries:
        source = Synthetic(gallery, 2 * gallery, seed=2)
        exhaustive = per_pair_cpu * gallery * 2 * gallery
        curves["exhaustive (extrapolated)"].append(exhaustive)
        for kind in ("flat", "hnsw"):
            with clock() as built:
                index = build_index(source.image_globals(), kind)  # type: ignore[arg-type]
            for k in ks:
                t = time_pruned(scorer, source, index, k, args.slice_queries, args.budget)
                total = t.cpu * source.num_texts
                curves.setdefault(f"pruned {kind} k={k}", []).append(total)
                row = (gallery, source.num_texts, kind, f"{built.wall:.2f}", k, f"{1e3 * t.stage1:.3f}")
                row += (f"{1e3 * t.rerank:.2f}", f"{1e3 * t.cpu:.2f}", f"{total:.1f}", f"{exhaustive:.0f}")
                print(" ".join(f"{v:>11}" for v in row), f"{exhaustive / total:>8.0f}x")
    return curves


def linear_in_queries(scorer: RetrievalModel, args: argparse.Namespace) -> None:
    source = Synthetic(10_000, 20_000, seed=3)
    index = build_index(source.image_globals(), "hnsw")
    times = {q: time_pruned(scorer, source, index, 64, q, args.budget) for q in (256, 1024)}
    small, big = (t.cpu * q for q, t in times.items())
    print(
        f"\npruned (hnsw, k=64, G=10k): 256 queries {small:.2f} CPU s, 1024 queries {big:.2f} CPU s: x{big / small:.2f} for x4 queries"
    )


def cuhk_scale(
    scorer: RetrievalModel, rates: dict[str, Clock], ks: list[int], args: argparse.Namespace
) -> None:
    """Complete pruned runs at CUHK-PEDES test scale against extrapolated exhaustive scoring, in each
    precision (pruned and exhaustive compared in the same precision)."""
    queries, gallery = CUHK
    source = Synthetic(gallery, queries, seed=4)
    indexes = {kind: build_index(source.image_globals(), kind) for kind in ("flat", "hnsw")}  # type: ignore[arg-type]
    for precision, rate in rates.items():
        exhaustive, exhaustive_cpu = rate.wall * queries * gallery, rate.cpu * queries * gallery
        print(
            f"\n== CUHK-PEDES test scale, {precision}: {queries:,} queries x {gallery:,} images; exhaustive "
            f"{exhaustive:.0f} s wall, {exhaustive_cpu:.0f} s CPU (extrapolated; target < 120 s on 2 cores) =="
        )
        for kind in ("flat", "hnsw") if precision == "fp32" else ("flat",):
            for k in ks:
                t = time_pruned(scorer, source, indexes[kind], k, queries, args.budget, PRECISIONS[precision])
                total = (t.stage1 + t.rerank) * queries
                print(
                    f"pruned {kind:>4} k={k:<3}: {total:6.1f} s wall ({t.cpu * queries:6.1f} s CPU, complete), "
                    f"{t.pairs * queries / 1e6:.2f}M pairs, {t.pairs / (t.rerank or 1e-9):,.0f} pairs/s re-ranking; "
                    f"{exhaustive / total:5.1f}x less wall time than exhaustive, "
                    f"{exhaustive_cpu / (t.cpu * queries):5.1f}x less CPU time (target >= 30x)"
                )


@dataclass(frozen=True)
class Point:
    label: str
    r1: float
    seconds: float
    pairs: float


def planted_r1(scorer: RetrievalModel, ks: list[int], args: argparse.Namespace) -> list[Point]:
    """R1 of exhaustive and pruned scoring on planted synthetic features (complete runs)."""
    source = Synthetic(args.planted_gallery, 2 * args.planted_gallery, seed=5, planted=True)
    with clock() as took:
        similarity = exhaustive_similarity(
            scorer.similarity,
            source,
            plan_blocks(shapes(source), args.budget, scorer.head.pair_floats(L, N)),
            device=CPU,
        )
    points = [
        Point(
            "exhaustive",
            retrieval_metrics(similarity, source.text_pids, source.image_pids)["R1"],
            took.wall,
            similarity.size,
        )
    ]
    stage1 = global_similarity(source.text_globals(), source.image_globals())
    points.append(
        Point(
            "global cosine only", retrieval_metrics(stage1, source.text_pids, source.image_pids)["R1"], 0.0, 0
        )
    )
    for kind in ("flat", "hnsw", "ivf"):
        index = build_index(source.image_globals(), kind)  # type: ignore[arg-type]
        for k in ks:
            with clock() as took:
                candidates: Candidates = first_stage(index, source.text_globals(), k)
                reranked = run_rerank(scorer, source, candidates, args.budget)
            ranking = rank_pruned(candidates, reranked, stage1)
            r1 = retrieval_metrics(ranking_similarity(ranking), source.text_pids, source.image_pids)["R1"]
            points.append(Point(f"pruned {kind} k={k}", r1, took.wall, reranked.pairs_scored))
    return points


def real_r1(ks: list[int], args: argparse.Namespace) -> list[Point]:
    """R1 of exhaustive and pruned scoring of a trained model on the real test split (tasks.score.run)."""
    from tasks.embed.encode import embed_split
    from tasks.score.run import score
    from tasks.tracking.models import resolve_checkpoint

    emb = Path(args.emb) if args.emb else Path(tempfile.mkdtemp(prefix="tbpr-bench-emb-"))
    if not (emb / EMBED_JSON).is_file():
        checkpoint, info = resolve_checkpoint(args.run)
        embed_split(Path(args.data), checkpoint, emb, model_ref=args.run, train_run_id=info.get("run_id"))
    out = Path(tempfile.mkdtemp(prefix="tbpr-bench-score-"))
    runs: list[tuple[str, dict[str, Any]]] = [("exhaustive", dict(mode="exhaustive"))]
    runs += [
        (f"pruned {kind} k={k}", dict(mode="pruned", index=kind, top_k=k))
        for kind in ("flat", "hnsw", "ivf")
        for k in ks
    ]
    runs += [
        ("exhaustive bf16", dict(mode="exhaustive", precision="bf16")),
        ("pruned flat k=64 bf16", dict(mode="pruned", index="flat", top_k=64, precision="bf16")),
    ]
    points = []
    for label, options in runs:
        result = score(
            emb,
            out / label.replace(" ", "_"),
            track=False,
            memory_budget_mb=args.budget,
            **options,
        )
        points.append(Point(label, result.metrics["R1"], result.seconds, result.pairs_scored))
    return points


def report_r1(points: list[Point], title: str) -> None:
    base = points[0].r1
    print(f"\n== R1, {title} (target: pruned k=64 within 0.5 points of exhaustive) ==")
    for p in points:
        print(
            f"{p.label:>22}: R1 {p.r1:6.2f} ({p.r1 - base:+5.2f})  {p.seconds:8.2f} s  {p.pairs:>12,.0f} pairs"
        )


def plots(
    galleries: list[int], curves: dict[str, list[float]], points: list[Point], title: str, docs: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, seconds in curves.items():
        ax.plot(galleries, seconds, "--" if "exhaustive" in label else "-", marker="o", label=label)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="gallery images G (queries Q = 2G)",
        ylabel="scoring seconds (process CPU)",
        title="cross_scan scoring time against gallery size",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "scoring_time_vs_gallery.png", dpi=120)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.get_cmap("tab20").colors
    for i, p in enumerate(x for x in points if x.pairs):
        marker = "x" if "bf16" in p.label else "o"  # pruned runs of one k share x: markers shrink with i
        ax.scatter(p.pairs, p.r1, label=p.label, color=colors[i % 20], marker=marker, s=90 - 6 * i)
    ax.set(
        xscale="log",
        xlabel="pairs scored by the pair scorer",
        ylabel="R1 (%)",
        title=f"R1 against cost: {title}",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "r1_vs_cost.png", dpi=120)
    print(f"\nwrote {docs / 'scoring_time_vs_gallery.png'} and {docs / 'r1_vs_cost.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2, help="torch and FAISS threads")
    parser.add_argument("--galleries", default="1000,3000,10000,30000,100000")
    parser.add_argument("--ks", default="16,64,128")
    parser.add_argument("--slice-queries", type=int, default=512)
    parser.add_argument("--budget", type=float, default=512.0, help="memory budget of a scoring block, MB")
    parser.add_argument("--planted-gallery", type=int, default=500)
    parser.add_argument("--run", help="train run id, models:/ URI or checkpoint folder (with --data)")
    parser.add_argument("--data", help="prepared DATA folder of the trained model")
    parser.add_argument("--emb", help="EMB folder to reuse or fill")
    parser.add_argument("--docs", default="docs")
    args = parser.parse_args()
    set_threads(args.threads)
    galleries = [int(g) for g in args.galleries.split(",")]
    ks = [int(k) for k in args.ks.split(",")]
    print(
        f"threads {args.threads} (torch and FAISS); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    scorer = pair_scorer()
    rates: dict[str, Clock] = {}  # exhaustive seconds per pair
    for precision, dtype in PRECISIONS.items():
        dense, dense_cpu = dense_gflops(dtype)
        rate, plan, words = exhaustive_rate(scorer, args.budget, dtype)
        rates[precision], per_pair, per_pair_cpu = rate, rate.wall, rate.cpu
        flops = scan_flops_per_pair(words, N, D) / 1e9
        print(f"dense {precision} matmul 2048^2: {dense:.1f} GFLOP/s wall, {dense_cpu:.1f} per CPU second")
        print(
            f"exhaustive cross_scan {precision} (blocks {plan.query_block} x {plan.gallery_block}, {words:.1f} real words, "
            f"N={N}, D={D}): {1 / per_pair:,.0f} pairs/s wall ({1 / per_pair_cpu:,.0f} per CPU s), "
            f"{flops / per_pair:.1f} GFLOP/s wall = {100 * flops / per_pair / dense:.0f}% of the dense matmul; "
            f"per CPU second {flops / per_pair_cpu:.1f} = {100 * flops / per_pair_cpu / dense_cpu:.0f}% (target >= 30%); "
            f"CUHK-PEDES scale {per_pair * CUHK[0] * CUHK[1]:.0f} s wall (target < 120 s on 2 cores)"
        )
    curves = scaling(scorer, galleries, ks, rates["fp32"].cpu, args)
    linear_in_queries(scorer, args)
    cuhk_scale(scorer, rates, ks, args)
    if args.run and args.data:
        points, title = real_r1(ks, args), f"trained model {args.run}"
    else:
        points, title = planted_r1(scorer, ks, args), f"planted synthetic features (G={args.planted_gallery})"
    report_r1(points, title)
    plots(galleries, curves, points, title, Path(args.docs))


if __name__ == "__main__":
    main()
