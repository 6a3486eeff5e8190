"""What the warehouse reads: MLflow's SQLite store as Arrow tables, the `metrics.json` of each scoring
output, and the SQL that turns them into `runs` and `scoring_jobs` (formatted from the MLflow names
in `tasks.tracking.names`, the contract with the writers)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from tasks.core.errors import TbprError
from tasks.score.layout import METRICS
from tasks.tracking import names

# (name, SQLite query over MLflow's schema, Arrow schema). Deleted runs are left out.
MLFLOW_TABLES: tuple[tuple[str, str, pa.Schema], ...] = (
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

RUNS_SQL = f"""
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
       max(t.value) FILTER (WHERE t.key = '{names.TAG_STOP_REASON}') AS stop_reason,
       try_cast(max(t.value) FILTER (WHERE t.key = '{names.TAG_EPOCHS_RUN}') AS BIGINT) AS epochs,
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
        ("candidates", pa.string()),
        ("num_queries", pa.int64()),
        ("R1", pa.float64()),
        ("R5", pa.float64()),
        ("R10", pa.float64()),
        ("mAP", pa.float64()),
        ("mINP", pa.float64()),
        ("seconds", pa.float64()),
        ("pairs_scored", pa.float64()),
        ("flops_per_query", pa.float64()),
        ("flops_per_query_cuhk_pedes", pa.float64()),
    ]
)

# One row per scoring child run: its settings and its test metrics, from MLflow (params, latest
# metrics) and, where MLflow lacks them, from the run's `metrics.json` (joined by scoring_run_id).
SCORING_JOBS_SQL = f"""
CREATE TABLE scoring_jobs AS
WITH p AS (
  SELECT run_id,
         max(value) FILTER (WHERE key = '{names.PARAM_MODE}') AS mode,
         try_cast(max(value) FILTER (WHERE key = '{names.PARAM_TOP_K}') AS BIGINT) AS top_k,
         max(value) FILTER (WHERE key = '{names.PARAM_INDEX}') AS "index",
         max(value) FILTER (WHERE key = '{names.PARAM_OUT_DIR}') AS out_dir,
         max(value) FILTER (WHERE key = '{names.PARAM_CANDIDATES}') AS candidates,
         max(value) FILTER (WHERE key IN ('{names.PARAM_MODEL_RUN}', '{names.TAG_TRAIN_RUN}')) AS model_run_id
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
         arg_max(value, step) FILTER (WHERE key = '{names.SCORE_PAIRS}') AS pairs_scored,
         arg_max(value, step) FILTER (WHERE key = '{names.SCORE_FLOPS}') AS flops_per_query,
         arg_max(value, step) FILTER (WHERE key = '{names.SCORE_FLOPS_CUHK}') AS flops_per_query_cuhk_pedes
  FROM metrics GROUP BY run_id
)
SELECT r.run_id, r.parent_run_id, coalesce(r.variant, f.variant) AS variant, r.dataset, r.start_time,
       r.status, coalesce(p.mode, f.mode) AS mode, coalesce(p.top_k, f.top_k) AS top_k,
       coalesce(p."index", f."index") AS "index", coalesce(p.candidates, f.candidates) AS candidates,
       coalesce(p.out_dir, f.out_dir) AS out_dir, f.num_queries,
       coalesce(p.model_run_id, t.train_run_id, f.train_run_id) AS model_run_id,
       coalesce(m.R1, f.R1) AS R1, coalesce(m.R5, f.R5) AS R5, coalesce(m.R10, f.R10) AS R10,
       coalesce(m.mAP, f.mAP) AS mAP, coalesce(m.mINP, f.mINP) AS mINP,
       coalesce(m.seconds, f.seconds) AS seconds, coalesce(m.pairs_scored, f.pairs_scored) AS pairs_scored,
       coalesce(m.flops_per_query, f.flops_per_query) AS flops_per_query,
       coalesce(m.flops_per_query_cuhk_pedes, f.flops_per_query_cuhk_pedes) AS flops_per_query_cuhk_pedes
FROM runs r LEFT JOIN p USING (run_id) LEFT JOIN t USING (run_id) LEFT JOIN m USING (run_id)
LEFT JOIN score_outputs f ON f.scoring_run_id = r.run_id
WHERE r.stage = '{names.STAGE_SCORE}'
"""


def read_mlflow_tables(tracking_db: Path) -> dict[str, pa.Table]:
    """MLflow's SQLite store as Arrow tables (read-only connection; the store may be in use)."""
    if not tracking_db.is_file():
        raise FileNotFoundError(f"no MLflow database at {tracking_db}")
    # a file: URI by pathlib's own quoting, so `?`, `#` or `%` in a folder name stay part of the path
    con = sqlite3.connect(f"{tracking_db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = {}
        for name, query, schema in MLFLOW_TABLES:
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
    """The `metrics.json` beside each rankings file (files without one are skipped); one that is not
    the object `tbpr score` writes, or whose fields have the wrong types, is a TbprError naming it."""
    rows = []
    for ranking in rankings_files:
        path = Path(ranking).parent / METRICS
        if not path.is_file():
            continue
        document = json.loads(path.read_text(encoding="utf-8"))
        redo = "score again into that folder (or remove it)"
        if not isinstance(document, dict):
            raise TbprError(f"{path} holds a JSON {type(document).__name__}, not the metrics object; {redo}")
        document["out_dir"] = str(path.parent.resolve())
        row = {field.name: document.get(field.name) for field in SCORE_OUTPUTS_SCHEMA}
        try:
            pa.Table.from_pylist([row], schema=SCORE_OUTPUTS_SCHEMA)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise TbprError(f"{path} has a field of the wrong type ({exc}); {redo}") from exc
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=SCORE_OUTPUTS_SCHEMA)
