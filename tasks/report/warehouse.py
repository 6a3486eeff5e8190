"""MLflow tracking store + scoring outputs -> `warehouse.duckdb`, rebuilt atomically.

MLflow's SQLite database is read with Python's `sqlite3` into Arrow (DuckDB's sqlite extension would
download from the internet), registered in DuckDB and materialised as tables. Scoring outputs
(`rankings.parquet`, `metrics.json`) and the prepared data (`captions.parquet`, `images.parquet`)
become views over the files, so the warehouse stays small.

Tables: `experiments`, `runs`, `tags`, `params`, `metrics`, `scoring_jobs`, `score_outputs`
(the `metrics.json` files), `variant_stats` (means over seeds, bootstrap intervals, paired
differences to `global`), `vocabulary`, `attributes`.
Views: `rankings`, `per_query`, `captions`, `images` (empty tables when there are no such files).
"""

from __future__ import annotations

import glob as globlib
import json
import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from tasks.core.files import atomic_path
from tasks.data.layout import CAPTIONS, IMAGES
from tasks.data.synth.layout import ATTRIBUTES
from tasks.report.stats import ScoredModel, variant_stats_table
from tasks.score.layout import METRICS, PER_QUERY
from tasks.tracking import names

log = logging.getLogger(__name__)

# Attribute words an analyst looks for in captions (table `vocabulary`): colours and garments.
COLOURS = (
    "black",
    "white",
    "grey",
    "gray",
    "red",
    "blue",
    "green",
    "yellow",
    "orange",
    "purple",
    "pink",
    "brown",
    "beige",
    "navy",
    "dark",
    "light",
)
GARMENTS = (
    "shirt",
    "t-shirt",
    "jacket",
    "coat",
    "sweater",
    "hoodie",
    "dress",
    "skirt",
    "trousers",
    "pants",
    "jeans",
    "shorts",
    "shoes",
    "sneakers",
    "boots",
    "hat",
    "cap",
    "backpack",
    "bag",
    "umbrella",
    "hair",
)
VOCABULARY: tuple[tuple[str, str], ...] = tuple((w, "colour") for w in COLOURS) + tuple(
    (w, "garment") for w in GARMENTS
)

# (name, SQLite query over MLflow's schema, Arrow schema). Deleted runs are left out.
_MLFLOW_TABLES: tuple[tuple[str, str, pa.Schema], ...] = (
    (
        "experiments",
        "SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active'",
        pa.schema([("experiment_id", pa.int64()), ("name", pa.string())]),
    ),
    (
        "runs_raw",
        "SELECT r.run_uuid, r.experiment_id, e.name, r.name, r.status, r.start_time, r.end_time, "
        "r.artifact_uri FROM runs r JOIN experiments e USING (experiment_id) "
        "WHERE r.lifecycle_stage = 'active'",
        pa.schema(
            [
                ("run_id", pa.string()),
                ("experiment_id", pa.int64()),
                ("experiment", pa.string()),
                ("run_name", pa.string()),
                ("status", pa.string()),
                ("start_ms", pa.int64()),
                ("end_ms", pa.int64()),
                ("artifact_uri", pa.string()),
            ]
        ),
    ),
    (
        "tags",
        "SELECT t.run_uuid, t.key, t.value FROM tags t JOIN runs r USING (run_uuid) "
        "WHERE r.lifecycle_stage = 'active'",
        pa.schema([("run_id", pa.string()), ("key", pa.string()), ("value", pa.string())]),
    ),
    (
        "params",
        "SELECT p.run_uuid, p.key, p.value FROM params p JOIN runs r USING (run_uuid) "
        "WHERE r.lifecycle_stage = 'active'",
        pa.schema([("run_id", pa.string()), ("key", pa.string()), ("value", pa.string())]),
    ),
    (
        "metrics",
        "SELECT m.run_uuid, m.key, m.value, m.step, m.timestamp FROM metrics m "
        "JOIN runs r USING (run_uuid) WHERE r.lifecycle_stage = 'active' AND NOT m.is_nan",
        pa.schema(
            [
                ("run_id", pa.string()),
                ("key", pa.string()),
                ("value", pa.float64()),
                ("step", pa.int64()),
                ("timestamp_ms", pa.int64()),
            ]
        ),
    ),
)

_RUNS_SQL = f"""
CREATE TABLE runs AS
SELECT r.run_id, r.experiment_id, r.experiment, r.run_name, r.status,
       make_timestamp(r.start_ms * 1000) AS start_time,
       make_timestamp(r.end_ms * 1000) AS end_time,
       (r.end_ms - r.start_ms) / 1000.0 AS duration_s,
       max(t.value) FILTER (WHERE t.key = '{names.TAG_PARENT_RUN}') AS parent_run_id,
       max(t.value) FILTER (WHERE t.key = '{names.TAG_VARIANT}') AS variant,
       max(t.value) FILTER (WHERE t.key = '{names.TAG_DATASET}') AS dataset,
       max(t.value) FILTER (WHERE t.key = '{names.TAG_STAGE}') AS stage,
       max(t.value) FILTER (WHERE t.key = '{names.TAG_GIT_SHA}') AS git_sha,
       r.artifact_uri
FROM runs_raw r LEFT JOIN tags t USING (run_id)
GROUP BY ALL
"""

# `metrics.json` files beside the rankings (written by `tasks.score.run`), one row per scoring output.
SCORE_OUTPUTS_SCHEMA = pa.schema(
    [
        ("out_dir", pa.string()),
        ("scoring_run_id", pa.string()),
        ("train_run_id", pa.string()),
        ("variant", pa.string()),
        ("mode", pa.string()),
        ("top_k", pa.int64()),
        ("index", pa.string()),
        ("R1", pa.float64()),
        ("R5", pa.float64()),
        ("R10", pa.float64()),
        ("mAP", pa.float64()),
        ("mINP", pa.float64()),
        ("seconds", pa.float64()),
        ("pairs_scored", pa.float64()),
    ]
)

# One row per scoring child run: its settings and its test metrics, from MLflow (params, latest
# metrics) and, where MLflow lacks them, from the run's `metrics.json` (joined by scoring_run_id).
_SCORING_JOBS_SQL = f"""
CREATE TABLE scoring_jobs AS
WITH p AS (
  SELECT run_id,
         max(value) FILTER (WHERE key = '{names.PARAM_MODE}') AS mode,
         try_cast(max(value) FILTER (WHERE key = '{names.PARAM_TOP_K}') AS BIGINT) AS top_k,
         max(value) FILTER (WHERE key = '{names.PARAM_INDEX}') AS "index",
         max(value) FILTER (WHERE key = 'out_dir') AS out_dir,
         max(value) FILTER (WHERE key IN ('model_run_id', '{names.TAG_TRAIN_RUN}')) AS model_run_id
  FROM (SELECT run_id, key, nullif(value, 'None') AS value FROM params)
  GROUP BY run_id
), t AS (
  SELECT run_id, max(value) AS train_run_id FROM tags WHERE key = '{names.TAG_TRAIN_RUN}' GROUP BY run_id
), m AS (
  SELECT run_id,
         arg_max(value, step) FILTER (WHERE key = '{names.metric_key("test", "R1")}') AS R1,
         arg_max(value, step) FILTER (WHERE key = '{names.metric_key("test", "R5")}') AS R5,
         arg_max(value, step) FILTER (WHERE key = '{names.metric_key("test", "R10")}') AS R10,
         arg_max(value, step) FILTER (WHERE key = '{names.metric_key("test", "mAP")}') AS mAP,
         arg_max(value, step) FILTER (WHERE key = '{names.metric_key("test", "mINP")}') AS mINP,
         arg_max(value, step) FILTER (WHERE key = '{names.SCORE_SECONDS}') AS seconds,
         arg_max(value, step) FILTER (WHERE key = '{names.SCORE_PAIRS}') AS pairs_scored
  FROM metrics GROUP BY run_id
)
SELECT r.run_id, r.parent_run_id, coalesce(r.variant, f.variant) AS variant, r.dataset, r.start_time,
       r.status, coalesce(p.mode, f.mode) AS mode, coalesce(p.top_k, f.top_k) AS top_k,
       coalesce(p."index", f."index") AS "index", coalesce(p.out_dir, f.out_dir) AS out_dir,
       coalesce(p.model_run_id, t.train_run_id, f.train_run_id) AS model_run_id,
       coalesce(m.R1, f.R1) AS R1, coalesce(m.R5, f.R5) AS R5, coalesce(m.R10, f.R10) AS R10,
       coalesce(m.mAP, f.mAP) AS mAP, coalesce(m.mINP, f.mINP) AS mINP,
       coalesce(m.seconds, f.seconds) AS seconds, coalesce(m.pairs_scored, f.pairs_scored) AS pairs_scored
FROM runs r LEFT JOIN p USING (run_id) LEFT JOIN t USING (run_id) LEFT JOIN m USING (run_id)
LEFT JOIN score_outputs f ON f.scoring_run_id = r.run_id
WHERE r.stage = '{names.STAGE_SCORE}'
"""


@dataclass(frozen=True)
class SyncSummary:
    """What `sync` wrote: the warehouse path and row/file counts."""

    warehouse: Path
    runs: int
    metrics: int
    scoring_jobs: int
    rankings_files: int


def read_mlflow_tables(tracking_db: Path) -> dict[str, pa.Table]:
    """MLflow's SQLite store as Arrow tables (read-only connection; the store may be in use)."""
    if not tracking_db.is_file():
        raise FileNotFoundError(f"no MLflow database at {tracking_db}")
    con = sqlite3.connect(f"file:{tracking_db}?mode=ro", uri=True)
    try:
        tables = {}
        for name, query, schema in _MLFLOW_TABLES:
            rows = con.execute(query).fetchall()
            columns: list[Sequence[object]] = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
            tables[name] = pa.Table.from_arrays(
                [pa.array(list(col), type=field.type) for col, field in zip(columns, schema, strict=True)],
                schema=schema,
            )
        return tables
    finally:
        con.close()


def read_score_outputs(rankings_files: Sequence[str]) -> pa.Table:
    """The `metrics.json` beside each rankings file (files without one are skipped)."""
    rows = []
    for ranking in rankings_files:
        path = Path(ranking).parent / METRICS
        if not path.is_file():
            continue
        document = json.loads(path.read_text(encoding="utf-8"))
        document["out_dir"] = str(path.parent.resolve())
        rows.append({field.name: document.get(field.name) for field in SCORE_OUTPUTS_SCHEMA})
    return pa.Table.from_pylist(rows, schema=SCORE_OUTPUTS_SCHEMA)


def load_attributes(source: Path) -> pa.Table | None:
    """`attributes.json` of a synthetic source (one record per image) as long rows
    (file_path, person_id, attribute, value), or None when the source has none."""
    path = source / ATTRIBUTES
    if not path.is_file():
        return None
    rows = [
        {"file_path": r["file_path"], "person_id": r["id"], "attribute": key, "value": str(value)}
        for r in json.loads(path.read_text(encoding="utf-8"))
        for key, value in r.items()
        if key not in ("file_path", "id") and value not in ("", None)
    ]
    schema = pa.schema(
        [
            ("file_path", pa.string()),
            ("person_id", pa.int64()),
            ("attribute", pa.string()),
            ("value", pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _rankings_view(con: duckdb.DuckDBPyConnection, files: Sequence[str]) -> None:
    """View `rankings` over the files (with each file's folder as `out_dir`), or an empty table."""
    if files:
        listing = "[" + ", ".join(_quote(os.path.abspath(f)) for f in files) + "]"
        con.sql(
            "CREATE VIEW rankings AS SELECT * EXCLUDE (filename), parse_dirpath(filename) AS out_dir "
            f"FROM read_parquet({listing}, filename = true, union_by_name = true)"
        )
    else:
        con.sql(
            "CREATE TABLE rankings (query_id BIGINT, rank INTEGER, image_id BIGINT, score FLOAT, out_dir VARCHAR)"
        )


def _per_query_view(con: duckdb.DuckDBPyConnection, rankings_files: Sequence[str]) -> None:
    """View `per_query` over the `per_query.parquet` beside each rankings file (with `out_dir`)."""
    files = [
        str(Path(f).parent / PER_QUERY) for f in rankings_files if (Path(f).parent / PER_QUERY).is_file()
    ]
    if files:
        listing = "[" + ", ".join(_quote(os.path.abspath(f)) for f in files) + "]"
        con.sql(
            "CREATE VIEW per_query AS SELECT * EXCLUDE (filename), parse_dirpath(filename) AS out_dir "
            f"FROM read_parquet({listing}, filename = true, union_by_name = true)"
        )
    else:
        con.sql(
            "CREATE TABLE per_query (query_id BIGINT, first_match_rank BIGINT, ap DOUBLE, inp DOUBLE, "
            "out_dir VARCHAR)"
        )


def _variant_stats(con: duckdb.DuckDBPyConnection) -> None:
    """Table `variant_stats`: per comparison (pipeline run x job settings) and variant, the mean over
    seeds with bootstrap intervals and the paired difference to `global` (`tasks.report.stats`).
    A variant's seeds are its training runs (param `train.seed`); each model's latest job counts."""
    jobs = con.sql(
        """
        SELECT parent_run_id, mode, top_k, "index", variant, coalesce(model_run_id, run_id), out_dir
        FROM scoring_jobs WHERE out_dir IS NOT NULL AND variant IS NOT NULL
        ORDER BY start_time
        """
    ).fetchall()
    models = [
        ScoredModel((parent, mode, top_k, index), variant, model, Path(out))
        for parent, mode, top_k, index, variant, model, out in jobs
    ]
    con.register("arrow_variant_stats", variant_stats_table(models))
    con.sql("CREATE TABLE variant_stats AS SELECT * FROM arrow_variant_stats")
    con.unregister("arrow_variant_stats")


def _data_views(con: duckdb.DuckDBPyConnection, data_dirs: Sequence[Path]) -> None:
    captions = [str(d / CAPTIONS) for d in data_dirs if (d / CAPTIONS).is_file()]
    images = [str(d / IMAGES) for d in data_dirs if (d / IMAGES).is_file()]
    if captions:
        listing = "[" + ", ".join(_quote(os.path.abspath(f)) for f in captions) + "]"
        con.sql(f"CREATE VIEW captions AS SELECT * FROM read_parquet({listing}, union_by_name = true)")
    else:
        con.sql(
            "CREATE TABLE captions (caption_id BIGINT, image_id BIGINT, person_id BIGINT, "
            "split VARCHAR, text VARCHAR)"
        )
    if images:
        listing = "[" + ", ".join(_quote(os.path.abspath(f)) for f in images) + "]"
        con.sql(
            "CREATE VIEW images AS SELECT * EXCLUDE (image) "
            f"FROM read_parquet({listing}, union_by_name = true)"
        )
    else:
        con.sql(
            "CREATE TABLE images (image_id BIGINT, person_id BIGINT, split VARCHAR, "
            "file_path VARCHAR, height INTEGER, width INTEGER)"
        )


def _build(
    path: Path,
    tables: dict[str, pa.Table],
    rankings_files: Sequence[str],
    data_dirs: Sequence[Path],
    attributes: pa.Table | None,
) -> tuple[int, int, int, int]:
    con = duckdb.connect(str(path))
    try:
        for name, table in tables.items():
            con.register(f"arrow_{name}", table)
            con.sql(f"CREATE TABLE {name} AS SELECT * FROM arrow_{name}")
            con.unregister(f"arrow_{name}")
        con.sql(_RUNS_SQL)
        con.sql("DROP TABLE runs_raw")
        con.register("arrow_score_outputs", read_score_outputs(rankings_files))
        con.sql("CREATE TABLE score_outputs AS SELECT * FROM arrow_score_outputs")
        con.sql(_SCORING_JOBS_SQL)
        vocabulary = pa.table({"word": [w for w, _ in VOCABULARY], "kind": [k for _, k in VOCABULARY]})
        con.register("arrow_vocabulary", vocabulary)
        con.sql("CREATE TABLE vocabulary AS SELECT * FROM arrow_vocabulary")
        if attributes is not None:
            con.register("arrow_attributes", attributes)
            con.sql("CREATE TABLE attributes AS SELECT * FROM arrow_attributes")
        else:
            con.sql(
                "CREATE TABLE attributes (file_path VARCHAR, person_id BIGINT, attribute VARCHAR, value VARCHAR)"
            )
        _rankings_view(con, rankings_files)
        _per_query_view(con, rankings_files)
        _variant_stats(con)
        _data_views(con, data_dirs)
        counts = (
            con.sql("SELECT count(*) FROM runs").fetchall()[0][0],
            con.sql("SELECT count(*) FROM metrics").fetchall()[0][0],
            con.sql("SELECT count(*) FROM scoring_jobs").fetchall()[0][0],
        )
        return counts[0], counts[1], counts[2], len(rankings_files)
    finally:
        con.close()


def sync(
    tracking_db: Path,
    warehouse: Path,
    rankings_glob: str | None = None,
    data_dirs: Sequence[Path] = (),
    attributes: pa.Table | None = None,
) -> SyncSummary:
    """Rebuild `warehouse` from the MLflow store, the rankings files and the prepared data.

    Built in a temporary file beside `warehouse` and renamed over it, so readers never see a half
    warehouse. `rankings_glob` is a glob of `rankings.parquet` files (`**` allowed); each file's folder
    is its `out_dir`, which joins `scoring_jobs.out_dir`. `attributes` (file_path, person_id, attribute,
    value) comes from `load_attributes` when the data is synthetic.
    """
    tables = read_mlflow_tables(tracking_db)
    rankings_files = sorted(globlib.glob(rankings_glob, recursive=True)) if rankings_glob else []
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(warehouse) as tmp:  # a new name: DuckDB creates the file itself
        try:
            runs, metrics, jobs, n_rankings = _build(tmp, tables, rankings_files, data_dirs, attributes)
        finally:
            Path(str(tmp) + ".wal").unlink(missing_ok=True)
    log.info("warehouse %s: %d runs, %d scoring jobs, %d rankings files", warehouse, runs, jobs, n_rankings)
    return SyncSummary(warehouse, runs, metrics, jobs, n_rankings)
