"""Retrieval metrics with the literature's definitions (text-to-image person retrieval).

Every gallery image of the query's person is a positive. Ranks are 1-based.

The tie rule of the whole project lives here: **equal scores rank the lower gallery row first** (a
stable sort of the descending scores). `rank_order` sorts rows by it, `best_by_score` merges lists of
(row, score) by it, `count_above` counts the items ranked above one by it; scoring (`tasks.score`:
one process, sharded, search) calls these, never a sort of its own. `per_query_from_ranks` is the one
per-query metrics function: every path finds the 1-based rank of each (query, positive) pair, from a
(Q, G) matrix (`per_query_metrics`), a ranking (`positive_ranks`) or shards, and hands it over.
Dimension letters: Q queries, G gallery, P (query, positive) pairs, S a block's gallery items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

ArrayLike = np.ndarray | Tensor
_PAIR_CHUNK = 2048  # (query, positive) pairs counted at once: bounds the (chunk, G) temporaries


@dataclass(frozen=True)
class _Ranked:
    first_hit: Tensor  # (Q,) rank of the first positive
    average_precision: Tensor  # (Q,)
    inverse_negative_penalty: Tensor  # (Q,) positives / rank of the hardest positive


def _as_tensor(x: ArrayLike) -> Tensor:
    return x.detach().cpu() if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))


def _inputs(similarity: ArrayLike, query_pids: ArrayLike, gallery_pids: ArrayLike) -> tuple[Tensor, ...]:
    sim = _as_tensor(similarity)
    queries = _as_tensor(query_pids).reshape(-1)
    gallery = _as_tensor(gallery_pids).reshape(-1)
    if sim.ndim != 2 or sim.shape != (queries.numel(), gallery.numel()):
        raise ValueError(
            f"similarity has shape {tuple(sim.shape)}; expected (Q, G) = ({queries.numel()}, {gallery.numel()})"
        )
    if sim.shape[0] == 0:
        raise ValueError("no queries: the similarity matrix has zero rows")
    if not sim.is_floating_point():
        sim = sim.double()
    elif sim.dtype in (torch.float16, torch.bfloat16):
        sim = sim.float()
    if bool(torch.isnan(sim).any()):
        raise ValueError("similarity contains NaN; check the model's scores")
    return sim, queries, gallery


def rank_order(scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Each row's columns best first, ties by the lower column (the gallery row): (Q, G) int64 order
    and the (Q, G) scores in that order."""
    values, order = torch.sort(_as_tensor(scores), dim=1, descending=True, stable=True)  # (Q, G)
    return order.numpy(), values.numpy()


def best_by_score(rows: np.ndarray, scores: np.ndarray, top: int | None = None) -> np.ndarray:
    """(Q, top) positions along axis 1 of the lists `rows` (Q, n) int64 gallery rows (-1: none) with
    `scores` (Q, n): by descending score, ties by the lower gallery row, the -1 entries last."""
    valid = rows >= 0
    tie = np.where(valid, rows, np.iinfo(np.int64).max)
    key = -np.where(valid, scores, -np.inf).astype(np.float64)
    return np.lexsort((tie, key), axis=1)[:, :top]


def count_above(
    block: ArrayLike, score: ArrayLike, row: ArrayLike, start: int = 0, exclude: ArrayLike | None = None
) -> Tensor:
    """(P,) int64: how many items of each row of `block` (P, S), the scores of gallery rows start ..
    start + S - 1, rank above the item of gallery row `row[p]` scored `score[p]`: a higher score, or
    an equal one at a lower gallery row. `exclude` (P, S) bool: items not counted."""
    block, score, row = _as_tensor(block), _as_tensor(score).reshape(-1, 1), _as_tensor(row).reshape(-1)
    columns = torch.arange(start, start + block.shape[1])  # (S,) gallery rows
    if exclude is not None:
        above = (block > score) | ((block == score) & (columns < row.reshape(-1, 1)))
        return (above & ~_as_tensor(exclude)).sum(dim=1).long()
    higher = (block > score).sum(dim=1)
    equal = (block == score).sum(dim=1)  # includes the item itself when the block holds its row
    itself = ((row >= start) & (row < start + block.shape[1])).long()
    rank = higher.long()
    tied = (equal > itself).nonzero().reshape(-1)  # items sharing their score: rare in floats
    if tied.numel() > 0:
        before = (block[tied] == score[tied]) & (columns < row[tied].reshape(-1, 1))  # (T, S)
        rank[tied] += before.sum(dim=1)
    return rank


def _positive_ranks(sim: Tensor, query_index: Tensor, gallery_index: Tensor) -> Tensor:
    """1-based rank of each (query, positive) pair under the tie rule (`count_above`)."""
    ranks = []
    for start in range(0, query_index.numel(), _PAIR_CHUNK):
        rows = sim[query_index[start : start + _PAIR_CHUNK]]  # (P, G)
        cols = gallery_index[start : start + _PAIR_CHUNK]  # (P,)
        score = rows.gather(1, cols.reshape(-1, 1))  # (P, 1)
        ranks.append(count_above(rows, score, cols) + 1)
    return torch.cat(ranks)


def positive_pairs(query_pids: ArrayLike, gallery_pids: ArrayLike) -> tuple[Tensor, Tensor]:
    """(P,) query index and (P,) gallery row of every (query, positive) pair, grouped by query; a
    ValueError naming the queries whose person has no gallery image."""
    queries, gallery = _as_tensor(query_pids).reshape(-1), _as_tensor(gallery_pids).reshape(-1)
    query_index, gallery_index = (queries.reshape(-1, 1) == gallery.reshape(1, -1)).nonzero(as_tuple=True)
    positives = torch.bincount(query_index, minlength=queries.numel())  # (Q,)
    missing = (positives == 0).nonzero().reshape(-1)
    if missing.numel() > 0:
        shown = [int(i) for i in missing[:5]]
        raise ValueError(
            f"{missing.numel()} query(ies) have no positive in the gallery, e.g. query index {shown} "
            f"(person id {[int(queries[i]) for i in shown]}); every query's person needs a gallery image"
        )
    return query_index, gallery_index


def positive_ranks(
    order: np.ndarray, query_pids: ArrayLike, gallery_pids: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """(P,) query index and (P,) 1-based rank of every (query, positive) pair in a full ranking
    (`order` (Q, G) gallery rows best first, as `rank_order` gives)."""
    query_index, gallery_index = (t.numpy() for t in positive_pairs(query_pids, gallery_pids))
    rank_of = np.empty_like(order)  # (Q, G) the position of each gallery row
    np.put_along_axis(rank_of, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)
    return query_index, rank_of[query_index, gallery_index] + 1


def _ranked(similarity: ArrayLike, query_pids: ArrayLike, gallery_pids: ArrayLike) -> _Ranked:
    """Ranks only the positives (no full sort of every row): O(Q x G x positives per query)."""
    sim, queries, gallery = _inputs(similarity, query_pids, gallery_pids)
    query_index, gallery_index = positive_pairs(queries, gallery)
    ranks = _positive_ranks(sim, query_index, gallery_index)  # (P,), pairs grouped by query
    return _from_ranks(query_index, ranks, *sim.shape)


def _from_ranks(query_index: Tensor, ranks: Tensor, num_queries: int, num_gallery: int) -> _Ranked:
    positives = torch.bincount(query_index, minlength=num_queries)  # (Q,)
    order = torch.argsort(query_index * (num_gallery + 1) + ranks)  # by query, then by rank
    segment_start = positives.cumsum(0) - positives  # (Q,)
    sorted_query = query_index[order]
    kth = torch.arange(order.numel()) - segment_start[sorted_query] + 1  # k-th positive of its query
    precision = kth.to(torch.float64) / ranks[order].to(torch.float64)  # (P,) precision at each hit
    count = positives.to(torch.float64)
    return _Ranked(
        first_hit=torch.full((num_queries,), num_gallery + 1).scatter_reduce(0, query_index, ranks, "amin"),
        average_precision=torch.zeros(num_queries, dtype=torch.float64).index_add(0, sorted_query, precision)
        / count,
        inverse_negative_penalty=count
        / torch.zeros(num_queries, dtype=torch.long).scatter_reduce(0, query_index, ranks, "amax"),
    )


@dataclass(frozen=True)
class PerQuery:
    """Each query's own result, from which every metric above is a mean (and intervals are drawn)."""

    first_match_rank: np.ndarray  # (Q,) int64 rank of the first positive (R@k = share with rank <= k)
    average_precision: np.ndarray  # (Q,) float64 in [0, 1]
    inverse_negative_penalty: np.ndarray  # (Q,) float64 in (0, 1]

    def metrics(self) -> dict[str, float]:
        """`R1`, `R5`, `R10`, `mAP`, `mINP` in percent: the means over the queries."""
        out = {f"R{k}": 100.0 * float(np.mean(self.first_match_rank <= k)) for k in (1, 5, 10)}
        out["mAP"] = 100.0 * float(self.average_precision.mean())
        out["mINP"] = 100.0 * float(self.inverse_negative_penalty.mean())
        return out


def per_query_metrics(similarity: ArrayLike, query_pids: ArrayLike, gallery_pids: ArrayLike) -> PerQuery:
    """Per-query first-match rank, AP and INP of a (Q, G) similarity (same rules as `retrieval_metrics`):
    the positives' ranks under the tie rule, then `per_query_from_ranks`."""
    sim, queries, gallery = _inputs(similarity, query_pids, gallery_pids)
    query_index, gallery_index = positive_pairs(queries, gallery)
    return per_query_from_ranks(query_index, _positive_ranks(sim, query_index, gallery_index), *sim.shape)


def per_query_from_ranks(
    query_index: ArrayLike, ranks: ArrayLike, num_queries: int, num_gallery: int
) -> PerQuery:
    """Per-query metrics from the 1-based rank of every (query, positive) pair (`query_index` (P,) the
    query of each pair, `ranks` (P,) its rank): the one place they are computed, whether the ranks came
    from a (Q, G) matrix, a ranking or shards. Every query needs at least one pair."""
    queries = _as_tensor(query_index).reshape(-1).long()
    if torch.bincount(queries, minlength=num_queries).min() == 0:
        raise ValueError("a query has no positive in the gallery; every query's person needs a gallery image")
    ranked = _from_ranks(queries, _as_tensor(ranks).reshape(-1).long(), num_queries, num_gallery)
    return PerQuery(
        first_match_rank=ranked.first_hit.numpy().astype(np.int64),
        average_precision=ranked.average_precision.numpy(),
        inverse_negative_penalty=ranked.inverse_negative_penalty.numpy(),
    )


def retrieval_metrics(
    similarity: ArrayLike, query_pids: ArrayLike, gallery_pids: ArrayLike
) -> dict[str, float]:
    """`R1`, `R5`, `R10`, `mAP`, `mINP` in percent for a (Q, G) similarity (higher is better).

    mAP averages each query's precision at the rank of every positive; mINP averages
    (#positives) / (rank of the hardest positive) (Ye et al., TPAMI 2021). Accepts numpy arrays and
    torch tensors; raises ValueError for a query with no positive, a shape mismatch or NaN scores.
    """
    return per_query_metrics(similarity, query_pids, gallery_pids).metrics()


def cmc_curve(
    similarity: ArrayLike, query_pids: ArrayLike, gallery_pids: ArrayLike, max_rank: int = 50
) -> np.ndarray:
    """Cumulative match characteristic in percent: entry r-1 is the share of queries with a positive
    within the top r, for r = 1..max_rank (entry 0 equals `R1`)."""
    ranked = _ranked(similarity, query_pids, gallery_pids)
    return np.array([_recall_at(ranked.first_hit, r) for r in range(1, max_rank + 1)], dtype=np.float64)


def _recall_at(first_hit: Tensor, k: int) -> float:
    return 100.0 * float((first_hit <= k).to(torch.float64).mean())
