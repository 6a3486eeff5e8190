"""Exhaustive against pruned scoring on tiny random models, checked against direct computations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tasks.core.errors import TbprError
from tasks.embed.store import EmbeddingStore, read_embeddings
from tasks.score.run import score
from tbpr_models import VARIANTS, load_checkpoint, retrieval_metrics

PAIRWISE = "cross_scan"


def _rankings(out: Path) -> dict[int, list[tuple[int, float]]]:
    table = pq.read_table(out / "rankings.parquet").sort_by(
        [("query_id", "ascending"), ("rank", "ascending")]
    )
    ranked: dict[int, list[tuple[int, float]]] = {}
    for query, rank, image, value in zip(
        *(table.column(c).to_pylist() for c in table.column_names), strict=True
    ):
        assert rank == len(ranked.setdefault(query, [])) + 1
        ranked[query].append((image, value))
    return ranked


@pytest.mark.parametrize("variant", ["global", "channel"])
def test_single_stream_pruned_flat_returns_the_exhaustive_top_k(
    variant: str, tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    emb, k = tiny_emb(variant), 5
    exhaustive = score(emb, tmp_path / "ex", mode="exhaustive", track=False)
    pruned = score(emb, tmp_path / "pr", mode="pruned", top_k=k, index="flat", track=False)
    ex, pr = _rankings(tmp_path / "ex"), _rankings(tmp_path / "pr")
    # independent: cosine of the stored globals, ranked by numpy
    queries = pq.read_table(emb / "queries.parquet")
    gallery_ids = pq.read_table(emb / "gallery.parquet").column("image_id").to_numpy()
    cosine = read_embeddings(emb / "queries.parquet") @ read_embeddings(emb / "gallery.parquet").T  # (Q, G)
    for row, query in enumerate(queries.column("caption_id").to_pylist()):
        expected = gallery_ids[np.argsort(-cosine[row], kind="stable")[:k]].tolist()
        assert [image for image, _ in ex[query][:k]] == expected
        assert [image for image, _ in pr[query][:k]] == expected
        np.testing.assert_allclose([s for _, s in pr[query][:k]], [s for _, s in ex[query][:k]], atol=1e-5)
    assert pruned.pairs_scored < exhaustive.pairs_scored == cosine.size


def test_pairwise_pruned_with_k_equal_to_gallery_matches_exhaustive(
    tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    if PAIRWISE not in VARIANTS:
        pytest.skip(f"variant {PAIRWISE} is not registered yet")
    emb = tiny_emb(PAIRWISE)
    gallery = EmbeddingStore(emb).num_images
    exhaustive = score(emb, tmp_path / "ex", mode="exhaustive", memory_budget_mb=0.05, track=False)
    pruned = score(emb, tmp_path / "pr", mode="pruned", top_k=gallery, memory_budget_mb=0.05, track=False)
    ex, pr = _rankings(tmp_path / "ex"), _rankings(tmp_path / "pr")
    assert pr.keys() == ex.keys()
    for query in ex:
        assert [i for i, _ in pr[query]] == [i for i, _ in ex[query]]
        np.testing.assert_allclose([s for _, s in pr[query]], [s for _, s in ex[query]], atol=1e-5)
    for name, value in exhaustive.metrics.items():
        assert pruned.metrics[name] == pytest.approx(value, abs=1e-9)
    # pairwise scores differ from the global cosine: the re-ranking did change the order
    cosine = read_embeddings(emb / "queries.parquet") @ read_embeddings(emb / "gallery.parquet").T
    first = EmbeddingStore(emb).query_ids()[0][0]
    gallery_ids = pq.read_table(emb / "gallery.parquet").column("image_id").to_numpy()
    assert [i for i, _ in ex[int(first)]] != gallery_ids[np.argsort(-cosine[0], kind="stable")].tolist()[:100]


def test_exhaustive_metrics_and_scores_match_a_direct_similarity(
    tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    variant = PAIRWISE if PAIRWISE in VARIANTS else "spatial"
    emb = tiny_emb(variant)
    store = EmbeddingStore(emb)
    result = score(emb, tmp_path / "ex", mode="exhaustive", memory_budget_mb=0.05, track=False)
    model = load_checkpoint(Path(store.info.checkpoint))
    with torch.inference_mode():
        everything = slice(None)
        direct = model.similarity(
            store.texts(everything, torch.device("cpu"), torch.float32),
            store.images(everything, torch.device("cpu"), torch.float32),
        ).numpy()  # (Q, G) in one call
    expected = retrieval_metrics(direct, store.query_ids()[1], store.gallery_ids()[1])
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-6)
    written = json.loads((tmp_path / "ex" / "metrics.json").read_text())
    assert written["pairs_scored"] == direct.size and written["mode"] == "exhaustive"
    assert written["R1"] == pytest.approx(expected["R1"])
    top = _rankings(tmp_path / "ex")[int(store.query_ids()[0][0])]
    np.testing.assert_allclose([s for _, s in top], np.sort(direct[0])[::-1][: len(top)], atol=1e-5)
    # per-query results: every query, in EMB order, first-match rank by counting higher scores
    per_query = pq.read_table(tmp_path / "ex" / "per_query.parquet").to_pydict()
    query_ids, query_pids = store.query_ids()
    gallery_pids = store.gallery_ids()[1]
    assert per_query["query_id"] == query_ids.tolist()
    for q, rank in enumerate(per_query["first_match_rank"]):
        best_match = direct[q][gallery_pids == query_pids[q]].max()
        assert rank == 1 + int((direct[q] > best_match).sum())  # no float ties among random scores
    assert 100 * np.mean(np.array(per_query["first_match_rank"]) == 1) == pytest.approx(expected["R1"])
    assert 100 * np.mean(per_query["ap"]) == pytest.approx(expected["mAP"])
    assert 100 * np.mean(per_query["inp"]) == pytest.approx(expected["mINP"])


def test_bf16_scores_close_to_float32_in_both_modes_and_unknown_precision_fails(
    tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    variant = PAIRWISE if PAIRWISE in VARIANTS else "spatial"
    emb = tiny_emb(variant)
    gallery = EmbeddingStore(emb).num_images
    exact = score(emb, tmp_path / "fp32", mode="exhaustive", track=False)
    for mode, top_k in (("exhaustive", 64), ("pruned", gallery)):
        low = score(emb, tmp_path / mode, mode=mode, top_k=top_k, precision="bf16", track=False)
        assert json.loads((tmp_path / mode / "metrics.json").read_text())["precision"] == "bf16"
        ex, lo = _rankings(tmp_path / "fp32"), _rankings(tmp_path / mode)
        for query in ex:  # the same images, each scored within bf16 rounding of float32
            scores = dict(lo[query])
            np.testing.assert_allclose(
                [scores[i] for i, _ in ex[query]], [s for _, s in ex[query]], atol=0.05
            )
        assert low.pairs_scored == exact.pairs_scored
    assert json.loads((tmp_path / "fp32" / "metrics.json").read_text())["precision"] == "fp32"
    with pytest.raises(TbprError, match="unknown precision"):
        score(emb, tmp_path / "bad", mode="exhaustive", precision="fp8", track=False)  # type: ignore[arg-type]


def test_fastscan_first_stage_reranks_to_the_exhaustive_scores(
    tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    """`hard_topk` (compacted EMB, the batched inference kernel) behind the approximate `fastscan`
    first stage: with k = G every image is re-ranked, so rankings and metrics equal exhaustive; with
    k = 4 the top 4 are the index's own candidates, each with its exhaustive pair score."""
    from tasks.embed.encode import embed_split
    from tasks.embed.index import load_index, search
    from tasks.embed.layout import index_file

    emb = tmp_path / "emb"
    embed_split(tiny_data, tiny_checkpoint("hard_topk"), emb, batch_size=5, indexes=("flat", "fastscan"))
    store = EmbeddingStore(emb)
    index = load_index(index_file(emb, "fastscan"))
    assert isinstance(faiss.downcast_index(index), faiss.IndexPQFastScan)  # 16 images: not the fallback
    exhaustive = score(emb, tmp_path / "ex", mode="exhaustive", track=False)
    everything = score(
        emb, tmp_path / "all", mode="pruned", top_k=store.num_images, index="fastscan", track=False
    )
    ex, full = _rankings(tmp_path / "ex"), _rankings(tmp_path / "all")
    for query in ex:
        assert [i for i, _ in full[query]] == [i for i, _ in ex[query]]
        np.testing.assert_allclose([s for _, s in full[query]], [s for _, s in ex[query]], atol=1e-5)
    assert everything.metrics == pytest.approx(exhaustive.metrics, abs=1e-9)
    score(emb, tmp_path / "k4", mode="pruned", top_k=4, index="fastscan", track=False)
    top = _rankings(tmp_path / "k4")
    _, found = search(index, store.text_globals(), 4)  # (Q, 4)
    query_ids, image_ids = store.query_ids()[0], store.gallery_ids()[0]
    for row, query in enumerate(query_ids.tolist()):
        assert {i for i, _ in top[query][:4]} == set(image_ids[found[row]].tolist())
        exhaustive_score = dict(ex[query])
        for image, value in top[query][:4]:
            assert value == pytest.approx(exhaustive_score[image], abs=1e-5)
