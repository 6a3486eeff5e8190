"""Run the analysts' queries in `sql/` (or any SQL file) against the warehouse."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from tasks.core.errors import TbprError
from tasks.core.files import atomic_path

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"  # sql/ at the top of the checkout
LEADERBOARD = SQL_DIR / "leaderboard.sql"
BATCH_ROWS = 65_536  # rows per Arrow batch streamed out of DuckDB
# `tbpr sql --out FILE`: file suffix -> a streaming writer of Arrow batches
EXPORT_KINDS: dict[str, Callable[[Path, pa.Schema], Any]] = {
    ".parquet": lambda path, schema: pq.ParquetWriter(path, schema),
    ".csv": lambda path, schema: pa_csv.CSVWriter(path, schema),
}


@dataclass(frozen=True)
class QueryResult:
    """Rows of one query, with its column names and the question it answers (the header comment);
    `total` counts every row the query returned, `rows` holds the first of them (all, unless limited)."""

    name: str
    question: str
    columns: list[str]
    rows: list[tuple[object, ...]]
    total: int

    @property
    def not_shown(self) -> int:
        return self.total - len(self.rows)


def available_queries() -> list[str]:
    return sorted(path.stem for path in SQL_DIR.glob("*.sql"))


def resolve_query(name_or_file: str) -> Path:
    """`leaderboard` -> `sql/leaderboard.sql`; an existing file path is taken as is."""
    path = Path(name_or_file)
    if path.is_file():
        return path
    named = SQL_DIR / f"{name_or_file.removesuffix('.sql')}.sql"
    if named.is_file():
        return named
    raise TbprError(f"no query {name_or_file!r}; use a file or one of: {', '.join(available_queries())}")


def question_of(sql: str) -> str:
    """The header comment of a query file, as one line."""
    lines = [line.removeprefix("--").strip() for line in sql.splitlines() if line.startswith("--")]
    return " ".join(lines)


def read_only(warehouse: Path) -> duckdb.DuckDBPyConnection:
    """A connection that reads the warehouse and nothing else: read-only, and with file system access
    switched off and locked (no `COPY ... TO`, no `read_csv` of other files, no extensions loaded)."""
    try:
        con = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.Error as exc:
        raise TbprError(
            f"{warehouse} is not a DuckDB warehouse ({exc}); point --warehouse at the one `tbpr run` wrote"
        ) from exc
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _read_sql(warehouse: Path, query: Path) -> str:
    if not warehouse.is_file():
        raise TbprError(f"no warehouse at {warehouse}; run `tbpr run` (it syncs MLflow into DuckDB) first")
    try:
        return query.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise TbprError(f"{query} is not a readable text file of SQL ({exc})") from exc


@contextmanager
def _query_errors(query: Path, warehouse: Path) -> Iterator[None]:
    """DuckDB's errors while a query runs or streams, as a TbprError that says what to check."""
    try:
        yield
    except duckdb.CatalogException as exc:
        raise TbprError(
            f"query {query} needs a table or column the warehouse at {warehouse} lacks ({exc}); a warehouse "
            "built by an older tbpr is rebuilt by the next `tbpr run`, else check the query"
        ) from exc
    except duckdb.Error as exc:
        raise TbprError(f"query {query} failed: {exc}; check it against the warehouse tables") from exc


def _results(con: duckdb.DuckDBPyConnection, sql: str) -> Iterator[pa.RecordBatchReader]:
    """Run the statements of `sql` one by one; a stream of Arrow batches for each that returns rows
    (read it before asking for the next: the next statement runs then)."""
    for statement in con.extract_statements(sql):
        relation = con.sql(statement.query)
        if relation is not None:
            yield relation.to_arrow_reader(BATCH_ROWS)


def _no_rows(query: Path) -> TbprError:
    return TbprError(f"{query} returns no rows (it holds no SELECT); write at least one query in it")


def run_queries(warehouse: Path, query: Path, limit: int | None = None) -> list[QueryResult]:
    """The result of every statement of `query` that returns rows, in order, on a connection that can
    only read `warehouse` (`read_only`); each keeps its first `limit` rows (all when None) and counts
    the rest as they stream past."""
    sql = _read_sql(warehouse, query)
    question = question_of(sql)
    results = []
    with read_only(warehouse) as con, _query_errors(query, warehouse):
        for reader in _results(con, sql):
            rows: list[tuple[object, ...]] = []
            total = 0
            for batch in reader:
                if limit is None or len(rows) < limit:
                    keep = batch.slice(0, None if limit is None else limit - len(rows))
                    rows += zip(*(column.to_pylist() for column in keep.columns), strict=True)
                total += batch.num_rows
            results.append(QueryResult(query.stem, question, list(reader.schema.names), rows, total))
    if not results:
        raise _no_rows(query)
    if len(results) > 1:
        results = [replace(r, name=f"{r.name} ({i}/{len(results)})") for i, r in enumerate(results, 1)]
    return results


def run_query(warehouse: Path, query: Path) -> QueryResult:
    """The (last) result of `query`, every row (`run_queries`)."""
    return run_queries(warehouse, query)[-1]


def export_query(warehouse: Path, query: Path, out: Path) -> int:
    """Write the whole result of `query` (one statement that returns rows) to `out` (`.parquet` or
    `.csv`), batch by batch from DuckDB's Arrow stream, atomically; the rows written."""
    kind = out.suffix.lower()
    if kind not in EXPORT_KINDS:
        raise TbprError(f"--out {out} must end in {' or '.join(EXPORT_KINDS)} (the file format it writes)")
    if out.is_dir() or out.resolve() in (warehouse.resolve(), query.resolve()):
        raise TbprError(f"--out {out} is a folder, the warehouse or the query; name a new result file")
    sql = _read_sql(warehouse, query)
    with read_only(warehouse) as con, _query_errors(query, warehouse), atomic_path(out) as tmp:
        readers = _results(con, sql)
        reader = next(readers, None)
        if reader is None:
            raise _no_rows(query)
        rows = _write_stream(reader, tmp, kind)
        if next(readers, None) is not None:  # raised before the rename: `out` stays as it was
            raise TbprError(f"--out writes one result; {query} has several statements that return rows")
    return rows


def _write_stream(reader: pa.RecordBatchReader, path: Path, kind: str) -> int:
    rows = 0
    writer = EXPORT_KINDS[kind](path, reader.schema)
    try:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    finally:
        writer.close()
    return rows


def leaderboard(warehouse: Path) -> QueryResult:
    return run_query(warehouse, LEADERBOARD)


# The leaderboard's columns at 80 characters: what a row claims (the rest with `--wide` or a wider
# terminal); a narrower terminal drops them from the right, `variant` always stays
COMPACT = ("variant", "params", "R1", "R1_95", "dR1", "dR1_holm95", "vs_global", "vs_gpo")
# the same for the other queries printed as text: query name -> its compact columns
COMPACT_OF = {
    "leaderboard": COMPACT,
    "variant_vs_global": ("variant", "delta_R1", "verdict", "p_holm", "mde"),
    "variant_vs_gpo": ("variant", "delta_R1", "verdict", "p_holm", "mde"),
}
SIGNED = frozenset({"dR1", "dR1_gpo", "delta_R1"})  # differences: printed with their sign
P_VALUES = frozenset({"p", "p_holm", "p_global", "p_gpo"})
ONE_DECIMAL = frozenset({"R1", "mAP", "mde", "grounding", *SIGNED})
GAP = "  "  # between columns (one space where two do not fit)


def _cell(column: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if column in SIGNED:
            return f"{value:+.1f}"
        if column in P_VALUES:
            return "<0.001" if value < 0.001 else f"{value:.3f}"
        return f"{value:.1f}" if column in ONE_DECIMAL else f"{value:.2f}"
    return str(value)


def _layout(columns: list[str], cells: list[list[str]], gap: str = GAP) -> list[str]:
    """Header, rule and rows, each column as wide as its widest cell; numbers right-aligned."""
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    numeric = [all(_numeric(row[i]) for row in cells) for i in range(len(columns))]

    def line(values: list[str]) -> str:
        padded = (
            v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric, strict=True)
        )
        return gap.join(padded).rstrip()

    return [line(columns), line(["-" * w for w in widths]), *(line(row) for row in cells)]


def _numeric(text: str) -> bool:
    return text == "" or text.lstrip("+-<").replace(".", "", 1).replace("k", "").replace("M", "").isdigit()


def render_leaderboard(
    result: QueryResult, width: int = 80, *, wide: bool = False, compact: Sequence[str] = COMPACT
) -> str:
    """A query result (the leaderboard's by default) as plain text lines no longer than `width` (unless
    `wide`): every column when they fit, else the `compact` ones (one space apart if need be, then dropping from the right while
    they do not fit), then the question wrapped at `width`; readable in a log file, where nothing wraps
    a line again."""
    cells = [[_cell(c, v) for c, v in zip(result.columns, row, strict=True)] for row in result.rows]
    lines = _layout(result.columns, cells)
    hidden: list[str] = []
    if not wide and max(map(len, lines)) > width:
        keep = [c for c in compact if c in result.columns] or result.columns[:1]
        while True:
            index = [result.columns.index(c) for c in keep]
            kept = [[row[i] for i in index] for row in cells]
            lines = _layout(keep, kept)
            if max(map(len, lines)) > width:
                lines = _layout(keep, kept, " ")
            if max(map(len, lines)) <= width or len(keep) == 1:
                break
            keep = keep[:-1]
        hidden = [c for c in result.columns if c not in keep]
    note = (
        f"{result.question} (not shown: {', '.join(hidden)}; --wide shows them)"
        if hidden
        else result.question
    )
    wrap = max(width, 20) if not wide else max(width, max(map(len, lines)))
    lines = [line if len(line) <= wrap else line[: wrap - 1] + "~" for line in lines]
    return "\n".join([result.name, *lines, "", *textwrap.wrap(note, wrap)])
