"""Each flow once under the Prefect test harness, on a tiny synthetic dataset (tests/flows/tiny.toml)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flows.config import RUN_CONFIG, PipelineConfig, RunnerConfig, TrainRunConfig, TrainSettings, load_config

pytestmark = pytest.mark.slow
TINY = Path(__file__).with_name("tiny.toml")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(image folder, its EMB) configured as the pipeline's gallery."""
    from tests.embed.folder_images import write_image_folder

    root = tmp_path_factory.mktemp("gallery")
    return write_image_folder(root / "images"), root / "emb"


@pytest.fixture(scope="module")
def pipeline(prefect_harness: None, tbpr_home: Path, gallery: tuple[Path, Path]) -> object:
    from flows.pipeline import tbpr_pipeline

    images, emb = gallery
    return tbpr_pipeline(
        load_config(PipelineConfig, TINY, [f"gallery.folder={images}", f"gallery.emb={emb}"])
    )


def _selected_val_r1(train: Path) -> float:
    """Val R1 of the one epoch a training run kept (its checkpoint's config)."""
    (config,) = train.glob("epoch_*/config.json")
    return float(json.loads(config.read_text())["extra"]["val"]["R1"])


def test_pipeline_outputs_tracking_and_warehouse(pipeline: object, tbpr_home: Path) -> None:
    from mlflow.tracking import MlflowClient

    from flows.pipeline import PipelineResult

    assert isinstance(pipeline, PipelineResult) and not pipeline.failed
    run_dir = pipeline.run_dir
    config = PipelineConfig.model_validate(json.loads((run_dir / RUN_CONFIG).read_text()))
    assert config.gallery is not None
    assert config.model_copy(update={"gallery": None}) == load_config(PipelineConfig, TINY)
    models = [f"{v}-seed{s}" for v in ("global", "cross_scan") for s in (0, 1)]
    # every seed was embedded and scored; once read, only each variant's best val seed keeps its EMB
    # (main.toml's keep_emb), judged here from the selected checkpoints' own val R1
    val = {name: _selected_val_r1(run_dir / "train" / name) for name in models}
    kept = {
        max((n for n in models if n.startswith(v)), key=lambda n: (val[n], -models.index(n)))
        for v in ("global", "cross_scan")
    }
    assert {p.name for p in (run_dir / "emb").iterdir()} == kept
    assert {p.name for p in pipeline.removed.folders} == set(models) - kept and pipeline.removed.bytes > 0
    for name in models:
        assert (run_dir / "emb" / name / RUN_CONFIG).is_file() == (name in kept)
        for job in ("exhaustive", "pruned-k5-flat", "pruned-k5-flat-from-global"):
            cascade = job.endswith("global")
            skipped = cascade and name.startswith("global")
            assert (run_dir / "score" / name / job / "rankings.parquet").is_file() != skipped
    plots = {p.name for p in (run_dir / "plots").iterdir()}
    assert {"cmc.png", "r1_vs_cost.png", "grounding.png", "val_curves.png", "cost_frontier.png"} <= plots
    assert any(p.startswith("attention_cross_scan") for p in plots)
    # every head started from the backbone fine-tuned once, and trained on the shared feature cache
    backbone = run_dir / "train" / "backbone"
    for name in models:
        saved = json.loads((run_dir / "train" / name / "train_config.json").read_text())
        assert saved["init_from"].startswith(str(backbone)) and saved["features"] == "cached"

    client = MlflowClient(f"sqlite:///{tbpr_home / 'mlflow.db'}")
    parent = client.get_run(pipeline.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["train.config.epochs"] == "1"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{pipeline.parent_run_id}'"
    )
    stages = sorted((c.data.tags["stage"], c.data.tags["variant"]) for c in children)
    per_model = ("train", "score", "score")  # and cross_scan's cascade
    expected = [(s, v) for v in ("global", "cross_scan") for _ in (0, 1) for s in per_model] + [
        ("train", "global"),
        *[("score", "cross_scan")] * 2,
    ]
    assert stages == sorted(expected)  # 2 variants x 2 seeds, and the backbone
    artifacts = {a.path for a in client.list_artifacts(pipeline.parent_run_id, "plots")}
    assert "plots/cmc.png" in artifacts

    # the leaderboard is each variant's reference (exhaustive) scoring children, mean over seeds, by
    # MLflow's own numbers; grounding is the mean of the cross_scan trainings' own test/grounding
    scoring = [c for c in children if c.data.tags["stage"] == "score"]
    reference: dict[str, list[float]] = {}
    for c in scoring:
        if c.data.tags["mode"] == "exhaustive":
            reference.setdefault(c.data.tags["variant"], []).append(c.data.metrics["test/R1"])
    assert pipeline.leaderboard is not None
    columns = pipeline.leaderboard.columns
    rows = {row[0]: dict(zip(columns, row, strict=True)) for row in pipeline.leaderboard.rows}
    assert set(rows) == {"global", "cross_scan"}
    for variant, values in reference.items():
        assert rows[variant]["seeds"] == 2 and rows[variant]["R1"] == pytest.approx(sum(values) / 2)
    heads = [
        c for c in children if c.data.tags["stage"] == "train" and c.data.tags["variant"] == "cross_scan"
    ]
    grounding = [c.data.metrics["test/grounding"] for c in heads]
    assert rows["cross_scan"]["grounding"] == pytest.approx(sum(grounding) / 2, abs=0.05)
    assert rows["global"]["grounding"] is None
    # every row says how long each head trained and why it stopped: here the 1 configured epoch
    assert {(r["epochs"], r["stop"]) for r in rows.values()} == {("1", "epochs")}
    assert rows["global"]["mde"] is None and rows["cross_scan"]["mde"] > 0
    con = duckdb.connect(str(pipeline.warehouse), read_only=True)
    assert con.sql("SELECT count(*) FROM attributes").fetchall()[0][0] > 0
    con.close()
    _check_cascades(pipeline, scoring, children)


def _check_cascades(pipeline: object, scoring: list[Any], children: list[Any]) -> None:
    """Each model's cascade job took its candidates from the same seed's `global`; `cost_frontier`
    lists every job with MLflow's numbers and marks the Pareto set an independent loop finds."""
    from flows.pipeline import PipelineResult
    from tasks.report.frontier import cost_frontier
    from tests.report.test_warehouse_sql import pareto_set

    assert isinstance(pipeline, PipelineResult) and pipeline.warehouse is not None
    train = {c.info.run_id: c for c in children if c.data.tags["stage"] == "train"}
    cascades = [c for c in scoring if c.data.tags.get("cascade") == "true"]
    assert len(cascades) == 2 and {c.data.tags["candidates_variant"] for c in cascades} == {"global"}
    assert {c.data.tags["variant"] for c in cascades} == {"cross_scan"}
    for run in cascades:
        model = train[run.data.tags["train_run_id"]]
        proposer = train[run.data.params["candidates_run_id"]]
        assert proposer.data.tags["variant"] == "global"
        assert proposer.data.params["train.seed"] == model.data.params["train.seed"]
        assert run.data.params["candidates"] == "global" and run.data.params["top_k"] == "5"
        assert run.data.metrics["score/pairs_rerank"] == run.data.metrics["score/pairs_scored"]
    result = cost_frontier(pipeline.warehouse)
    rows = {row[0]: dict(zip(result.columns, row, strict=True)) for row in result.rows}
    jobs = {"exhaustive": ("exhaustive", None), "k5": ("pruned", None), "k5 from": ("pruned", "global")}
    labels = {
        f"global -> {v} k5" if c else f"{v} {how.split()[0]}": (v, m, c)
        for v in ("global", "cross_scan")
        for how, (m, c) in jobs.items()
        if v != c  # global's cascade from itself would be its pruned job: skipped
    }
    assert set(rows) == set(labels)
    seconds: dict[tuple[str, str, str | None], list[float]] = {}
    flops: dict[tuple[str, str, str | None], list[float]] = {}
    for run in scoring:
        key = (run.data.tags["variant"], run.data.params["mode"], run.data.params.get("candidates"))
        seconds.setdefault(key, []).append(run.data.metrics["score/seconds"])
        flops.setdefault(key, []).append(run.data.metrics["score/flops_per_query"])
    metrics = json.loads(
        (pipeline.run_dir / "score" / "global-seed0" / "exhaustive" / "metrics.json").read_text()
    )
    points = {}
    for job, row in rows.items():
        mean = sum(seconds[labels[job]]) / 2
        assert row["seeds"] == 2
        assert row["s_per_1k_queries"] == pytest.approx(1000 * mean / metrics["num_queries"], abs=1e-3)
        low, high = map(float, row["R1_95"].split(".."))
        assert low - 0.05 <= row["R1"] <= high + 0.05
        gflops = sum(flops[labels[job]]) / 2e9  # counted work: the cost axis of the Pareto flag
        assert row["gflops_per_query"] == pytest.approx(gflops, rel=1e-3)
        points[job] = (row["R1"], gflops)
    assert {job for job, row in rows.items() if row["pareto"]} == pareto_set(points)


def test_a_new_champion_refreshes_the_configured_gallery(
    pipeline: object, tbpr_home: Path, gallery: tuple[Path, Path]
) -> None:
    """The first run promotes champions, so the gallery is embedded with the best of them; the
    `refresh-gallery` flow run again finds nothing to encode."""
    from flows.config import GalleryRunConfig
    from flows.gallery import refresh_gallery_flow
    from flows.pipeline import PipelineResult
    from tasks.embed.layout import FOLDER_JSON, EmbedInfo
    from tasks.tracking.models import best_champion, resolve_checkpoint
    from tests.embed.folder_images import GOOD

    images, emb = gallery
    assert isinstance(pipeline, PipelineResult) and pipeline.gallery == emb
    record = json.loads((emb / FOLDER_JSON).read_text())
    assert record["counts"]["encoded"] == len(GOOD) and record["folder"] == str(images.resolve())
    ref, _ = best_champion()
    info = EmbedInfo.read(emb)
    assert info.model_ref == ref and info.train_run_id == resolve_checkpoint(ref)[1]["run_id"]
    again = refresh_gallery_flow(GalleryRunConfig(folder=images, emb=emb))
    assert again.counts["encoded"] == 0 and again.counts["unchanged"] == record["counts"]["added"]


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


def test_feature_cache_is_cached_by_its_inputs(pipeline: object, tbpr_home: Path) -> None:
    from prefect import flow

    from flows.prefect_tasks import feature_cache_task

    tiny = load_config(PipelineConfig, TINY)
    data = next(p for p in (tbpr_home / "data").iterdir() if not p.name.startswith("synth-raw"))

    @flow
    def twice() -> list[tuple[str, Path]]:
        states = [
            feature_cache_task(data, tiny.train.config, progress=False, return_state=True) for _ in range(2)
        ]
        return [(state.name, state.result()) for state in states]

    (_, path), (second, again) = twice()
    assert second == "Cached" and again == path and (path / "cache.json").is_file()


def test_train_variants_on_dask_names_the_failed_variant(pipeline: object, tbpr_home: Path) -> None:
    from flows.runners import task_runner
    from flows.train import train_variants_flow

    tiny = load_config(PipelineConfig, TINY)
    data = next(p for p in (tbpr_home / "data").iterdir() if not p.name.startswith("synth-raw"))
    runner = RunnerConfig(kind="dask", workers=1)
    config = TrainRunConfig(
        data=data,
        train=TrainSettings(
            variants=["global", "channel"],
            config=tiny.train.config,
            per_variant={"channel": {"batch_size": 100_000}},  # fails when training starts: too few captions
        ),
        runner=runner,
    )
    state = train_variants_flow.with_options(task_runner=task_runner(runner))(config, return_state=True)
    assert state.is_failed()
    assert "channel" in str(state.message) and "1 of 2" in str(state.message)


def test_process_runner_trains_in_worker_processes_as_one_thread_trains_here(
    pipeline: object, tbpr_home: Path
) -> None:
    import torch

    from flows.runners import task_runner
    from flows.train import train_variants_flow
    from tasks.core.device import set_threads
    from tasks.train.loop import train_variant

    tiny = load_config(PipelineConfig, TINY)
    data = next(p for p in (tbpr_home / "data").iterdir() if not p.name.startswith("synth-raw"))
    runner = RunnerConfig(kind="process", workers=2, threads_per_worker=1)
    settings = TrainSettings(variants=["global"], seeds=[0, 1], config=tiny.train.config)
    config = TrainRunConfig(data=data, train=settings, runner=runner)
    outcome = train_variants_flow.with_options(task_runner=task_runner(runner))(config)
    assert not outcome.failed and len(outcome.results) == 2
    # seed 1 again, here, on one thread: the worker's run is the same computation
    before = torch.get_num_threads()
    set_threads(1)
    try:
        here = train_variant(data, settings.for_variant("global", 1), progress=False, promote=False)
    finally:
        set_threads(before)
    worker = outcome.results["global-seed1"]
    assert worker.run_id != here.run_id
    assert worker.val_curve and worker.val_curve == here.val_curve
    assert worker.test_metrics == here.test_metrics


def test_lr_grid_chooses_each_variants_lr_on_val(pipeline: object, tbpr_home: Path) -> None:
    from flows.train import train_variants_flow
    from tasks.tracking.selection import selection_score

    tiny = load_config(PipelineConfig, TINY)
    data = next(p for p in (tbpr_home / "data").iterdir() if not p.name.startswith("synth-raw"))
    grid = [1e-5, 3e-3]
    settings = TrainSettings(
        variants=["global"],
        seeds=[0, 1],
        lr_grid=grid,
        config=tiny.train.config.model_copy(update={"epochs": 2}),
    )
    outcome = train_variants_flow(TrainRunConfig(data=data, train=settings))
    assert set(outcome.results) == {"global-seed0", "global-seed1"} and set(outcome.searched) == {
        f"global-seed0-lr{lr:g}" for lr in grid if lr != outcome.chosen_lr["global"]
    }
    # the kept seed-0 run is the grid's best by the selection rule; seed 1 trains at its lr
    (other,) = outcome.searched.values()
    kept = outcome.results["global-seed0"]
    assert selection_score(kept.val_curve, 1) >= selection_score(other.val_curve, 1)
    lrs = {
        name: json.loads((r.checkpoint_dir.parent / "train_config.json").read_text())["lr"]
        for name, r in outcome.results.items()
    }
    assert set(lrs.values()) == {outcome.chosen_lr["global"]}
    assert not other.promoted  # the search's other run is registered, never champion


def test_bad_input_found_inside_the_pipeline_is_one_error_line(
    prefect_harness: None, tbpr_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A source folder without its images fails in the prepare task: `tbpr run` says so in one `error:`
    line with exit status 2, as every other command does, not Prefect's traceback and exit 1."""
    import sys

    from tbpr.cli import main

    source = tmp_path / "src"
    source.mkdir()
    (source / "reid_raw.json").write_text("[]")
    monkeypatch.setattr(sys, "argv", ["tbpr", "run", "--config", str(TINY), "--set", f"data.source={source}"])
    with pytest.raises(SystemExit) as stop:
        main()
    out, err = capsys.readouterr()
    assert stop.value.code == 2
    assert f"error: image folder {source / 'imgs'} does not exist" in err
    assert "Traceback" not in out + err


def test_the_pipeline_says_where_each_runs_time_went(pipeline: object) -> None:
    import io

    from rich.console import Console

    from flows.pipeline import PipelineResult
    from tasks.core.env import home
    from tbpr.commands.pipeline import show_disk, show_phases, show_removed

    assert isinstance(pipeline, PipelineResult)
    assert {"prepare", "train", "embed", "score", "open_set", "plots", "warehouse"} == set(pipeline.phases)
    assert set(pipeline.runs) == {f"{v}-seed{s}" for v in ("global", "cross_scan") for s in (0, 1)}
    for variant, phases in pipeline.runs.values():
        assert variant in ("global", "cross_scan") and phases["steps"] > 0 and phases["val"] > 0
    summed = {k: sum(p[k] for _, p in pipeline.runs.values()) for k in pipeline.training}
    assert summed == pytest.approx(pipeline.training)
    out = io.StringIO()
    show_phases(Console(file=out, width=80), pipeline)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines)
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:1] in (["global"], ["all"])}
    assert rows["global"][1] == "2" and rows["all"][1] == "4" and rows["all"][-1].endswith("%")
    mean_total = sum(sum(p.values()) for _, p in pipeline.runs.values()) / 4
    assert float(rows["all"][-2]) == pytest.approx(mean_total, abs=0.06)
    # then the EMBs the run removed and what TBPR_HOME holds on disk, each in one line
    out = io.StringIO()
    show_removed(Console(file=out, width=200), pipeline, "tbpr embed DATA --run RUN_ID --out EMB")
    show_disk(Console(file=out, width=200), home())
    removed, disk = [line for line in out.getvalue().splitlines() if line]
    assert (
        f"removed {len(pipeline.removed.folders)} other folders ({pipeline.removed.bytes / 2**20:.0f} MB"
        in removed
    )
    assert disk.startswith(f"Disk {sum(home().disk().values()) / 2**20:.0f} MB under {home().root}: ")


def test_pipeline_measures_open_set_per_model(pipeline: object) -> None:
    """Each model embeds val, sets its threshold there and is measured on test: its row in the run's
    open_set folder and the warehouse (sql/open_set.sql per variant) and the trade-off plot."""
    import pyarrow.parquet as pq

    from flows.pipeline import PipelineResult

    assert isinstance(pipeline, PipelineResult) and pipeline.warehouse is not None
    run_dir = pipeline.run_dir
    models = [f"{v}-seed{s}" for v in ("global", "cross_scan") for s in (0, 1)]
    rows = {}
    for name in models:
        assert not (run_dir / "emb_val" / name).exists()  # the val EMB is scratch, removed once measured
        rows[name] = pq.read_table(run_dir / "open_set" / f"{name}.parquet").to_pylist()[0]
    assert (run_dir / "plots" / "open_set.png").is_file()
    for name, row in rows.items():
        assert row["model"] == name and row["false_alarm_target"] == 0.05
        assert 0 <= row["false_alarm"] <= 1 and 0 <= row["miss_rate"] <= 1
        assert row["hit_rate"] <= row["detected"] == pytest.approx(1 - row["miss_rate"])
    con = duckdb.connect(str(pipeline.warehouse), read_only=True)
    sql = (Path(__file__).resolve().parents[2] / "sql" / "open_set.sql").read_text()
    rel = con.sql(sql)
    by_variant = {r[0]: dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()}
    con.close()
    assert set(by_variant) == {"global", "cross_scan"}
    for variant, row in by_variant.items():
        seeds = [r for r in rows.values() if r["variant"] == variant]
        assert row["seeds"] == 2
        assert row["missed"] == round(100 * sum(r["miss_rate"] for r in seeds) / 2, 1)
