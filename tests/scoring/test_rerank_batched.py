"""Batched re-ranking (`similarity_candidates` per chunk of queries) against the `union` reference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.faiss_index import build_index
from tasks.scoring.exhaustive import Shapes
from tasks.scoring.pruned import batched_chunk_size, first_stage, rerank
from tasks.scoring.source import EmbeddingStore
from tbpr_models import load_checkpoint

CPU = torch.device("cpu")


@pytest.mark.parametrize("variant", ["cross_scan", "hard_topk", "global"])
def test_batched_rerank_equals_union_reference(variant: str, tiny_emb: Callable[[str], Path]) -> None:
    store = EmbeddingStore(tiny_emb(variant))
    model = load_checkpoint(Path(store.info.checkpoint)).eval()
    candidates = first_stage(build_index(store.image_globals(), "flat"), store.text_globals(), 5)
    ids = candidates.ids.copy()
    ids[::3, 2:] = -1  # holes, as an approximate index may leave
    candidates = type(candidates)(ids=ids, scores=candidates.scores)
    reference = rerank(model, store, candidates, device=CPU, strategy="union", group=4)
    for chunk in (1, 3, len(ids)):
        got = rerank(
            model, store, candidates, device=CPU, strategy="batched", group=chunk, memory_budget_mb=1e-3
        )
        np.testing.assert_allclose(got.scores, reference.scores, rtol=1e-5, atol=1e-5)
        assert got.pairs_scored == int((ids >= 0).sum()) <= reference.pairs_scored
        assert got.calls == -(-len(ids) // chunk)


def test_batched_chunk_size_is_the_largest_that_fits() -> None:
    shapes = Shapes(num_texts=6000, num_images=3000, words=48, regions=48, dim=256, pairwise=True)
    text_bytes, image_bytes = 4 * 48 * 256, 4 * 48 * (256 + 48)

    def used(c: int) -> int:
        return c * text_bytes + min(3000, 64 * c) * image_bytes

    for budget in (16.0, 256.0, 512.0, 4096.0):
        c = batched_chunk_size(64, shapes, budget)
        assert used(c) <= budget * 2**20 / 2 or c == 1
        assert c == shapes.num_texts or used(c + 1) > budget * 2**20 / 2
    assert batched_chunk_size(64, shapes, 1e-6) == 1
