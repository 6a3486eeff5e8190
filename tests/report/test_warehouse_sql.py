"""The warehouse is built from a real MLflow SQLite store; every sql/ file is checked against MLflow.

Why this file is over ~400 lines: every test reads the one store built by the `store` fixture (a
pipeline run of three variants, two jobs each), which takes most of the file's time to build."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.report.open_set import OPEN_SET_DIR, OpenSetMeasure, open_set_glob, write_measure
from tasks.report.vocabulary import VOCABULARY
from tasks.report.warehouse import sync

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
# Captions of 4 people (one test image each): query_id == caption_id, person p has image 10 + p.
CAPTIONS = {
    0: (0, "a man in a red jacket and black trousers"),
    1: (1, "a woman in a blue dress with a backpack"),
    2: (2, "a man in a red shirt and blue jeans"),
    3: (3, "a woman in a white coat"),
}
# Ranked image ids per job and query (an independent, hand-made ranking).
# What the trainer logs (tbpr_models.parameter_counts) for each variant's training run
HEAD_PARAMS = {
    "global": {"head_params": 0, "trainable_params": 426497},
    "channel": {"head_params": 66176, "trainable_params": 492673},
    "gpo": {"head_params": 372800, "trainable_params": 1799297},
}
RANKINGS = {
    "exhaustive": {0: [10, 11, 12, 13], 1: [12, 11, 10, 13], 2: [10, 13, 11, 12], 3: [13, 10, 11, 12]},
    "pruned": {0: [11, 10, 12, 13], 1: [11, 12, 10, 13], 2: [12, 10, 11, 13], 3: [13, 11, 12, 10]},
}


@dataclass(frozen=True)
class Store:
    db: Path
    warehouse: Path
    parent_id: str
    train_ids: dict[str, str]
    score_ids: dict[tuple[str, str], str]
    out_dirs: dict[tuple[str, str], Path]


def _write_data(data: Path) -> None:
    data.mkdir(parents=True)
    ids = sorted(CAPTIONS)
    pq.write_table(
        pa.table(
            {
                "caption_id": pa.array(ids, pa.int64()),
                "image_id": pa.array([10 + CAPTIONS[i][0] for i in ids], pa.int64()),
                "person_id": pa.array([CAPTIONS[i][0] for i in ids], pa.int64()),
                "split": ["test"] * len(ids),
                "text": [CAPTIONS[i][1] for i in ids],
            }
        ),
        data / "captions.parquet",
    )
    pq.write_table(
        pa.table(
            {
                # person 3 also has a train image (20): the data-quality report flags it
                "image_id": pa.array([10, 11, 12, 13, 20], pa.int64()),
                "person_id": pa.array([0, 1, 2, 3, 3], pa.int64()),
                "split": ["test"] * 4 + ["train"],
                "file_path": [f"p{i}.jpg" for i in range(5)],
                "image": [b"x"] * 5,
                "height": pa.array([8] * 5, pa.int32()),
                "width": pa.array([4] * 5, pa.int32()),
            }
        ),
        data / "images.parquet",
    )


def _match_rank(query: int, images: list[int]) -> int:
    return images.index(10 + CAPTIONS[query][0]) + 1  # one positive per query: person p is image 10 + p


def _write_rankings(out: Path, ranking: dict[int, list[int]]) -> None:
    """rankings.parquet and per_query.parquet (one positive per query: AP = INP = 1 / rank)."""
    out.mkdir(parents=True)
    first = {q: _match_rank(q, images) for q, images in ranking.items()}
    pq.write_table(
        pa.table(
            {
                "query_id": pa.array(list(first), pa.int64()),
                "first_match_rank": pa.array(list(first.values()), pa.int64()),
                "ap": pa.array([1.0 / r for r in first.values()], pa.float64()),
                "inp": pa.array([1.0 / r for r in first.values()], pa.float64()),
            }
        ),
        out / "per_query.parquet",
    )
    rows = [
        (q, rank, image, 1.0 - rank / 10)
        for q, images in ranking.items()
        for rank, image in enumerate(images, 1)
    ]
    q, r, i, s = zip(*rows, strict=True)
    pq.write_table(
        pa.table(
            {
                "query_id": pa.array(q, pa.int64()),
                "rank": pa.array(r, pa.int32()),
                "image_id": pa.array(i, pa.int64()),
                "score": pa.array(s, pa.float32()),
            }
        ),
        out / "rankings.parquet",
    )


OPEN_SET = {"global": (0.10, 0.30, 0.60), "channel": (0.02, 0.50, 0.40)}  # false alarm, miss, hit


def _write_open_set(runs: Path, parent_run_id: str, train_ids: dict[str, str]) -> None:
    """Each variant's open-set row of this pipeline run, and an older run's row that must not count."""
    for run, parent, rates in (
        ("0-older", "older", {"global": (0.9, 0.9, 0.0)}),
        ("1-latest", parent_run_id, OPEN_SET),
    ):
        for variant, (false_alarm, miss, hit) in rates.items():
            measured = OpenSetMeasure(
                1.5,
                0.05,
                0.05,
                20,
                false_alarm,
                miss,
                1 - miss,
                hit,
                40,
                40,
                (1.0, 2.0),
                (0.5, 0.0),
                (0.1, 1.0),
            )
            labels: dict[str, str | int | None] = {"model": variant, "variant": variant, "seed": 0}
            write_measure(
                measured,
                runs / run / OPEN_SET_DIR / f"{variant}.parquet",
                **labels,
                train_run_id=train_ids[variant],
                parent_run_id=parent,
            )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    import mlflow

    root = tmp_path_factory.mktemp("store")
    db = root / "mlflow.db"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    experiment = mlflow.create_experiment("tbpr/synth", artifact_location=(root / "artifacts").as_uri())
    _write_data(root / "data")
    train_ids: dict[str, str] = {}
    score_ids: dict[tuple[str, str], str] = {}
    out_dirs: dict[tuple[str, str], Path] = {}
    with mlflow.start_run(experiment_id=experiment, run_name="pipeline") as parent:
        mlflow.log_param("train.epochs", 3)
        for v, variant in enumerate(["global", "channel", "gpo"]):
            with mlflow.start_run(experiment_id=experiment, nested=True) as run:
                mlflow.set_tags({"variant": variant, "stage": "train", "dataset": "synth"})
                mlflow.log_params(HEAD_PARAMS[variant])
                for epoch in range(1, 4):
                    mlflow.log_metric("val/R1", 10.0 * epoch + v, step=epoch)
                train_ids[variant] = run.info.run_id
            for mode, seconds, pairs, r1 in (
                ("exhaustive", 8.0, 16, 50.0 + v),
                ("pruned", 2.0, 8, 25.0 + 3 * v),
            ):
                out = root / "runs" / variant / mode
                _write_rankings(out, RANKINGS[mode])
                settings = {"mode": mode, "top_k": 2, "index": "flat"}
                with mlflow.start_run(experiment_id=experiment, nested=True) as run:
                    mlflow.set_tags({"variant": variant, "stage": "score", "dataset": "synth"})
                    if variant == "global":  # settings as MLflow params (metrics.json marks the job complete)
                        mlflow.log_params(
                            {**settings, "out_dir": str(out), "model_run_id": train_ids[variant]}
                        )
                        (out / "metrics.json").write_text(json.dumps({"scoring_run_id": run.info.run_id}))
                    else:  # settings only in metrics.json, as tasks.score.run writes it
                        document = {
                            **settings,
                            "scoring_run_id": run.info.run_id,
                            "train_run_id": train_ids[variant],
                        }
                        (out / "metrics.json").write_text(json.dumps(document))
                    mlflow.log_metrics(
                        {
                            "test/R1": r1,
                            "test/R5": 100.0,
                            "score/seconds": seconds,
                            "score/pairs_scored": pairs,
                            "score/flops_per_query": 1e9 * pairs,  # counted work: 1 GFLOP per pair
                        }
                    )
                    score_ids[(variant, mode)] = run.info.run_id
                out_dirs[(variant, mode)] = out
    _write_open_set(root / "runs", parent.info.run_id, train_ids)
    warehouse = root / "warehouse.duckdb"
    summary = sync(
        db,
        warehouse,
        str(root / "runs" / "**" / "rankings.parquet"),
        [root / "data"],
        None,
        open_set_glob(root / "runs"),
    )
    assert summary.scoring_jobs == 6 and summary.rankings_files == 6
    return Store(db, warehouse, parent.info.run_id, train_ids, score_ids, out_dirs)


def _query(store: Store, name: str) -> list[dict[str, object]]:
    con = duckdb.connect(str(store.warehouse), read_only=True)
    try:
        rel = con.sql((SQL_DIR / f"{name}.sql").read_text())
        return [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]
    finally:
        con.close()


def _metric(store: Store, run_id: str, key: str) -> float:
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{store.db}").get_run(run_id).data.metrics[key]


def test_scoring_jobs_take_settings_from_params_or_metrics_json(store: Store) -> None:
    con = duckdb.connect(str(store.warehouse), read_only=True)
    rel = con.sql("SELECT run_id, variant, mode, top_k, out_dir, model_run_id FROM scoring_jobs")
    rows = {row[0]: row[1:] for row in rel.fetchall()}
    con.close()
    assert rows == {
        run_id: (variant, mode, 2, str(store.out_dirs[(variant, mode)]), store.train_ids[variant])
        for (variant, mode), run_id in store.score_ids.items()
    }


def test_tables_mirror_mlflow(store: Store) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store.db}")
    con = duckdb.connect(str(store.warehouse), read_only=True)
    runs = dict(con.sql("SELECT run_id, parent_run_id FROM runs").fetchall())
    params = con.sql("SELECT run_id, key, value FROM params").fetchall()
    con.close()
    expected_runs = client.search_runs([client.get_experiment_by_name("tbpr/synth").experiment_id])
    assert set(runs) == {r.info.run_id for r in expected_runs}
    for run in expected_runs:
        assert runs[run.info.run_id] == run.data.tags.get("mlflow.parentRunId")
        assert {(k, v) for rid, k, v in params if rid == run.info.run_id} == set(run.data.params.items())


def _r1(ranking: dict[int, list[int]]) -> float:
    return 100.0 * sum(_match_rank(q, images) == 1 for q, images in ranking.items()) / len(ranking)


def test_leaderboard_reports_the_reference_job_never_the_best_on_test(store: Store) -> None:
    rows = {row["variant"]: row for row in _query(store, "leaderboard")}
    assert set(rows) == {"global", "channel", "gpo"}
    assert _r1(RANKINGS["pruned"]) > _r1(RANKINGS["exhaustive"])  # test prefers pruned: not a criterion
    for variant, row in rows.items():
        assert row["R1"] == pytest.approx(_r1(RANKINGS["exhaustive"]))
        assert row["seeds"] == 1
        assert row["seconds"] == _metric(store, store.score_ids[(variant, "exhaustive")], "score/seconds")
    assert rows["global"]["dR1"] is None and rows["channel"]["dR1"] == pytest.approx(0.0)
    # same per-query results: no spread, the Holm interval is the point, not significant
    assert rows["channel"]["dR1_holm95"] == "+0.0..+0.0" and rows["channel"]["vs_global"] == "n.s."
    assert rows["channel"]["vs_gpo"] == "n.s." and rows["gpo"]["vs_gpo"] is None  # gpo: the reference
    assert rows["global"]["vs_global"] is None and rows["channel"]["p_global"] == 1.0
    # params: the heads' trainable parameters the trainer logged, in thousands or millions
    assert (rows["global"]["params"], rows["channel"]["params"], rows["gpo"]["params"]) == (
        "0",
        "66k",
        "373k",
    )
    assert rows["gpo"]["trainable"] == 1799297


def test_pruned_vs_exhaustive(store: Store) -> None:
    rows = _query(store, "pruned_vs_exhaustive")
    assert {row["variant"] for row in rows} == {"global", "channel", "gpo"}
    for row in rows:
        ex, pr = (
            store.score_ids[(str(row["variant"]), "exhaustive")],
            store.score_ids[(str(row["variant"]), "pruned")],
        )
        assert row["delta_R1"] == pytest.approx(_metric(store, pr, "test/R1") - _metric(store, ex, "test/R1"))
        assert row["speedup"] == pytest.approx(
            _metric(store, ex, "score/seconds") / _metric(store, pr, "score/seconds")
        )
        assert row["parent_run_id"] == store.parent_id


def test_metric_history_matches_mlflow(store: Store) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store.db}")
    rows = _query(store, "metric_history")
    for variant, run_id in store.train_ids.items():
        history = {m.step: m.value for m in client.get_metric_history(run_id, "val/R1")}
        got = {row["epoch"]: row["val_R1"] for row in rows if row["train_run_id"] == run_id}
        assert got == history
        assert {row["variant"] for row in rows if row["train_run_id"] == run_id} == {variant}


def _first_match(mode: str) -> dict[int, int]:
    return {
        q: [10 + CAPTIONS[q][0] == i for i in images].index(True) + 1 for q, images in RANKINGS[mode].items()
    }


def test_hardest_queries(store: Store) -> None:
    rows = _query(store, "hardest_queries")
    expected = _first_match("exhaustive")
    for variant in ("global", "channel"):
        got = [(row["query_id"], row["first_match_rank"]) for row in rows if row["variant"] == variant]
        assert got == sorted(expected.items(), key=lambda item: (-item[1], item[0]))


def test_attribute_errors(store: Store) -> None:
    rows = _query(store, "attribute_errors")
    misses = {q: rank > 1 for q, rank in _first_match("exhaustive").items()}
    vocabulary = dict(VOCABULARY)
    expected: dict[str, list[bool]] = {}
    for q, (_, text) in CAPTIONS.items():
        for word in set(text.split()) & set(vocabulary):
            expected.setdefault(word, []).append(misses[q])
    got = {row["word"]: (row["queries"], row["misses"]) for row in rows if row["variant"] == "global"}
    assert got == {w: (len(m), sum(m)) for w, m in expected.items()}


def test_every_sql_file_has_a_question_and_runs(store: Store) -> None:
    for path in sorted(SQL_DIR.glob("*.sql")):
        assert path.read_text().startswith("-- "), f"{path.name} needs a header comment"
        assert _query(store, path.stem), f"{path.name} returned no rows"


def test_data_quality_flags_the_identity_in_two_splits(store: Store) -> None:
    (row,) = _query(store, "data_quality")
    assert (row["flag"], row["split"], row["rows"], row["persons"]) == (
        "identity_in_splits",
        "test, train",
        1,
        1,
    )
    with duckdb.connect(str(store.warehouse), read_only=True) as con:
        assert con.sql("SELECT person_id, image_id FROM data_quality").fetchall() == [(3, None)]


def test_sync_replaces_atomically_and_needs_a_store(store: Store, tmp_path: Path) -> None:
    target = tmp_path / "w.duckdb"
    sync(store.db, target)
    before = target.stat().st_ino
    sync(store.db, target)
    assert target.stat().st_ino != before  # a new file renamed over the old one
    assert [p.name for p in tmp_path.iterdir()] == ["w.duckdb"]
    with pytest.raises(FileNotFoundError):
        sync(tmp_path / "missing.db", tmp_path / "other.duckdb")


def test_variant_vs_global_and_vs_gpo_are_holm_families(store: Store) -> None:
    rows = _query(store, "variant_vs_global")
    assert [row["variant"] for row in rows] == ["channel", "gpo"]  # the baseline has no difference to itself
    for row in rows:
        assert row["seeds"] == 1 and row["queries"] == len(CAPTIONS) and row["persons"] == len(CAPTIONS)
        assert row["R1_mean"] == pytest.approx(_r1(RANKINGS["exhaustive"]))
        # per-query results equal to global's: the paired difference is 0 with no spread
        assert (row["delta_R1"], row["delta_R1_low"], row["delta_R1_high"]) == (0.0, 0.0, 0.0)
        assert (row["holm_low"], row["holm_high"], row["p"], row["p_holm"]) == (0.0, 0.0, 1.0, 1.0)
        # the interval says what is known: the difference lies between its ends (here, exactly 0);
        # mde, the design's power figure, is 0 for a design without noise
        assert row["verdict"] == "not significant: between +0.0 and +0.0 R1" and row["mde"] == 0.0
        assert row["family_size"] == 2  # channel and gpo against global
    (row,) = _query(store, "variant_vs_gpo")  # attention over learned pooling: channel only
    assert row["variant"] == "channel" and row["family_size"] == 1 and row["p_holm"] == 1.0


def test_a_warehouse_from_an_older_tbpr_gives_a_clear_error(tmp_path: Path) -> None:
    from tasks.core.errors import TbprError
    from tasks.report.queries import leaderboard

    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    con.sql("CREATE TABLE scoring_jobs (parent_run_id VARCHAR, start_time TIMESTAMP)")  # no variant_stats
    con.close()
    with pytest.raises(TbprError, match="tbpr run"):
        leaderboard(old)


def pareto_set(points: dict[str, tuple[float, float]]) -> set[str]:
    """Names of the (R1, cost) points no other point dominates (R1 >= and cost <=, one strictly)."""
    return {
        name
        for name, (r1, cost) in points.items()
        if not any(
            o_r1 >= r1 and o_cost <= cost and (o_r1 > r1 or o_cost < cost)
            for other, (o_r1, o_cost) in points.items()
            if other != name
        )
    }


def test_cost_frontier_marks_the_pareto_jobs(store: Store) -> None:
    rows = {row["job"]: row for row in _query(store, "cost_frontier")}
    label = {"exhaustive": "exhaustive", "pruned": "k2"}
    assert set(rows) == {f"{v} {label[m]}" for v, m in store.score_ids}
    expected: dict[str, tuple[float, float]] = {}
    for (variant, mode), out in store.out_dirs.items():  # R1 from the per-query files, cost from MLflow
        first = pq.read_table(out / "per_query.parquet").column("first_match_rank").to_pylist()
        r1 = 100 * sum(rank == 1 for rank in first) / len(first)
        seconds = 1000 * _metric(store, store.score_ids[(variant, mode)], "score/seconds") / len(first)
        cost = _metric(store, store.score_ids[(variant, mode)], "score/flops_per_query") / 1e9
        job = f"{variant} {label[mode]}"
        assert rows[job]["R1"] == pytest.approx(r1) and rows[job]["gflops_per_query"] == pytest.approx(cost)
        assert rows[job]["s_per_1k_queries"] == pytest.approx(seconds)
        low, high = map(float, rows[job]["R1_95"].split(".."))
        assert low <= r1 <= high
        expected[job] = (r1, cost)
    assert {job for job, row in rows.items() if row["pareto"]} == pareto_set(expected)
    assert rows["global k2"]["pareto"] and not rows["global exhaustive"]["pareto"]


def test_open_set_reports_the_latest_runs_rates_per_variant(store: Store) -> None:
    rows = {row["variant"]: row for row in _query(store, "open_set")}
    assert set(rows) == set(OPEN_SET)  # the older run's row is not mixed in
    for variant, (false_alarm, miss, hit) in OPEN_SET.items():
        row = rows[variant]
        assert (row["false_alarm"], row["missed"], row["hit"]) == (100 * false_alarm, 100 * miss, 100 * hit)
        assert row["no_match_ok"] == pytest.approx(100 * (1 - false_alarm)) and row["target"] == 5.0


def _main_job_like(columns: list[str]) -> list[tuple[object, ...]]:
    """12 rows with the leaderboard's columns and the main job's kinds of values, long names included."""
    values = {
        "params": "9.8M",
        "R1": 18.8888,
        "R1_95": "15.1..22.6",
        "dR1": -10.25,
        "dR1_holm95": "-15.3..-5.2",
        "vs_global": "worse",
        "dR1_gpo": 4.25,
        "dR1_gpo_holm95": "-12.3..+20.8",
        "vs_gpo": "n.s.",
        "p_global": 0.0004,
        "p_gpo": 0.61,
        "mde": 12.3,
        "seeds": 3,
        "mAP": 24.567,
        "trainable": 10181179,
        "epochs": "6..8",
        "stop": "epochs,plateau",
        "grounding": 41.2,
        "seconds": 12.3456,
    }
    names = ["control_top_half", "cross_fusion", "global", "gpo", "control_aa", "nonlocal"] * 2
    return [tuple(name if c == "variant" else values.get(c) for c in columns) for name in names]


def test_the_leaderboard_reads_at_80_columns(store: Store) -> None:
    from tasks.report.queries import COMPACT, leaderboard, render_leaderboard

    board = leaderboard(store.warehouse)
    wide_board = replace(board, rows=_main_job_like(board.columns))
    text = render_leaderboard(wide_board, 80)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80, text
    header = lines[1].split()
    assert header == list(COMPACT)  # the compact columns, in order
    assert (
        sum(line.startswith(("control_top_half ", "cross_fusion ")) for line in lines) == 4
    )  # one line each
    assert "--wide" in text and "seconds" in text  # it says what it left out
    row = next(line for line in lines if line.startswith("control_top_half"))
    assert row.split() == [
        "control_top_half",
        "9.8M",
        "18.9",
        "15.1..22.6",
        "-10.2",
        "-15.3..-5.2",
        "worse",
        "n.s.",
    ]
    everything = render_leaderboard(wide_board, 80, wide=True)
    assert everything.splitlines()[1].split() == board.columns
    assert render_leaderboard(wide_board, 400).splitlines()[1].split() == board.columns  # a wide terminal


def test_tbpr_sql_prints_the_leaderboard_and_verdicts_one_line_per_row(
    store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from tbpr.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    for query, extra, rows in (
        ("leaderboard", [], 3),
        ("leaderboard", ["--wide"], 3),
        ("variant_vs_global", [], 2),
        ("variant_vs_gpo", [], 1),
    ):
        argv = ["tbpr", "sql", query, "--warehouse", str(store.warehouse), *extra]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as stop:
            main()
        out = capsys.readouterr().out
        assert stop.value.code in (0, None), out
        lines = out.splitlines()
        assert sum(line.split()[:1] in (["global"], ["channel"], ["gpo"]) for line in lines) == rows, out
        if extra:
            assert "grounding" in lines[1]  # every column
        else:
            assert max(map(len, lines)) <= 80, out


def _rows(store: Store, sql: str) -> list[dict[str, object]]:
    con = duckdb.connect(str(store.warehouse), read_only=True)
    try:
        rel = con.sql(sql)
        return [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]
    finally:
        con.close()


def test_the_shared_views_pick_the_latest_runs_exhaustive_job(store: Store) -> None:
    """The views `sql/` reads (`tasks.report.warehouse.VIEWS_SQL`) against a selection made here from
    the whole tables: the fixture's one pipeline run, and its exhaustive job (its reference job)."""
    assert _rows(store, "SELECT * FROM latest_run") == [{"parent_run_id": store.parent_id}]
    stats = _rows(store, "SELECT * FROM variant_stats")
    assert {row["mode"] for row in stats} == {"exhaustive", "pruned"}  # the view has to choose
    want = [r for r in stats if r["parent_run_id"] == store.parent_id and r["mode"] == "exhaustive"]
    by_variant = {row["variant"]: row for row in _rows(store, "SELECT * FROM reference_stats")}
    assert by_variant == {row["variant"]: row for row in want} and len(by_variant) == 3
    tests = _rows(store, "SELECT * FROM variant_tests")
    want_tests = [
        r
        for r in tests
        if r["metric"] == "R1" and r["mode"] == "exhaustive" and r["parent_run_id"] == store.parent_id
    ]
    key = lambda row: (row["reference"], row["variant"])  # noqa: E731
    got = _rows(store, "SELECT * FROM reference_tests")
    assert sorted(got, key=key) == sorted(want_tests, key=key) and got
    latest = _rows(store, "SELECT reference, variant, R1_mean, delta_R1, verdict FROM latest_tests")
    assert sorted(
        (r["reference"], r["variant"], r["R1_mean"], r["delta_R1"], r["verdict"]) for r in latest
    ) == sorted(
        (r["reference"], r["variant"], by_variant[str(r["variant"])]["R1_mean"], r["delta"], r["verdict"])
        for r in want_tests
    )
