"""The CLI's bad-input exits (in process, through `tbpr.cli.main`), and the MLflow scoring run
(real MLflow on a temporary SQLite file, shared by the tests of this module)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.core.errors import TbprError
from tasks.embed.encode import embed_split
from tasks.score.run import score
from tasks.tracking.config import TrackingConfig
from tasks.tracking.store import Tracker
from tbpr.cli import main

Tbpr = Callable[[list[str]], tuple[int, str]]  # the `tbpr` fixture of tests/cli/conftest.py


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> TrackingConfig:
    """Tracking in `<home>/mlflow.db`, the default place when TBPR_HOME is `<home>`."""
    home = tmp_path_factory.mktemp("home")
    config = TrackingConfig(
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_root=(home / "art").as_uri()
    )
    Tracker(config).experiment_id("tiny")  # creates the database once
    return config


def test_score_of_a_missing_emb_exits_2(
    tmp_path: Path,
    tbpr: Tbpr,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = [
        "score",
        str(tmp_path / "nowhere"),
        "--mode",
        "pruned",
        "--out",
        str(tmp_path / "out"),
        "--no-track",
    ]
    code, err = tbpr(args)
    assert code == 2 and "no embeddings folder" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("TBPR_DEBUG", "1")  # the traceback, for those who want it
    monkeypatch.setattr(sys, "argv", ["tbpr", *args])
    with pytest.raises(TbprError, match="no embeddings folder"):
        main()


def test_unknown_index_exits_2(
    tmp_path: Path,
    tiny_emb: Callable[[str], Path],
    tbpr: Tbpr,
) -> None:
    emb = str(tiny_emb("global"))
    code, err = tbpr(["score", emb, "--mode", "pruned", "--index", "annoy", "--out", "o"])
    assert code == 2 and "annoy" in err and "Traceback" not in err
    code, err = tbpr(["search", emb, "a man in a red jacket", "--index", "annoy"])
    assert code == 2 and "Traceback" not in err
    with pytest.raises(TbprError, match="unknown index"):
        score(Path(emb), tmp_path / "o", mode="pruned", index="annoy", track=False)


def test_embed_of_an_unknown_run_exits_2(
    tmp_path: Path,
    tiny_data: Path,
    tracking: TrackingConfig,
    tbpr: Tbpr,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TBPR_HOME", str(Path(str(tracking.tracking_uri).removeprefix("sqlite:///")).parent))
    args = ["embed", str(tiny_data), "--run", "no-such-run", "--out", str(tmp_path / "emb")]
    code, err = tbpr(args)
    assert code == 2 and "no model found" in err and "Traceback" not in err
    code, err = tbpr([*args, "--index", "hnsw", "--index", "annoy"])
    assert code == 2 and "unknown index 'annoy'" in err and "Traceback" not in err


def test_scoring_run_is_logged_and_linked_to_the_training_run(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tracking: TrackingConfig
) -> None:
    tracker = Tracker(tracking)
    experiment = tracker.experiment_id("tiny")
    train_run = tracker.start_run(experiment, "train-global", {"stage": "train", "variant": "global"})
    parent = tracker.start_run(experiment, "pipeline", {"stage": "pipeline"})
    emb = tmp_path / "emb"
    embed_split(tiny_data, tiny_checkpoint("global"), emb, indexes=("hnsw",), train_run_id=train_run)
    result = score(
        emb, tmp_path / "out", mode="pruned", top_k=3, index="hnsw", tracking=tracking, parent_run_id=parent
    )
    assert result.run_id is not None
    run = tracker.client.get_run(result.run_id)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["scoring_run_id"] == result.run_id
    tags = run.data.tags
    assert (tags["stage"], tags["variant"], tags["dataset"]) == ("score", "global", "tiny")
    assert tags["train_run_id"] == train_run and tags["mlflow.parentRunId"] == parent
    assert run.data.params["mode"] == "pruned" and run.data.params["top_k"] == "3"
    assert run.data.params["index"] == "hnsw"
    for name in ("R1", "R5", "R10", "mAP", "mINP"):
        assert run.data.metrics[f"test/{name}"] == pytest.approx(written[name])
    assert run.data.metrics["score/pairs_scored"] == written["pairs_scored"]
    assert run.data.metrics["score/seconds"] == pytest.approx(written["seconds"])
    assert run.info.status == "FINISHED" and run.info.experiment_id == experiment


def test_the_pipelines_rebuild_line_rebuilds_an_emb_as_the_pipeline_wrote_it(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tbpr: Tbpr
) -> None:
    """`tbpr run` names the `tbpr embed` line that rebuilds a removed EMB: with the main job's settings
    (precision auto, 8-bit locals) it carries both, and that line writes what the pipeline's embed wrote."""
    import numpy as np

    from flows.config import EmbedSettings, PipelineConfig, load_config, profile_path
    from tasks.embed.layout import EmbedInfo
    from tbpr.commands.pipeline import rebuild_command

    assert rebuild_command(EmbedSettings()) == "tbpr embed DATA --run RUN_ID --out EMB"
    line = rebuild_command(load_config(PipelineConfig, profile_path("main")).embed)
    assert line == "tbpr embed DATA --run RUN_ID --out EMB --precision auto --local-dtype uint8"
    checkpoint = tiny_checkpoint("cross_scan")
    args = line.split()[2:]
    args = [
        {"DATA": str(tiny_data), "RUN_ID": str(checkpoint), "EMB": str(tmp_path / "cli")}.get(a, a)
        for a in args
    ]
    code, err = tbpr(["embed", *args, "--index", "flat"])
    assert code == 0, err
    embed_split(
        tiny_data, checkpoint, tmp_path / "direct", indexes=("flat",), precision="auto", local_dtype="uint8"
    )
    assert EmbedInfo.read(tmp_path / "cli").local_dtype == "uint8"
    for name in ("image_local.npy", "image_local_ranges.npy", "text_local.npy", "text_local_ranges.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "cli" / name), np.load(tmp_path / "direct" / name))
