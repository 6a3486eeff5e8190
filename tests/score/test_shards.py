"""Sharded galleries: embedding and scoring split into shards on a real local Dask cluster give exactly
the EMB, rankings and metrics of one process; the shards cover the gallery; metrics from positive ranks
equal metrics from the score matrix."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tasks.core.errors import TbprError
from tasks.core.shards import gallery_shards
from tasks.embed.encode import embed_split
from tasks.embed.layout import IMAGE_LOCAL, QUERIES, EmbedInfo, shard_index_file
from tasks.embed.store import EmbeddingStore
from tasks.score import shards as shards_module
from tasks.score.layout import METRICS, PER_QUERY, RANKINGS
from tasks.score.run import score
from tasks.score.shards import InProcess, RoundSettings, ids_of, score_sharded
from tbpr_models.metrics import per_query_from_ranks, per_query_metrics


@pytest.mark.parametrize(("images", "shards"), [(16, 3), (16, 16), (5, 8), (1000, 7), (0, 2)])
def test_shards_cover_the_gallery_in_order(images: int, shards: int) -> None:
    parts = gallery_shards(images, shards)
    assert len(parts) == max(1, min(shards, images))
    assert parts[0].start == 0 and parts[-1].stop == images
    assert all(a.stop == b.start for a, b in itertools.pairwise(parts))
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1 and (images == 0 or min(sizes) >= 1)


def test_zero_shards_is_an_error() -> None:
    with pytest.raises(TbprError, match="--shards"):
        gallery_shards(10, 0)


def test_metrics_from_positive_ranks_equal_metrics_from_scores() -> None:
    rng = np.random.default_rng(0)
    similarity = rng.normal(size=(40, 60)).astype(np.float32)
    similarity[:, 7] = similarity[:, 3]  # ties: broken by gallery order
    query_pids, gallery_pids = rng.integers(0, 10, 40), np.arange(60) % 10
    query, image = np.nonzero(query_pids[:, None] == gallery_pids[None, :])
    order = np.argsort(-similarity, axis=1, kind="stable")  # an independent full sort
    rank_of = np.empty_like(order)
    np.put_along_axis(rank_of, order, np.arange(60)[None, :].repeat(40, 0), axis=1)
    ranks = rank_of[query, image] + 1
    expected = per_query_metrics(similarity, query_pids, gallery_pids)
    got = per_query_from_ranks(query, ranks, 40, 60)
    np.testing.assert_array_equal(got.first_match_rank, expected.first_match_rank)
    np.testing.assert_allclose(got.average_precision, expected.average_precision)
    np.testing.assert_allclose(got.inverse_negative_penalty, expected.inverse_negative_penalty)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["global", "cross_scan"])
@pytest.mark.parametrize(("mode", "top_k"), [("exhaustive", 64), ("pruned", 3)])
def test_sharded_scoring_equals_one_process(
    variant: str, mode: str, top_k: int, tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    emb = tiny_emb(variant)
    one = score(emb, tmp_path / "one", mode=mode, top_k=top_k, track=False)  # type: ignore[arg-type]
    sharded = score(emb, tmp_path / "sharded", mode=mode, top_k=top_k, track=False, shards=3)  # type: ignore[arg-type]
    assert sharded.details["shards"] == 3 and len(sharded.details["shard_seconds"]) == 3
    assert sharded.metrics == one.metrics and sharded.pairs_scored == one.pairs_scored
    for name in (RANKINGS, PER_QUERY):
        a = pq.read_table(tmp_path / "one" / name).to_pandas()
        b = pq.read_table(tmp_path / "sharded" / name).to_pandas()
        for column in a.columns:
            if column == "score":
                np.testing.assert_allclose(b[column], a[column], rtol=1e-6, atol=1e-6)
            else:
                np.testing.assert_array_equal(b[column], a[column], err_msg=f"{name}: {column}")
    assert (tmp_path / "sharded" / METRICS).is_file()


@pytest.mark.slow
def test_sharded_embedding_writes_the_same_emb(
    tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    checkpoint = tiny_checkpoint("cross_scan")
    embed_split(tiny_data, checkpoint, tmp_path / "one", batch_size=5, indexes=("flat",))
    embed_split(tiny_data, checkpoint, tmp_path / "sharded", batch_size=5, indexes=("flat",), shards=3)
    one, sharded = EmbeddingStore(tmp_path / "one"), EmbeddingStore(tmp_path / "sharded")
    np.testing.assert_array_equal(sharded.gallery_ids()[0], one.gallery_ids()[0])
    np.testing.assert_allclose(sharded.image_globals(), one.image_globals(), rtol=1e-5, atol=1e-6)
    a = np.load(tmp_path / "one" / IMAGE_LOCAL)
    b = np.load(tmp_path / "sharded" / IMAGE_LOCAL)
    assert a.shape == b.shape and np.abs(a.astype(np.float32) - b.astype(np.float32)).max() < 1e-3
    torch.testing.assert_close(
        sharded.texts(slice(None), torch.device("cpu"), torch.float32).local,
        one.texts(slice(None), torch.device("cpu"), torch.float32).local,
    )


def test_sharded_pruned_scoring_keeps_each_shard_index_and_reuses_it(
    tiny_emb: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each shard's index is kept under EMB/shards/ and loaded by the next scoring; a damaged one is
    rebuilt; another embedding of the folder (a new embed_id) never reads them; `flat` is not kept; an
    EMB that cannot keep them still scores. The rankings and metrics are the same every time."""
    emb = tmp_path / "emb"
    shutil.copytree(tiny_emb("global"), emb)
    info = EmbedInfo.read(emb)
    parts = gallery_shards(info.num_images, 3)
    pids = ids_of(emb, QUERIES, "person_id")
    built: list[str] = []
    build = shards_module.build_index
    monkeypatch.setattr(
        shards_module, "build_index", lambda vectors, kind: built.append(kind) or build(vectors, kind)
    )

    def ranked(kind: str = "hnsw") -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        settings = RoundSettings(emb=emb, checkpoint=info.checkpoint, mode="pruned", top_k=3, index=kind,
                            memory_budget_mb=64.0, device="cpu", precision="fp32")  # fmt: skip
        result = score_sharded(settings, parts, pids, InProcess())
        return result.ranking.order, result.ranking.scores, result.per_query.metrics()

    reference = ranked()
    kept = sorted((emb / "shards").rglob("*.faiss"))
    key = kept[0].parent.name  # the embedding's id and how the index was built
    assert kept == sorted(shard_index_file(emb, key, "hnsw", p.start, p.stop) for p in parts)
    assert key.startswith(info.embed_id) and len(built) == 3
    assert sorted(faiss.read_index(str(path)).ntotal for path in kept) == sorted(p.size for p in parts)
    runs = [ranked()]  # loaded, not built
    assert len(built) == 3
    kept[1].write_bytes(b"not an index")
    runs.append(ranked())
    assert len(built) == 4 and faiss.read_index(str(kept[1])).ntotal in {p.size for p in parts}
    embed_json = emb / "embed.json"
    embed_json.write_text(embed_json.read_text().replace(info.embed_id, "another-embedding"))
    runs.append(ranked())  # a re-embed of the same size: every shard built again, under its own key
    assert len(built) == 7 and len(list((emb / "shards").rglob("*.faiss"))) == 6
    shutil.rmtree(emb / "shards")
    flat = ranked("flat")
    assert not (emb / "shards").exists()  # flat: built each time (a copy of the globals), never kept

    def unwritable(*args: object) -> None:
        raise RuntimeError("Error: 'f' failed: could not open for writing")  # what FAISS raises

    monkeypatch.setattr(shards_module, "save_index", unwritable)
    runs.append(ranked())
    assert not list((emb / "shards").rglob("*.faiss"))
    for other in runs:
        np.testing.assert_array_equal(other[0], reference[0])
        np.testing.assert_array_equal(other[1], reference[1])
        assert other[2] == reference[2]
    assert len(built) == 13  # 3 + 1 rebuilt + 3 for the new embedding + 3 flat + 3 not kept
    assert flat[0].shape == reference[0].shape
