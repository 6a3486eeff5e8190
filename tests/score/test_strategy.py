"""A scoring strategy added in one file (this one): registered by name, validated by the same plan, run
by the same runner, recorded with the same keys; its rankings and metrics checked against numpy. And
the common schema every built-in strategy records."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.core.errors import TbprError
from tasks.embed.store import EmbeddingStore
from tasks.score.plan import JOB_NAMES, ScorePlan
from tasks.score.ranking import Ranking
from tasks.score.run import score, score_plan
from tasks.score.strategy import LocalJob, Scored, Strategy, register_strategy
from tbpr_models.metrics import rank_order

COMMON = ("seconds", "pairs_scored", "seconds_stage1", "seconds_rerank", "pairs_stage1", "pairs_rerank",
          "candidates_found", "strategy", "shards", "mode", "R1", "mAP", "mINP")  # fmt: skip


class ReverseGlobal(Strategy):
    """A toy: every image by ascending global cosine (the worst first)."""

    name = "reverse-global"
    mode = "exhaustive"

    def score(self, job: LocalJob) -> Scored:
        start = time.perf_counter()
        cosine = job.store.text_globals() @ job.store.image_globals().T  # (Q, G)
        order, values = rank_order(-cosine)  # the tie rule: the lower row first
        return Scored(Ranking(order=order, scores=-values), time.perf_counter() - start, cosine.size)


register_strategy(ReverseGlobal())


def _numpy_metrics(order: np.ndarray, query_pids: np.ndarray, gallery_pids: np.ndarray) -> dict[str, float]:
    """R1, R5, mAP, mINP in percent, computed directly from the ranked gallery rows."""
    r1, r5, ap, inp = [], [], [], []
    for q, rows in enumerate(order):
        hits = np.flatnonzero(gallery_pids[rows] == query_pids[q]) + 1  # 1-based ranks of the positives
        r1.append(hits[0] <= 1)
        r5.append(hits[0] <= 5)
        ap.append(np.mean(np.arange(1, len(hits) + 1) / hits))
        inp.append(len(hits) / hits[-1])
    return {
        "R1": 100 * np.mean(r1),
        "R5": 100 * np.mean(r5),
        "mAP": 100 * np.mean(ap),
        "mINP": 100 * np.mean(inp),
    }


def test_a_toy_strategy_runs_through_the_plan_and_the_runner(
    tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    emb = tiny_emb("global")
    result = score_plan(ScorePlan(strategy="reverse-global"), emb, tmp_path / "out", track=False)
    store = EmbeddingStore(emb)
    cosine = store.text_globals().astype(np.float64) @ store.image_globals().astype(np.float64).T
    order = np.argsort(cosine, axis=1, kind="stable")  # ascending: the worst first, ties by lower row
    query_ids, query_pids = store.query_ids()
    image_ids, gallery_pids = store.gallery_ids()
    table = pq.read_table(tmp_path / "out" / "rankings.parquet").sort_by(
        [("query_id", "ascending"), ("rank", "ascending")]
    )
    got = np.array(table.column("image_id").to_pylist()).reshape(len(query_ids), -1)
    expected = image_ids[order[np.argsort(query_ids)]][:, : got.shape[1]]
    np.testing.assert_array_equal(got, expected)
    for name, value in _numpy_metrics(order, query_pids, gallery_pids).items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-9), name
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(COMMON) <= set(document)
    assert document["strategy"] == "reverse-global" and document["shards"] == 1
    assert document["seconds_stage1"] is None and document["pairs_scored"] == cosine.size


def test_the_plan_validates_a_toy_strategy_like_a_built_in_one() -> None:
    with pytest.raises(TbprError, match="--adaptive is not an option of reverse-global"):
        ScorePlan(strategy="reverse-global", adaptive=True)
    with pytest.raises(TbprError, match="reverse-global scoring runs in one process; drop shards"):
        ScorePlan(strategy="reverse-global", shards=2, names=JOB_NAMES)
    with pytest.raises(TbprError, match=r"unknown scoring strategy 'reverse'.*reverse-global"):
        ScorePlan(strategy="reverse")


@pytest.mark.parametrize(
    ("mode", "options"), [("exhaustive", {}), ("pruned", {"top_k": 3}), ("pruned", {"top_k": 3, "shards": 2})]
)
def test_every_strategy_records_the_common_keys(
    mode: str, options: dict[str, int], tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    result = score(tiny_emb("global"), tmp_path / "out", mode=mode, track=False, **options)  # type: ignore[arg-type]
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(COMMON) <= set(document) and document["shards"] == options.get("shards", 1)
    staged = mode == "pruned"
    assert (document["seconds_stage1"] is not None) == staged
    assert (document["pairs_rerank"] == result.pairs_scored) if staged else document["pairs_rerank"] is None
    if staged:
        assert 0 <= document["seconds_stage1"] <= document["seconds"]
        assert document["flops_per_query"] > 0


def test_a_pipeline_job_builds_the_plan_the_command_line_builds() -> None:
    from flows.config import ScoreJob

    job = ScoreJob(mode="pruned", top_k=5, index="hnsw", reranker=Path("/models/blip"))
    cli = ScorePlan.from_options("pruned", top_k=5, index="hnsw", reranker=Path("/models/blip"))
    assert job.plan() == cli and cli.strategy == "external" and cli.mode == "pruned"
    assert job.name == "pruned-k5-hnsw-reranked-blip"
    with pytest.raises(ValueError, match=r"reranker re-ranks .*\(not with exhaustive, shards, adaptive"):
        ScoreJob(mode="exhaustive", reranker=Path("/models/blip"))  # the plan's rule, in TOML's names
    with pytest.raises(TbprError, match=r"--reranker re-ranks .*\(not with exhaustive, --shards, --adaptive"):
        ScorePlan.from_options("exhaustive", reranker=Path("/models/blip"))


def test_the_sharded_driver_reads_the_shapes_without_opening_the_gallery(
    tiny_emb: Callable[[str], Path],
) -> None:
    from tasks.embed.layout import EmbedInfo
    from tasks.score import sharded
    from tasks.score.cost import mean_words

    emb = tiny_emb("cross_scan")
    shapes, words = sharded.emb_shapes(emb, EmbedInfo.read(emb))
    store = EmbeddingStore(emb)
    assert shapes == store.shapes() and words == mean_words(np.asarray(store.text_mask))
    assert not hasattr(sharded, "EmbeddingStore")  # the driver holds no gallery globals
