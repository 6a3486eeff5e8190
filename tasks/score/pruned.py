"""Pruned scoring: FAISS top-k on the global embeddings, then the pair scorer on the k candidates only.

Re-ranking (measured in `benchmarks/scoring.py`): queries sorted by their first candidate (captions
of one image share candidates) and taken in chunks whose text features and union of candidate images
fit half the memory budget; one `similarity_candidates` call per chunk scores exactly each query's k
candidates (the head blocks the queries inside the other half of the budget). On the CPU, chunks are
scored by one single-threaded worker per torch thread, or one at a time on every thread, as the head's
`rerank_in_workers` says.
Dimension letters: Q queries, G gallery, k candidates, U union of a chunk's candidates, N regions,
L words, D dim.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import faiss
import numpy as np
import torch
from rich.progress import Progress
from torch import Tensor

from tasks.embed.index import IndexParams, search
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.scoring import FeatureSource, Rows, Shapes


class PairScorer(Protocol):
    """What re-ranking needs of a model (`RetrievalModel` is one)."""

    @property
    def rerank_in_workers(self) -> bool: ...

    def similarity_candidates(
        self, texts: TextFeatures, images: ImageFeatures, candidates: Tensor, *, memory_budget_mb: float = ...
    ) -> Tensor: ...


@dataclass(frozen=True)
class Candidates:
    ids: np.ndarray  # (Q, k) int64 gallery rows, -1 where the index found fewer than k
    scores: np.ndarray  # (Q, k) float32 first-stage (global cosine) scores


@dataclass(frozen=True)
class Reranked:
    scores: np.ndarray  # (Q, k) float32 pair scores of the candidates, -inf where the id is -1
    pairs_scored: int  # pairs the scorer computed: the valid candidates
    calls: int  # scorer calls
    workers: int = 1  # threads that scored chunks concurrently


def first_stage(
    index: faiss.Index, text_globals: np.ndarray, k: int, params: IndexParams = IndexParams()
) -> Candidates:
    """Top-k gallery rows per query from the FAISS index of the gallery globals."""
    scores, ids = search(index, text_globals, k, params)  # (Q, k), (Q, k)
    return Candidates(ids=ids.astype(np.int64, copy=False), scores=scores)


def batched_chunk_size(
    k: int, shapes: Shapes, memory_budget_mb: float, image_floats: int, bytes_per_float: int = 4
) -> int:
    """Most queries c (at least 1) whose text features plus their worst-case union of candidate images
    fit half the memory budget; `image_floats` is what the head holds per candidate image
    (`VariantHead.candidate_image_floats(N, D)`: its features, plus e.g. SCAN's region Gram matrix)."""
    half = max(1.0, memory_budget_mb) * 2**20 / 2
    text_bytes = bytes_per_float * shapes.words * shapes.dim
    image_bytes = bytes_per_float * image_floats

    def fits(c: int) -> bool:
        return c * text_bytes + min(shapes.num_images, c * k) * image_bytes <= half

    low, high = 1, max(1, shapes.num_texts)
    while low < high:  # the largest c that fits (bytes grow with c)
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def rerank(
    scorer: PairScorer,
    source: FeatureSource,
    candidates: Candidates,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    chunk: int = 8,
    memory_budget_mb: float = 512.0,
    workers: int | None = None,
    show_progress: bool = False,
) -> Reranked:
    """Pair scores of every query's candidates, `chunk` queries per `similarity_candidates` call (see
    `batched_chunk_size`); half the memory budget goes to the chunk's features, half to the head.

    With `workers` > 1 on the CPU (default: one per torch thread when the scorer's
    `rerank_in_workers`, else 1), that many threads score chunks concurrently, each with one torch
    thread (for kernels of many small ops that intra-op threads barely speed up): the budget holds per
    chunk, so up to `workers` chunks are in memory at once.
    """
    ids, chunk = candidates.ids, max(1, chunk)
    if workers is None:
        workers = torch.get_num_threads() if device.type == "cpu" and scorer.rerank_in_workers else 1
    parallel = workers > 1 and device.type == "cpu" and len(ids) > 1
    if parallel:
        chunk = min(chunk, -(-len(ids) // workers))  # at least one chunk per worker
    head_budget_mb = memory_budget_mb / 2
    scores = np.full(ids.shape, -np.inf, dtype=np.float32)  # (Q, k)
    order = np.argsort(ids[:, 0], kind="stable")  # neighbours share candidates
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("re-ranking", total=len(ids))

        def score_chunk(start: int) -> int:
            """Scores one chunk into `scores`; the number of scorer calls (0 or 1)."""
            rows = np.sort(order[start : start + chunk])  # (c,)
            sub = ids[rows]  # (c, k)
            valid = sub >= 0
            union = np.unique(sub[valid])  # (U,) sorted
            if union.size:
                # most of a gallery the plan budgeted whole (G <= c k): one contiguous read
                if 2 * union.size >= source.num_images and source.num_images <= sub.size:
                    image_rows: Rows = slice(0, source.num_images)
                    local = np.where(valid, sub, -1)  # (c, k) gallery rows
                else:
                    image_rows = union
                    local = np.where(valid, np.searchsorted(union, sub), -1)  # (c, k) rows of the union
                with torch.inference_mode():  # thread-local: set in the worker
                    block = scorer.similarity_candidates(
                        source.texts(rows, device, dtype),
                        source.images(image_rows, device, dtype),
                        torch.from_numpy(local).to(device),
                        memory_budget_mb=head_budget_mb,
                    )  # (c, k)
                scores[rows] = np.where(valid, block.float().cpu().numpy(), -np.inf)
            progress.advance(task, len(rows))
            return int(union.size > 0)

        starts = range(0, len(ids), chunk)
        if parallel:
            # OpenMP's thread count is per OS thread: each worker sets its own
            with (
                torch_threads(1),
                ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool,
            ):
                calls = sum(pool.map(score_chunk, starts))
        else:
            calls = sum(map(score_chunk, starts))
    return Reranked(
        scores=scores, pairs_scored=int((ids >= 0).sum()), calls=calls, workers=workers if parallel else 1
    )


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` inside, restored after (a process-wide setting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


BOUND_MARGIN = 0.01  # slack on the score bound: float rounding of bf16 scores and of FAISS's cosines


def rerank_adaptive(
    scorer: PairScorer,
    source: FeatureSource,
    candidates: Candidates,
    bound: tuple[float, np.ndarray],
    *,
    protect: int = 10,
    step: int = 8,
    **options: Any,
) -> Reranked:
    """`rerank` with a per-query k: each query's candidates (in first-stage order) are scored `step`
    at a time, and a query stops once no unscored candidate can enter its best `protect`: with
    `bound` = (w, b) such that every pair score is at most w x first-stage score + b[q], a candidate
    whose bound is below the `protect`-th best pair score so far never could. Unscored candidates keep
    -inf (ranked after the scored ones, in first-stage order, like the images outside the top k), so
    the best `protect` of each query equal those of `rerank` on all k. `options` go to `rerank`."""
    weight, offset = bound
    ids, first = candidates.ids, candidates.scores
    num_queries, k = ids.shape
    scores = np.full(ids.shape, -np.inf, dtype=np.float32)
    active = np.ones(num_queries, dtype=bool)
    pairs = calls = 0
    workers = 1
    for begin in range(0, k, max(1, step)):
        cols = slice(begin, begin + step)
        part = np.where(active[:, None], ids[:, cols], -1)
        if (part >= 0).any():
            done = rerank(scorer, source, Candidates(ids=part, scores=first[:, cols]), **options)
            scores[:, cols] = np.where(part >= 0, done.scores, scores[:, cols])
            pairs, calls, workers = pairs + done.pairs_scored, calls + done.calls, max(workers, done.workers)
        following = begin + step
        if following >= k:
            break
        scored = min(following, k)
        kth = (
            np.sort(scores[:, :scored], axis=1)[:, -protect]
            if scored >= protect
            else np.full(num_queries, -np.inf)
        )
        reachable = weight * first[:, following] + offset + BOUND_MARGIN  # (Q,) the best any later one gets
        active &= (ids[:, following] >= 0) & ~(reachable < kth)
        if not active.any():
            break
    return Reranked(scores=scores, pairs_scored=int(pairs), calls=calls, workers=workers)
