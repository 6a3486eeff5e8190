"""Run the analysts' queries in `sql/` (or any SQL file) against the warehouse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from tasks.core.errors import TbprError

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"  # sql/ at the top of the checkout


@dataclass(frozen=True)
class QueryResult:
    """Rows of one query, with its column names and the question it answers (the header comment)."""

    name: str
    question: str
    columns: list[str]
    rows: list[tuple[object, ...]]


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


def run_query(warehouse: Path, query: Path) -> QueryResult:
    """Execute `query` on a connection that can only read `warehouse` (`read_only`)."""
    if not warehouse.is_file():
        raise TbprError(f"no warehouse at {warehouse}; run `tbpr run` (it syncs MLflow into DuckDB) first")
    try:
        sql = query.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise TbprError(f"{query} is not a readable text file of SQL ({exc})") from exc
    con = read_only(warehouse)
    try:
        rel = con.sql(sql)
        if rel is None:
            raise TbprError(f"{query} returns no rows (it is not a SELECT); write one query per file")
        return QueryResult(query.stem, question_of(sql), list(rel.columns), rel.fetchall())
    except duckdb.CatalogException as exc:
        raise TbprError(
            f"query {query} needs a table or column the warehouse at {warehouse} lacks ({exc}); a warehouse "
            "built by an older tbpr is rebuilt by the next `tbpr run`, else check the query"
        ) from exc
    except duckdb.Error as exc:
        raise TbprError(f"query {query} failed: {exc}; check it against the warehouse tables") from exc
    finally:
        con.close()


def leaderboard(warehouse: Path) -> QueryResult:
    return run_query(warehouse, SQL_DIR / "leaderboard.sql")
