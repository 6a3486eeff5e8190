"""Block planning, blocked exhaustive scoring and the pruned ranking assembly, against brute force."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.embed.store import EmbeddingStore
from tasks.score.exhaustive import exhaustive_similarity
from tasks.score.pruned import Candidates, Reranked
from tasks.score.ranking import rank_pruned, ranking_similarity
from tbpr_models import VARIANTS, load_checkpoint
from tbpr_models.scoring import BlockPlan, Shapes, plan_blocks
from tbpr_models.variant import PAIRWISE_TEMPORARIES


@settings(max_examples=60, deadline=None)
@given(
    q=st.integers(1, 20_000),
    g=st.integers(1, 20_000),
    words=st.integers(1, 64),
    regions=st.integers(1, 64),
    dim=st.sampled_from([16, 256, 512]),
    pairwise=st.booleans(),
    budget=st.floats(1, 4096),
)
def test_plan_blocks_fits_the_budget(
    q: int, g: int, words: int, regions: int, dim: int, pairwise: bool, budget: float
) -> None:
    shapes = Shapes(q, g, words, regions, dim)
    pair_floats = PAIRWISE_TEMPORARIES * words * regions if pairwise else 1
    plan = plan_blocks(shapes, budget, pair_floats)
    assert 1 <= plan.query_block <= q and 1 <= plan.gallery_block <= g
    pair = 4 * pair_floats
    used = (
        plan.query_block * (4 * words * dim + plan.gallery_block * pair)
        + plan.gallery_block * 4 * regions * dim
    )
    assert used <= budget * 2**20 or plan.query_block == 1


def test_exhaustive_blocks_give_the_same_matrix_for_any_budget(tiny_emb: Callable[[str], Path]) -> None:
    variant = "cross_scan" if "cross_scan" in VARIANTS else "spatial"
    store = EmbeddingStore(tiny_emb(variant))
    model = load_checkpoint(Path(store.info.checkpoint))
    cpu = torch.device("cpu")
    shapes = Shapes(store.num_texts, store.num_images, 16, 32, 16)
    pair_floats = model.head.pair_floats(shapes.words, shapes.regions)
    plans = [plan_blocks(shapes, 1e6, pair_floats), plan_blocks(shapes, 0.02, pair_floats)]
    plans += [BlockPlan(3, 5), BlockPlan(1, 7)]
    assert plans[0] == BlockPlan(store.num_texts, store.num_images)
    matrices = [exhaustive_similarity(model.similarity, store, plan, device=cpu) for plan in plans]
    for matrix in matrices[1:]:
        np.testing.assert_allclose(matrix, matrices[0], rtol=1e-5, atol=1e-6)
    sliced = exhaustive_similarity(model.similarity, store, BlockPlan(2, 3), device=cpu, queries=slice(3, 9))
    np.testing.assert_allclose(sliced, matrices[0][3:9], rtol=1e-5, atol=1e-6)


def _brute_force(ids: np.ndarray, pair: np.ndarray, stage1: np.ndarray) -> list[list[int]]:
    orders = []
    for q in range(len(ids)):
        chosen = {int(i): float(s) for i, s in zip(ids[q], pair[q], strict=True) if i >= 0}
        head = sorted(chosen, key=lambda i: (-chosen[i], i))
        tail = sorted(
            (i for i in range(stage1.shape[1]) if i not in chosen), key=lambda i: (-stage1[q, i], i)
        )
        orders.append(head + tail)
    return orders


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), q=st.integers(1, 6), g=st.integers(1, 12), k=st.integers(1, 12))
def test_rank_pruned_matches_brute_force(seed: int, q: int, g: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    k = min(k, g)
    stage1 = rng.integers(0, 4, (q, g)).astype(np.float32)  # coarse values: many ties
    ids = np.stack([rng.permutation(g)[:k] for _ in range(q)])  # (Q, k)
    ids[rng.random((q, k)) < 0.2] = -1  # an ANN index may find fewer than k
    pair = rng.integers(0, 3, (q, k)).astype(np.float32)
    candidates = Candidates(ids=ids, scores=np.zeros((q, k), np.float32))
    ranking = rank_pruned(candidates, Reranked(scores=pair, pairs_scored=0, calls=0), stage1)
    assert ranking.order.tolist() == _brute_force(ids, pair, stage1)
    encoded = ranking_similarity(ranking)  # (Q, G)
    assert np.argsort(-encoded, axis=1, kind="stable").tolist() == ranking.order.tolist()
