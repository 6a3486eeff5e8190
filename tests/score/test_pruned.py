"""Batched re-ranking (`similarity_candidates` per chunk of queries) against the generic default paths:
`model.similarity` on everything gathered with numpy, and the base `VariantHead.similarity_candidates`
called unbound (`similarity` gathered block by block, or the cosine of the globals)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.core.packed import Ragged
from tasks.embed import store as store_module
from tasks.embed.index import build_index
from tasks.embed.store import EmbeddingStore
from tasks.score.pruned import Candidates, batched_chunk_size, first_stage, rerank
from tbpr_models import load_checkpoint
from tbpr_models.scoring import Shapes
from tbpr_models.variant import VariantHead

CPU = torch.device("cpu")


@pytest.mark.parametrize("variant", ["cross_scan", "hard_topk", "global"])
def test_batched_rerank_equals_the_generic_gathered_similarity(
    variant: str, tiny_emb: Callable[[str], Path]
) -> None:
    store = EmbeddingStore(tiny_emb(variant))
    model = load_checkpoint(Path(store.info.checkpoint)).eval()
    first = first_stage(build_index(store.image_globals(), "flat"), store.text_globals(), 5)
    ids = first.ids.copy()
    ids[::3, 2:] = -1  # holes, as an approximate index may leave
    candidates = Candidates(ids=ids, scores=first.scores)
    valid = ids >= 0
    everything = slice(None)
    texts, images = store.texts(everything, CPU, torch.float32), store.images(everything, CPU, torch.float32)
    with torch.inference_mode():
        full = model.similarity(texts, images).float().numpy()  # (Q, G) in one call
        generic = VariantHead.similarity_candidates(
            model.head, texts, images, torch.from_numpy(ids), memory_budget_mb=1e-3
        ).numpy()  # (Q, k): the base class's route, not the head's override
    gathered = np.where(valid, np.take_along_axis(full, np.where(valid, ids, 0), axis=1), -np.inf)  # (Q, k)
    np.testing.assert_allclose(generic, gathered, rtol=1e-5, atol=1e-5)
    threads = torch.get_num_threads()
    for chunk, workers in ((1, 1), (3, 1), (7, 1), (len(ids), 1), (3, 2), (len(ids), 3)):
        got = rerank(
            model, store, candidates, device=CPU, chunk=chunk, memory_budget_mb=1e-3, workers=workers
        )
        np.testing.assert_allclose(got.scores, gathered, rtol=1e-5, atol=1e-5)
        assert np.isneginf(got.scores[~valid]).all() and np.isfinite(got.scores[valid]).all()
        assert got.pairs_scored == int(valid.sum())
        # parallel workers take at least one chunk each
        assert got.calls == -(-len(ids) // min(chunk, -(-len(ids) // workers)))
        assert got.workers == workers and torch.get_num_threads() == threads  # restored after the workers


def test_batched_chunk_size_is_the_largest_that_fits() -> None:
    shapes = Shapes(num_texts=6000, num_images=3000, words=48, regions=48, dim=256)
    image_floats = 48 * (256 + 48)  # SCAN's: features and Gram matrix per candidate image
    text_bytes, image_bytes = 4 * 48 * 256, 4 * image_floats

    def used(c: int) -> int:
        return c * text_bytes + min(3000, 64 * c) * image_bytes

    for budget in (16.0, 256.0, 512.0, 4096.0):
        c = batched_chunk_size(64, shapes, budget, image_floats)
        assert used(c) <= budget * 2**20 / 2 or c == 1
        assert c == shapes.num_texts or used(c + 1) > budget * 2**20 / 2
    assert batched_chunk_size(64, shapes, 1e-6, image_floats) == 1


def test_rerank_parallelises_as_the_head_says(tiny_emb: Callable[[str], Path]) -> None:
    """By default, chunks go to one single-threaded worker per torch thread (the base head) or stay on
    one worker with every thread (`cross_scan`, `hard_topk`: batched matmuls), as the head says."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for variant, workers in (("global", 2), ("cross_scan", 1), ("hard_topk", 1)):
            store = EmbeddingStore(tiny_emb(variant))
            model = load_checkpoint(Path(store.info.checkpoint)).eval()
            assert model.rerank_in_workers == (workers > 1)
            first = first_stage(build_index(store.image_globals(), "flat"), store.text_globals(), 3)
            assert rerank(model, store, first, device=CPU, chunk=4).workers == workers
    finally:
        torch.set_num_threads(threads)


def test_store_reads_rows_in_the_order_asked_whether_consecutive_or_not(
    tiny_emb: Callable[[str], Path],
) -> None:
    """Consecutive rows are read as a slice, any other list gathered: the same features either way,
    in the order asked, as new tensors that never alias the memory map."""
    store = EmbeddingStore(tiny_emb("hard_topk"))
    everything = store.texts(slice(None), CPU, torch.float32)
    for rows in (np.arange(2, 7), np.array([6, 2, 4]), np.array([3, 4, 5])[::-1].copy(), np.arange(0)):
        got = store.texts(rows, CPU, torch.float32)
        torch.testing.assert_close(got.local, everything.local[torch.from_numpy(rows)])
        torch.testing.assert_close(got.global_, everything.global_[torch.from_numpy(rows)])
        assert torch.equal(got.mask, everything.mask[torch.from_numpy(rows)])
    got = store.images(np.arange(1, 4), CPU, torch.float32)
    got.local.zero_()  # a copy: the store still reads its own values
    assert store.images(np.arange(1, 4), CPU, torch.float32).local.abs().sum() > 0


@pytest.mark.parametrize("stage", [7, 2**20])  # many blocks, the last one partial; one block
def test_store_bfloat16_reads_equal_the_direct_conversion_of_the_float16_file(
    stage: int, tiny_emb: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """bf16 features staged through float32 blocks are exactly torch's own float16 -> bfloat16
    conversion of the file's values, for a slice and a row list."""
    monkeypatch.setattr(store_module, "STAGE_ELEMENTS", stage)
    emb = tiny_emb("hard_topk")
    store = EmbeddingStore(emb)
    words, mask = np.load(emb / "text_local.npy"), np.load(emb / "text_mask.npy")
    on_disk = torch.from_numpy(np.asarray(Ragged(words, mask)))  # (Q, L, D) float16, padded here
    for rows in (slice(1, None), np.array([4, 0, 2])):
        got = store.texts(rows, CPU, torch.bfloat16).local
        index = rows if isinstance(rows, slice) else torch.from_numpy(rows)
        assert got.dtype == torch.bfloat16
        assert torch.equal(got, on_disk[index].to(torch.bfloat16))
    images = torch.from_numpy(np.load(emb / "image_local.npy"))
    assert torch.equal(store.images(slice(None), CPU, torch.bfloat16).local, images.to(torch.bfloat16))
