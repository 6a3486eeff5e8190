"""Each flow once under the Prefect test harness, on a tiny synthetic dataset (tests/flows/tiny.toml)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pytest

from flows.config import RUN_CONFIG, PipelineConfig, RunnerConfig, TrainRunConfig, TrainSettings, load_config

pytestmark = pytest.mark.slow
TINY = Path(__file__).with_name("tiny.toml")


@pytest.fixture(scope="module")
def pipeline(prefect_harness: None, tbpr_home: Path) -> object:
    from flows.pipeline import tbpr_pipeline

    return tbpr_pipeline(load_config(PipelineConfig, TINY))


def test_pipeline_outputs_tracking_and_warehouse(pipeline: object, tbpr_home: Path) -> None:
    from mlflow.tracking import MlflowClient

    from flows.pipeline import PipelineResult

    assert isinstance(pipeline, PipelineResult) and not pipeline.failed
    run_dir = pipeline.run_dir
    config = json.loads((run_dir / RUN_CONFIG).read_text())
    assert PipelineConfig.model_validate(config) == load_config(PipelineConfig, TINY)
    for variant in ("global", "cross_scan"):
        assert (run_dir / "emb" / variant / RUN_CONFIG).is_file()
        for job in ("exhaustive", "pruned-k5-flat"):
            assert (run_dir / "score" / variant / job / "rankings.parquet").is_file()
    plots = {p.name for p in (run_dir / "plots").iterdir()}
    assert {"cmc.png", "r1_vs_cost.png"} <= plots and any(p.startswith("attention_cross_scan") for p in plots)

    client = MlflowClient(f"sqlite:///{tbpr_home / 'mlflow.db'}")
    parent = client.get_run(pipeline.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["train.config.epochs"] == "1"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{pipeline.parent_run_id}'"
    )
    stages = sorted((c.data.tags["stage"], c.data.tags["variant"]) for c in children)
    assert stages == sorted([(s, v) for v in ("global", "cross_scan") for s in ("train", "score", "score")])
    artifacts = {a.path for a in client.list_artifacts(pipeline.parent_run_id, "plots")}
    assert "plots/cmc.png" in artifacts

    # the leaderboard is each variant's reference (exhaustive) scoring child, by MLflow's own numbers
    scoring = [c for c in children if c.data.tags["stage"] == "score"]
    reference = {
        c.data.tags["variant"]: c.data.metrics["test/R1"]
        for c in scoring
        if c.data.tags["mode"] == "exhaustive"
    }
    assert pipeline.leaderboard is not None
    columns = pipeline.leaderboard.columns
    rows = {row[0]: row[columns.index("R1")] for row in pipeline.leaderboard.rows}
    assert set(rows) == {"global", "cross_scan"} and rows == pytest.approx(reference)
    con = duckdb.connect(str(pipeline.warehouse), read_only=True)
    assert con.sql("SELECT count(*) FROM attributes").fetchall()[0][0] > 0
    con.close()


def test_prepare_is_cached_by_its_inputs(pipeline: object, tbpr_home: Path) -> None:
    from prefect import flow

    from flows.prefect_tasks import prepare_task

    data = next(p for p in (tbpr_home / "data").iterdir() if not p.name.startswith("synth-raw"))
    source = next((tbpr_home / "data").glob("synth-raw-*"))

    @flow
    def twice() -> list[str]:
        return [prepare_task(source, "cuhk-pedes", data, return_state=True).name for _ in range(2)]

    assert twice() == ["Completed", "Cached"]
    annotation = source / "reid_raw.json"
    os.utime(annotation, ns=(annotation.stat().st_atime_ns, annotation.stat().st_mtime_ns + 10**9))
    assert twice()[0] == "Completed"  # a changed input file is a new key


def test_train_variants_on_dask_names_the_failed_variant(pipeline: object, tbpr_home: Path) -> None:
    from flows.runners import task_runner
    from flows.train import train_variants_flow

    tiny = load_config(PipelineConfig, TINY)
    data = next(p for p in (tbpr_home / "data").iterdir() if not p.name.startswith("synth-raw"))
    runner = RunnerConfig(kind="dask", workers=1)
    config = TrainRunConfig(
        data=data,
        train=TrainSettings(variants=["global", "no_such_variant"], config=tiny.train.config),
        runner=runner,
    )
    state = train_variants_flow.with_options(task_runner=task_runner(runner))(config, return_state=True)
    assert state.is_failed()
    assert "no_such_variant" in str(state.message) and "1 of 2" in str(state.message)
