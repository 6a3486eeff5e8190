"""Cascades across models (`score --candidates-from`): `global`'s index proposes, `cross_scan` re-ranks;
checked against exhaustive scoring and numpy rankings of the stored embeddings."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.errors import TbprError
from tasks.embed.index import build_index, save_index
from tasks.embed.layout import index_file
from tasks.embed.store import EmbeddingStore, read_embeddings
from tasks.score.run import score
from tests.score.test_run import _rankings

RERANKER, PROPOSER = "cross_scan", "global"


def _gallery_permuted(emb: Path, out: Path) -> Path:
    """A copy of `emb` whose gallery rows (Parquet, local features, flat index) are reversed."""
    shutil.copytree(emb, out)
    gallery = pq.read_table(emb / "gallery.parquet")
    order = np.arange(gallery.num_rows)[::-1].copy()
    pq.write_table(gallery.take(pa.array(order)), out / "gallery.parquet")
    np.save(out / "image_local.npy", np.load(emb / "image_local.npy")[order])
    save_index(build_index(read_embeddings(out / "gallery.parquet"), "flat"), index_file(out, "flat"))
    return out


def test_candidates_from_another_model_at_k_gallery_equals_exhaustive_and_below_reranks_its_top_k(
    tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    emb, proposer = tiny_emb(RERANKER), _gallery_permuted(tiny_emb(PROPOSER), tmp_path / "global")
    gallery = EmbeddingStore(emb).num_images
    exhaustive = score(emb, tmp_path / "ex", mode="exhaustive", track=False)
    everything = score(
        emb, tmp_path / "all", mode="pruned", top_k=gallery, candidates_from=proposer, track=False
    )
    ex, full = _rankings(tmp_path / "ex"), _rankings(tmp_path / "all")
    assert full.keys() == ex.keys()
    for query in ex:  # the same images in the same order, each with its exhaustive pair score
        assert [image for image, _ in full[query]] == [image for image, _ in ex[query]]
        np.testing.assert_allclose([s for _, s in full[query]], [s for _, s in ex[query]], atol=1e-5)
    assert everything.metrics == exhaustive.metrics
    assert everything.pairs_scored == exhaustive.pairs_scored
    k = 4
    cascade = score(emb, tmp_path / "k4", mode="pruned", top_k=k, candidates_from=proposer, track=False)
    top = _rankings(tmp_path / "k4")
    # independent: the proposer's cosine ranking by numpy (its own gallery order, mapped by image id)
    cosine = read_embeddings(proposer / "queries.parquet") @ read_embeddings(proposer / "gallery.parquet").T
    proposer_images = pq.read_table(proposer / "gallery.parquet").column("image_id").to_numpy()
    for row, query in enumerate(pq.read_table(emb / "queries.parquet").column("caption_id").to_pylist()):
        by_cosine = proposer_images[np.argsort(-cosine[row], kind="stable")]
        shortlist = set(by_cosine[:k].tolist())
        assert {image for image, _ in top[query][:k]} == shortlist
        # stage 2: the re-ranker's own (exhaustive) order and scores on the shortlist
        expected = [(image, value) for image, value in ex[query] if image in shortlist]
        assert [image for image, _ in top[query][:k]] == [image for image, _ in expected]
        np.testing.assert_allclose([s for _, s in top[query][:k]], [s for _, s in expected], atol=1e-5)
        # the rest keep the proposer's order below them
        rest = [int(image) for image in by_cosine[k:]][: len(top[query]) - k]
        assert [image for image, _ in top[query][k:]] == rest
    document = json.loads((tmp_path / "k4" / "metrics.json").read_text())
    assert document["candidates"] == PROPOSER
    assert document["candidates_emb"] == str(proposer.resolve())
    assert document["pairs_rerank"] == cascade.pairs_scored == k * len(top)
    assert document["pairs_stage1"] == len(top) * gallery
    assert document["seconds"] >= document["seconds_stage1"] >= 0


def test_candidates_from_a_folder_of_other_queries_or_gallery_is_an_error_naming_both(
    tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    emb = tiny_emb(RERANKER)
    other = shutil.copytree(tiny_emb(PROPOSER), tmp_path / "other")
    gallery = pq.read_table(other / "gallery.parquet")
    image_ids = gallery.column("image_id").to_pylist()
    image_ids[0] += 10_000  # another image in the first row
    column = gallery.schema.get_field_index("image_id")
    pq.write_table(gallery.set_column(column, "image_id", pa.array(image_ids)), other / "gallery.parquet")
    with pytest.raises(TbprError, match="do not hold the same gallery") as error:
        score(emb, tmp_path / "a", mode="pruned", candidates_from=other, track=False)
    assert str(emb) in str(error.value) and str(other) in str(error.value)
    pq.write_table(gallery, other / "gallery.parquet")
    queries = pq.read_table(other / "queries.parquet")
    texts = queries.column("text").to_pylist()
    texts[0] = texts[0] + " with a hat"
    column = queries.schema.get_field_index("text")
    pq.write_table(queries.set_column(column, "text", pa.array(texts)), other / "queries.parquet")
    with pytest.raises(TbprError, match="different texts for 1 caption"):
        score(emb, tmp_path / "b", mode="pruned", candidates_from=other, track=False)
    with pytest.raises(TbprError, match="pruned-scoring option"):
        score(emb, tmp_path / "c", mode="exhaustive", candidates_from=tiny_emb(PROPOSER), track=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
