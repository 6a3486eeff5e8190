"""Per-query k: re-ranking stops once the score bound says no unscored candidate can enter a query's
top 10, and then the top 10 are exactly those of re-ranking every candidate (property test on random
scores that respect the bound; an understated bound can break it, so the test can fail); end to end,
`score --adaptive` keeps the top 10 of fixed-k pruned scoring with fewer pairs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from tasks.score.layout import RANKINGS
from tasks.score.pruned import Candidates, rerank, rerank_adaptive
from tasks.score.run import score
from tbpr_models.features import ImageFeatures, TextFeatures

CPU = torch.device("cpu")


class TableScorer:
    """Pair scores from a table: texts and images carry their row in global_[:, 0]."""

    rerank_in_workers = True

    def __init__(self, table: np.ndarray) -> None:
        self.table = torch.from_numpy(table)

    def similarity_candidates(
        self, texts: TextFeatures, images: ImageFeatures, candidates: Tensor, *, memory_budget_mb: float = 0
    ) -> Tensor:
        queries = texts.global_[:, 0].long()  # (c,)
        rows = images.global_[:, 0].long()[candidates.clamp(min=0)]  # (c, k)
        scores = self.table[queries[:, None], rows]
        return scores.masked_fill(candidates < 0, -torch.inf)


class RowSource:
    def __init__(self, queries: int, images: int) -> None:
        self.num_texts, self.num_images = queries, images

    def texts(self, rows: np.ndarray, device: torch.device, dtype: torch.dtype) -> TextFeatures:
        index = torch.as_tensor(np.arange(self.num_texts)[rows], dtype=torch.float64)[:, None]
        return TextFeatures(
            global_=index, local=index[:, None], mask=torch.ones(len(index), 1, dtype=torch.bool)
        )

    def images(self, rows: np.ndarray, device: torch.device, dtype: torch.dtype) -> ImageFeatures:
        index = torch.as_tensor(np.arange(self.num_images)[rows], dtype=torch.float64)[:, None]
        return ImageFeatures(global_=index, local=index[:, None])


def problem(
    seed: int, queries: int, images: int, k: int, spread: float
) -> tuple[Candidates, np.ndarray, np.ndarray]:
    """Random first-stage cosines (sorted candidates) and pair scores = cosine + attention in [0, bound]."""
    rng = np.random.default_rng(seed)
    cosine = rng.uniform(-1, 1, (queries, images)) * spread
    attention = rng.uniform(0, 1, (queries, images)) * rng.uniform(0.2, 1.0, (queries, 1))
    bound = attention.max(axis=1)  # the tightest valid bound per query
    ids = np.argsort(-cosine, axis=1, kind="stable")[:, :k]
    first = np.take_along_axis(cosine, ids, 1).astype(np.float32)
    return Candidates(ids=ids.astype(np.int64), scores=first), (cosine + attention).astype(np.float32), bound


def top_rows(candidates: Candidates, scores: np.ndarray, top: int) -> np.ndarray:
    order = np.lexsort((candidates.ids, -scores.astype(np.float64)), axis=1)[:, :top]
    return np.take_along_axis(np.where(np.isfinite(scores), candidates.ids, -1), order, 1)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    queries=st.integers(1, 12),
    k=st.integers(10, 40),
    step=st.integers(1, 9),
    spread=st.floats(0.05, 3.0),
)
def test_per_query_k_keeps_the_top_10_of_every_candidate(
    seed: int, queries: int, k: int, step: int, spread: float
) -> None:
    candidates, table, bound = problem(seed, queries, 50, k, spread)
    source, scorer = RowSource(queries, 50), TableScorer(table)
    options = {"device": CPU, "dtype": torch.float64, "workers": 1}
    full = rerank(scorer, source, candidates, **options)
    adaptive = rerank_adaptive(scorer, source, candidates, (1.0, bound), step=step, **options)
    np.testing.assert_array_equal(
        top_rows(candidates, adaptive.scores, 10), top_rows(candidates, full.scores, 10)
    )
    assert adaptive.pairs_scored <= full.pairs_scored
    scored = np.isfinite(adaptive.scores)
    np.testing.assert_array_equal(adaptive.scores[scored], full.scores[scored])


def test_a_wide_first_stage_gap_saves_pairs_and_an_understated_bound_can_lose_the_top() -> None:
    candidates, table, bound = problem(3, 200, 400, 64, 3.0)
    source, scorer = RowSource(200, 400), TableScorer(table)
    options = {"device": CPU, "dtype": torch.float64, "workers": 1}
    full = rerank(scorer, source, candidates, **options)
    adaptive = rerank_adaptive(scorer, source, candidates, (1.0, bound), **options)
    assert adaptive.pairs_scored < 0.5 * full.pairs_scored
    lying = rerank_adaptive(scorer, source, candidates, (1.0, bound * 0 - 1.0), step=1, **options)
    assert (top_rows(candidates, lying.scores, 10) != top_rows(candidates, full.scores, 10)).any()


@pytest.mark.parametrize("variant", ["cross_scan", "hard_topk", "global"])
def test_score_adaptive_keeps_the_top_10_with_fewer_pairs(
    variant: str, tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    emb = tiny_emb(variant)
    fixed = score(emb, tmp_path / "fixed", mode="pruned", top_k=12, track=False)
    adaptive = score(emb, tmp_path / "adaptive", mode="pruned", top_k=12, track=False, adaptive=True)
    assert adaptive.pairs_scored <= fixed.pairs_scored and adaptive.details["adaptive"] is True
    a = pq.read_table(tmp_path / "fixed" / RANKINGS).to_pandas()
    b = pq.read_table(tmp_path / "adaptive" / RANKINGS).to_pandas()
    a, b = a[a["rank"] <= 10], b[b["rank"] <= 10]
    np.testing.assert_array_equal(b.image_id.to_numpy(), a.image_id.to_numpy())
    assert adaptive.metrics["R1"] == fixed.metrics["R1"] and adaptive.metrics["R10"] == fixed.metrics["R10"]


def test_adaptive_refuses_approximate_first_stage_scores(
    tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    from tasks.core.errors import TbprError

    with pytest.raises(TbprError, match="ivfpq"):
        score(
            tiny_emb("cross_scan"), tmp_path / "out", mode="pruned", index="ivfpq", adaptive=True, track=False
        )
    with pytest.raises(TbprError, match="--adaptive"):
        score(tiny_emb("cross_scan"), tmp_path / "out", mode="exhaustive", adaptive=True, track=False)
