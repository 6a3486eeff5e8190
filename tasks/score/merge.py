"""What the sharded driver does with the shards' answers (`tasks.score.shards`), under the one tie
rule (`tbpr_models.metrics.best_by_score`): the merged top k of the first stages, each query's best
ranks, the positives' ranks among the candidates; and the executors the rounds run on (a Dask
`Client`, or `InProcess`). Dimension letters: Q queries, k candidates, T top kept, P positives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from tasks.score.pruned import Candidates
from tbpr_models.metrics import best_by_score


def merge_candidates(lists: Sequence[Candidates], k: int) -> Candidates:
    """The global top k of every query from the shards' lists: by score, ties by gallery row."""
    ids = np.concatenate([c.ids for c in lists], axis=1)  # (Q, sum k)
    scores = np.concatenate([c.scores for c in lists], axis=1).astype(np.float32)
    scores = np.where(ids >= 0, scores, -np.inf)
    order = best_by_score(ids, scores, k)  # (Q, k)
    return Candidates(ids=np.take_along_axis(ids, order, 1), scores=np.take_along_axis(scores, order, 1))


class Executor(Protocol):
    """`submit(fn, *args) -> future`, `gather(futures) -> results`: a Dask `Client`, or `InProcess`."""

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...

    def gather(self, futures: Any) -> Any: ...


class _Done:
    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


class InProcess:
    """The rounds one after another in this process (Dask's `submit`/`gather` without Dask)."""

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> _Done:
        kwargs.pop("pure", None)
        unwrap = [a.value if isinstance(a, _Done) else a for a in args]
        return _Done(fn(*unwrap, **kwargs))

    def gather(self, futures: Any) -> Any:
        return [f.value for f in futures]


def merge_top(rows: np.ndarray, scores: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best `top` of the shards' lists: by score, ties by gallery row."""
    order = best_by_score(rows, scores, top)
    return np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)


def candidate_ranks(
    candidates: Candidates, pair: np.ndarray, query: np.ndarray, row: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ranks of the positives among the candidates (pair score, ties by row) and, for the others, the
    candidates' count plus one (the shards add the images above them); which positives need counting;
    the candidates in rank order with their pair scores."""
    ids = candidates.ids
    valid = ids >= 0
    order = best_by_score(ids, pair)  # (Q, k)
    cand_rows = np.take_along_axis(ids, order, 1)  # (Q, k), invalid last
    cand_scores = np.take_along_axis(np.where(valid, pair, -np.inf), order, 1).astype(np.float32)
    found = valid.sum(axis=1)  # (Q,)
    ranks = found[query] + 1
    threshold = np.ones(len(query), dtype=bool)
    for i, (q, r) in enumerate(zip(query, row, strict=True)):
        hit = np.flatnonzero(cand_rows[q, : found[q]] == r)
        if hit.size:
            ranks[i], threshold[i] = int(hit[0]) + 1, False
    return ranks.astype(np.int64), threshold, cand_rows, cand_scores


def join_top(
    cand_rows: np.ndarray, cand_scores: np.ndarray, tail_rows: np.ndarray, tail_scores: np.ndarray, top: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: its valid candidates, then the best images outside them, cut to `top` (<= G)."""
    num_queries, width = len(cand_rows), top
    order = np.empty((num_queries, width), dtype=np.int64)
    scores = np.empty((num_queries, width), dtype=np.float32)
    for q in range(num_queries):
        valid = cand_rows[q] >= 0
        rows = np.concatenate([cand_rows[q][valid], tail_rows[q]])[:width]
        values = np.concatenate([cand_scores[q][valid], tail_scores[q]])[:width]
        order[q, : len(rows)], scores[q, : len(rows)] = rows, values
    return order, scores
