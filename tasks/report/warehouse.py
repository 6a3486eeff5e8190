"""MLflow tracking store + scoring outputs -> `warehouse.duckdb`, rebuilt atomically.

MLflow's SQLite database is read with Python's `sqlite3` into Arrow (DuckDB's sqlite extension would
download from the internet), registered in DuckDB and materialised as tables. Scoring outputs
(`rankings.parquet`, `per_query.parquet`, `metrics.json`) and the prepared data (`captions.parquet`,
`images.parquet` without the image bytes) are copied in too, so analysts' queries need no file access
(`tasks.report.queries.read_only` switches it off).

Tables: `experiments`, `runs`, `tags`, `params`, `metrics`, `scoring_jobs`, `score_outputs`
(the `metrics.json` files), `variant_stats` (means over seeds, intervals over persons and seeds,
paired differences to `global`), `variant_tests` (each family's Holm-corrected comparisons with
`global` and `gpo`, `tasks.report.verdicts`), `vocabulary`, `attributes`, `rankings`, `per_query`, `captions`, `images`
(the last four empty when there are no such files), `data_quality` (the flags of `tasks.data.quality` on
`images` and `captions`), `open_set` (each model's open-set threshold and test rates, `tasks.report.open_set`).
Views (`VIEWS_SQL`), the rules `sql/` shares: `latest_run`, `reference_stats`, `reference_tests`,
`latest_tests`.
"""

from __future__ import annotations

import glob as globlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from tasks.core.files import atomic_path
from tasks.data.layout import CAPTIONS, IMAGES
from tasks.data.quality import flags_table, quality_flags
from tasks.data.synth.layout import ATTRIBUTES
from tasks.report.mlflow_tables import RUNS_SQL, SCORING_JOBS_SQL, read_mlflow_tables, read_score_outputs
from tasks.report.open_set import OPEN_SET_EMPTY
from tasks.report.stats import ScoredModel, read_comparisons, variant_stats_table
from tasks.report.verdicts import variant_tests_table
from tasks.report.vocabulary import VOCABULARY
from tasks.score.layout import METRICS, PER_QUERY
from tasks.tracking import names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncSummary:
    """What `sync` wrote: the warehouse path and row/file counts."""

    warehouse: Path
    runs: int
    metrics: int
    scoring_jobs: int
    rankings_files: int


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


def _out_view(con: duckdb.DuckDBPyConnection, name: str, files: Sequence[str], empty: str) -> None:
    """Table `name` of the Parquet files of scoring outputs, each row with its file's folder as `out_dir`
    (which joins `scoring_jobs.out_dir`); without files, an empty table with columns `empty`.
    Copied in, not a view over the files: analysts' queries then run with file access switched off."""
    if files:
        listing = "[" + ", ".join(_quote(os.path.abspath(f)) for f in files) + "]"
        con.sql(
            f"CREATE TABLE {name} AS SELECT * EXCLUDE (filename), parse_dirpath(filename) AS out_dir "
            f"FROM read_parquet({listing}, filename = true, union_by_name = true)"
        )
    else:
        con.sql(f"CREATE TABLE {name} ({empty}, out_dir VARCHAR)")


def _rankings_view(con: duckdb.DuckDBPyConnection, files: Sequence[str]) -> None:
    _out_view(con, "rankings", files, "query_id BIGINT, rank INTEGER, image_id BIGINT, score FLOAT")


def _per_query_view(con: duckdb.DuckDBPyConnection, rankings_files: Sequence[str]) -> None:
    """The `per_query.parquet` beside each rankings file."""
    beside = (Path(f).parent / PER_QUERY for f in rankings_files)
    files = [str(path) for path in beside if path.is_file()]
    _out_view(con, "per_query", files, "query_id BIGINT, first_match_rank BIGINT, ap DOUBLE, inp DOUBLE")


# The rules `sql/` shares, as views created with the tables (each written here once):
# `latest_run`: the latest pipeline run (one row; parent_run_id NULL: the latest standalone jobs);
# `reference_stats`: the `variant_stats` rows of its reference job (exhaustive when it has one, else
#   the pruned job with the largest k), one per variant: what the leaderboard ranks;
# `reference_tests`: the `variant_tests` rows (R1) of that job, both families;
# `latest_tests`: those tests with each variant's mean R1: what `sql/variant_vs_global.sql` and
#   `sql/variant_vs_gpo.sql` print, one family each.
VIEWS_SQL = (
    """
CREATE VIEW latest_run AS
SELECT parent_run_id FROM scoring_jobs ORDER BY parent_run_id IS NULL, start_time DESC LIMIT 1
""",
    """
CREATE VIEW reference_stats AS
SELECT s.* FROM variant_stats s JOIN latest_run l ON s.parent_run_id IS NOT DISTINCT FROM l.parent_run_id
QUALIFY dense_rank() OVER (ORDER BY s.mode = 'exhaustive' DESC, s.candidates NULLS FIRST, s.top_k DESC NULLS FIRST, s."index", s.dataset) = 1
""",
    """
CREATE VIEW reference_tests AS
SELECT t.* FROM variant_tests t JOIN reference_stats r
  ON t.variant = r.variant AND t.dataset IS NOT DISTINCT FROM r.dataset
 AND t.parent_run_id IS NOT DISTINCT FROM r.parent_run_id AND t.mode = r.mode
 AND t.top_k IS NOT DISTINCT FROM r.top_k AND t."index" IS NOT DISTINCT FROM r."index"
 AND t.candidates IS NOT DISTINCT FROM r.candidates
WHERE t.metric = 'R1'
""",
    """
CREATE VIEW latest_tests AS
SELECT t.reference, t.variant, s.seeds, s.queries, s.persons, s.R1_mean, t.delta AS delta_R1, round(t.se, 2) AS se,
       t.low AS delta_R1_low, t.high AS delta_R1_high, t.p, t.p_holm, t.holm_low, t.holm_high,
       t.family_size, round(t.mde, 2) AS mde, t.verdict
FROM reference_tests t JOIN reference_stats s USING (variant)
""",
)


def _variant_stats(con: duckdb.DuckDBPyConnection) -> None:
    """Tables `variant_stats` and `variant_tests`: per comparison (pipeline run x job settings) and
    variant, the mean over seeds with its interval and the paired difference to `global`
    (`tasks.report.stats`), and each family's Holm-corrected tests (`tasks.report.verdicts`).
    A variant's seeds are its training runs (`model_run_id`; a job without one counts on its own),
    paired with the reference's by their `train.seed` param when both ran the same seeds;
    each model's latest job counts. Datasets are never mixed: query ids restart in each. Queries are
    clustered by person through `captions` (caption ids that name one person only)."""
    jobs = con.execute(
        """
        SELECT j.dataset, j.parent_run_id, j.mode, j.top_k, j."index", j.candidates, j.variant,
               coalesce(j.model_run_id, j.run_id), j.out_dir, try_cast(s.value AS BIGINT)
        FROM scoring_jobs j LEFT JOIN params s ON s.run_id = j.model_run_id AND s.key = ?
        WHERE j.out_dir IS NOT NULL AND j.variant IS NOT NULL
        ORDER BY j.start_time
        """,
        [names.PARAM_TRAIN_SEED],
    ).fetchall()
    models = [
        ScoredModel((dataset, parent, mode, top_k, index, candidates), variant, model, Path(out), seed)
        for dataset, parent, mode, top_k, index, candidates, variant, model, out, seed in jobs
    ]
    persons = dict(
        con.sql(
            "SELECT caption_id, any_value(person_id) FROM captions GROUP BY caption_id "
            "HAVING count(DISTINCT person_id) = 1"
        ).fetchall()
    )
    comparisons = read_comparisons(models, persons or None)
    for name, table in (
        ("variant_stats", variant_stats_table(comparisons)),
        ("variant_tests", variant_tests_table(comparisons)),
    ):
        con.register(f"arrow_{name}", table)
        con.sql(f"CREATE TABLE {name} AS SELECT * FROM arrow_{name}")
        con.unregister(f"arrow_{name}")
    for view in VIEWS_SQL:
        con.sql(view)


def _quality_table(con: duckdb.DuckDBPyConnection) -> None:
    """`data_quality`: every flag of the data-quality report (`tasks.data.quality`) over `images` and
    `captions`, recomputed here so that DATA written by older versions or other tools is covered too."""
    images = con.sql("SELECT image_id, person_id, split FROM images").to_arrow_table()
    captions = con.sql("SELECT caption_id, image_id, person_id, split, text FROM captions").to_arrow_table()
    con.register("arrow_data_quality", flags_table(quality_flags(images, captions)))
    con.sql("CREATE TABLE data_quality AS SELECT * FROM arrow_data_quality")
    con.unregister("arrow_data_quality")


def _data_tables(con: duckdb.DuckDBPyConnection, data_dirs: Sequence[Path]) -> None:
    captions = [str(d / CAPTIONS) for d in data_dirs if (d / CAPTIONS).is_file()]
    images = [str(d / IMAGES) for d in data_dirs if (d / IMAGES).is_file()]
    if captions:
        listing = "[" + ", ".join(_quote(os.path.abspath(f)) for f in captions) + "]"
        con.sql(f"CREATE TABLE captions AS SELECT * FROM read_parquet({listing}, union_by_name = true)")
    else:
        con.sql(
            "CREATE TABLE captions (caption_id BIGINT, image_id BIGINT, person_id BIGINT, "
            "split VARCHAR, text VARCHAR)"
        )
    if images:
        listing = "[" + ", ".join(_quote(os.path.abspath(f)) for f in images) + "]"
        con.sql(
            "CREATE TABLE images AS SELECT * EXCLUDE (image) "
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
    open_set_files: Sequence[str] = (),
) -> tuple[int, int, int, int]:
    con = duckdb.connect(str(path))
    try:
        for name, table in tables.items():
            con.register(f"arrow_{name}", table)
            con.sql(f"CREATE TABLE {name} AS SELECT * FROM arrow_{name}")
            con.unregister(f"arrow_{name}")
        con.sql(RUNS_SQL)
        con.sql("DROP TABLE runs_raw")
        con.register("arrow_score_outputs", read_score_outputs(rankings_files))
        con.sql("CREATE TABLE score_outputs AS SELECT * FROM arrow_score_outputs")
        con.sql(SCORING_JOBS_SQL)
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
        _data_tables(con, data_dirs)
        _variant_stats(con)  # after `captions`: it clusters queries by person
        _quality_table(con)
        _out_view(con, "open_set", open_set_files, OPEN_SET_EMPTY)
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
    open_set_glob: str | None = None,
) -> SyncSummary:
    """Rebuild `warehouse` from the MLflow store, the rankings files and the prepared data.

    Built in a temporary file beside `warehouse` and renamed over it, so readers never see a half
    warehouse. `rankings_glob` is a glob of `rankings.parquet` files (`**` allowed); each file's folder
    is its `out_dir`, which joins `scoring_jobs.out_dir`. `attributes` (file_path, person_id, attribute,
    value) comes from `load_attributes` when the data is synthetic; `open_set_glob` the open-set files.
    """
    tables = read_mlflow_tables(tracking_db)
    found = sorted(globlib.glob(rankings_glob, recursive=True)) if rankings_glob else []
    # `metrics.json` is written last: a folder without it is an interrupted scoring job, not a result
    rankings_files = [f for f in found if (Path(f).parent / METRICS).is_file()]
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(warehouse) as tmp:  # a new name: DuckDB creates the file itself
        try:
            open_set = sorted(globlib.glob(open_set_glob)) if open_set_glob else []
            runs, metrics, jobs, n_rankings = _build(
                tmp, tables, rankings_files, data_dirs, attributes, open_set
            )
        finally:
            Path(str(tmp) + ".wal").unlink(missing_ok=True)
    log.info("warehouse %s: %d runs, %d scoring jobs, %d rankings files", warehouse, runs, jobs, n_rankings)
    return SyncSummary(warehouse, runs, metrics, jobs, n_rankings)
