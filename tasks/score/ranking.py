"""Full rankings from exhaustive scores or from pruned (re-ranked + first-stage) scores, and the
top-20 `rankings.parquet` table (`tasks.score.layout`). Ties go to the lower gallery row: the rule of
`tbpr_models.metrics` (`rank_order`), as in every metric.
Dimension letters: Q queries, G gallery, k candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from tasks.score.layout import RANKINGS_SCHEMA, RANKINGS_TOP
from tasks.score.pruned import Candidates, Reranked
from tbpr_models.metrics import rank_order


@dataclass(frozen=True)
class Ranking:
    order: np.ndarray  # (Q, G) int64 gallery rows, best first
    scores: np.ndarray  # (Q, G) float32 scores in rank order (pruned: pair scores, then stage-1 scores)


def rank_exhaustive(similarity: np.ndarray) -> Ranking:
    """Every query's gallery rows by descending score, ties by gallery order."""
    order, values = rank_order(similarity)
    return Ranking(order=order, scores=values)


def global_similarity(text_globals: np.ndarray, image_globals: np.ndarray) -> np.ndarray:
    """(Q, G) float32 cosine of the L2-normalised globals (the first-stage score)."""
    return (torch.from_numpy(text_globals) @ torch.from_numpy(image_globals).t()).numpy()  # (Q, G)


def rank_pruned(candidates: Candidates, reranked: Reranked, stage1: np.ndarray) -> Ranking:
    """Re-ranked candidates first (by pair score, ties by gallery order), then every other image in
    first-stage order (`stage1` (Q, G), ties by gallery order)."""
    num_queries, num_images = stage1.shape
    valid = candidates.ids >= 0  # (Q, k)
    # candidates by gallery row first (invalid last), then a stable sort by descending pair score
    by_row = np.argsort(np.where(valid, candidates.ids, num_images), axis=1, kind="stable")  # (Q, k)
    ids = np.take_along_axis(candidates.ids, by_row, axis=1)
    pair = np.take_along_axis(np.where(valid, reranked.scores, -np.inf), by_row, axis=1).astype(np.float32)
    cand_order, cand_scores = rank_order(pair)  # (Q, k)
    cand_ids = np.take_along_axis(ids, cand_order, axis=1)  # (Q, k)
    first_order, first_scores = rank_order(stage1)  # (Q, G)
    is_candidate = np.zeros((num_queries, num_images + 1), dtype=bool)  # last column: sink for -1
    np.put_along_axis(is_candidate, np.where(cand_ids >= 0, cand_ids, num_images), True, axis=1)
    tail = ~np.take_along_axis(is_candidate[:, :num_images], first_order, axis=1)  # (Q, G)
    order = np.empty((num_queries, num_images), dtype=np.int64)
    scores = np.empty((num_queries, num_images), dtype=np.float32)
    counts = (cand_ids >= 0).sum(axis=1)  # (Q,) valid candidates per query
    for q in range(num_queries):
        kq = counts[q]  # the -inf invalid entries sort last
        order[q, :kq], scores[q, :kq] = cand_ids[q, :kq], cand_scores[q, :kq]
        order[q, kq:], scores[q, kq:] = first_order[q][tail[q]], first_scores[q][tail[q]]
    return Ranking(order=order, scores=scores)


def ranking_similarity(ranking: Ranking) -> np.ndarray:
    """A (Q, G) float32 matrix whose descending order is the ranking (-rank, exact below 2**24),
    for `retrieval_metrics`."""
    num_images = ranking.order.shape[1]
    ranks = np.broadcast_to(-np.arange(num_images, dtype=np.float32), ranking.order.shape)  # (Q, G)
    similarity = np.empty(ranking.order.shape, dtype=np.float32)
    np.put_along_axis(similarity, ranking.order, ranks, axis=1)
    return similarity


def rankings_table(
    ranking: Ranking, query_ids: np.ndarray, image_ids: np.ndarray, top: int = RANKINGS_TOP
) -> pa.Table:
    """The top `top` of every query: query_id (caption_id), rank 1..top, image_id, score."""
    top = min(top, ranking.order.shape[1])
    num_queries = ranking.order.shape[0]
    return pa.table(
        {
            "query_id": np.repeat(query_ids.astype(np.int64), top),
            "rank": np.tile(np.arange(1, top + 1, dtype=np.int32), num_queries),
            "image_id": image_ids[ranking.order[:, :top]].reshape(-1).astype(np.int64),  # (Q*top,)
            "score": ranking.scores[:, :top].reshape(-1),  # (Q*top,)
        },
        schema=RANKINGS_SCHEMA,
    )
