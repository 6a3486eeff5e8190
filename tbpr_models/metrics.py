"""Retrieval metrics with the literature's definitions (text-to-image person retrieval).

Every gallery image of the query's person is a positive. Ranks are 1-based; ties are broken by
gallery order (a stable sort of the descending scores). Dimension letters: Q queries, G gallery.
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


def _positive_ranks(sim: Tensor, query_index: Tensor, gallery_index: Tensor) -> Tensor:
    """1-based rank of each (query, positive) pair: the gallery items scored higher, plus the items
    scored equal that come earlier in the gallery (stable tie-breaking), plus one."""
    order = torch.arange(sim.shape[1])  # (G,)
    ranks = []
    for start in range(0, query_index.numel(), _PAIR_CHUNK):
        rows = sim[query_index[start : start + _PAIR_CHUNK]]  # (P, G)
        cols = gallery_index[start : start + _PAIR_CHUNK]  # (P,)
        score = rows.gather(1, cols.reshape(-1, 1))  # (P, 1)
        higher = (rows > score).sum(dim=1, dtype=torch.int32)
        at_least = (rows >= score).sum(dim=1, dtype=torch.int32)  # includes the pair itself
        rank = higher + 1
        tied = (at_least > higher + 1).nonzero().reshape(-1)  # pairs sharing their score: rare in floats
        if tied.numel() > 0:
            before = (rows[tied] == score[tied]) & (order < cols[tied].reshape(-1, 1))  # (T, G)
            rank[tied] += before.sum(dim=1, dtype=torch.int32)
        ranks.append(rank.long())
    return torch.cat(ranks)


def _ranked(similarity: ArrayLike, query_pids: ArrayLike, gallery_pids: ArrayLike) -> _Ranked:
    """Ranks only the positives (no full sort of every row): O(Q x G x positives per query)."""
    sim, queries, gallery = _inputs(similarity, query_pids, gallery_pids)
    num_queries, num_gallery = sim.shape
    query_index, gallery_index = (queries.reshape(-1, 1) == gallery.reshape(1, -1)).nonzero(as_tuple=True)
    positives = torch.bincount(query_index, minlength=num_queries)  # (Q,)
    missing = (positives == 0).nonzero().reshape(-1)
    if missing.numel() > 0:
        shown = [int(i) for i in missing[:5]]
        raise ValueError(
            f"{missing.numel()} query(ies) have no positive in the gallery, e.g. query index {shown} "
            f"(person id {[int(queries[i]) for i in shown]}); every query's person needs a gallery image"
        )
    ranks = _positive_ranks(sim, query_index, gallery_index)  # (P,), pairs grouped by query
    return _from_ranks(query_index, ranks, num_queries, num_gallery)


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
    """Per-query first-match rank, AP and INP of a (Q, G) similarity (same rules as `retrieval_metrics`)."""
    ranked = _ranked(similarity, query_pids, gallery_pids)
    return PerQuery(
        first_match_rank=ranked.first_hit.numpy().astype(np.int64),
        average_precision=ranked.average_precision.numpy(),
        inverse_negative_penalty=ranked.inverse_negative_penalty.numpy(),
    )


def per_query_from_ranks(
    query_index: ArrayLike, ranks: ArrayLike, num_queries: int, num_gallery: int
) -> PerQuery:
    """Per-query metrics from the 1-based rank of every (query, positive) pair (`query_index` (P,) the
    query of each pair, `ranks` (P,) its rank), when the ranks were found without a (Q, G) matrix
    (sharded scoring). Every query needs at least one pair."""
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
