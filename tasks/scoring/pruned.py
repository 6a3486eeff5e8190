"""Pruned scoring: FAISS top-k on the global embeddings, then the pair scorer on the k candidates only.

Two re-ranking strategies, measured in `benchmarks/scoring.py`:
- `per_query`: one scorer call per query on its own k candidates (exactly Q*k pairs);
- `union`: queries sorted by their first candidate, taken in groups; one call per group on the union
  of the group's candidates (more pairs, far fewer calls; captions of one image share candidates).
Dimension letters: Q queries, G gallery, k candidates, U union of a group's candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np
import torch
from rich.progress import Progress

from tasks.faiss_index import IndexParams, search
from tasks.scoring.exhaustive import Scorer, Shapes
from tasks.scoring.source import FeatureSource

RerankStrategy = Literal["per_query", "union"]


@dataclass(frozen=True)
class Candidates:
    ids: np.ndarray  # (Q, k) int64 gallery rows, -1 where the index found fewer than k
    scores: np.ndarray  # (Q, k) float32 first-stage (global cosine) scores


@dataclass(frozen=True)
class Reranked:
    scores: np.ndarray  # (Q, k) float32 pair scores of the candidates, -inf where the id is -1
    pairs_scored: int  # pairs the scorer computed (>= valid candidates with `union`)
    calls: int  # scorer calls


def first_stage(
    index: faiss.Index, text_globals: np.ndarray, k: int, params: IndexParams = IndexParams()
) -> Candidates:
    """Top-k gallery rows per query from the FAISS index of the gallery globals."""
    scores, ids = search(index, text_globals, k, params)  # (Q, k), (Q, k)
    return Candidates(ids=ids.astype(np.int64, copy=False), scores=scores)


def union_group_size(k: int, shapes: Shapes, memory_budget_mb: float) -> int:
    """Largest group b (at most 16) whose worst case b x (b*k) pair block fits the budget."""
    pair_bytes = 4 * (4 * shapes.words * shapes.regions if shapes.pairwise else 1)
    pairs = max(1.0, memory_budget_mb * 2**20 / pair_bytes)
    return int(max(1, min(16, math.isqrt(int(pairs / max(1, k))))))


@torch.inference_mode()
def rerank(
    scorer: Scorer,
    source: FeatureSource,
    candidates: Candidates,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    strategy: RerankStrategy = "union",
    group: int = 8,
    show_progress: bool = False,
) -> Reranked:
    """Pair scores of every query's candidates with `scorer` (model.similarity)."""
    if strategy == "per_query":
        return _per_query(scorer, source, candidates.ids, device, dtype, show_progress)
    return _union(scorer, source, candidates.ids, max(1, group), device, dtype, show_progress)


def _per_query(
    scorer: Scorer,
    source: FeatureSource,
    ids: np.ndarray,
    device: torch.device,
    dtype: torch.dtype,
    show_progress: bool,
) -> Reranked:
    scores = np.full(ids.shape, -np.inf, dtype=np.float32)  # (Q, k)
    pairs = 0
    chunk = 256  # queries whose text features are loaded at once
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("re-ranking", total=len(ids))
        for q0 in range(0, len(ids), chunk):
            q1 = min(q0 + chunk, len(ids))
            texts = source.texts(slice(q0, q1), device, dtype)
            for q in range(q0, q1):
                valid = ids[q] >= 0  # (k,)
                images = source.images(ids[q][valid], device, dtype)
                block = scorer(texts.select(slice(q - q0, q - q0 + 1)), images)  # (1, kq)
                scores[q, valid] = block[0].float().cpu().numpy()
                pairs += int(valid.sum())
            progress.advance(task, q1 - q0)
    return Reranked(scores=scores, pairs_scored=pairs, calls=len(ids))


def _union(
    scorer: Scorer,
    source: FeatureSource,
    ids: np.ndarray,
    group: int,
    device: torch.device,
    dtype: torch.dtype,
    show_progress: bool,
) -> Reranked:
    scores = np.full(ids.shape, -np.inf, dtype=np.float32)  # (Q, k)
    order = np.argsort(ids[:, 0], kind="stable")  # neighbours share candidates
    pairs = calls = 0
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("re-ranking", total=len(ids))
        for start in range(0, len(ids), group):
            rows = np.sort(order[start : start + group])  # (b,)
            sub = ids[rows]  # (b, k)
            valid = sub >= 0
            union = np.unique(sub[valid])  # (U,) sorted
            if union.size == 0:
                continue
            block = scorer(source.texts(rows, device, dtype), source.images(union, device, dtype))  # (b, U)
            columns = np.searchsorted(union, np.where(valid, sub, union[0]))  # (b, k)
            gathered = np.take_along_axis(block.float().cpu().numpy(), columns, axis=1)  # (b, k)
            scores[rows] = np.where(valid, gathered, -np.inf)
            pairs += len(rows) * len(union)
            calls += 1
            progress.advance(task, len(rows))
    return Reranked(scores=scores, pairs_scored=pairs, calls=calls)
