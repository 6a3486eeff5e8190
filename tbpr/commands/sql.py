"""`tbpr sql NAME|FILE`: a query from `sql/` (or a file) against the warehouse, printed as a table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from tbpr.app import app

if TYPE_CHECKING:
    from tasks.leaderboard import QueryResult


def result_table(result: QueryResult) -> Table:
    """A rich table of a query result (floats to 2 decimals)."""
    table = Table(title=result.name, caption=result.question or None, caption_justify="left")
    for column in result.columns:
        table.add_column(column, overflow="fold")
    for row in result.rows:
        table.add_row(*("" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
    return table


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="a name in sql/ (e.g. leaderboard) or a .sql file")],
    warehouse: Annotated[
        Path | None, typer.Option(help="warehouse.duckdb (default: $TBPR_HOME/warehouse.duckdb)")
    ] = None,
) -> None:
    """Run an analysts' query against the DuckDB warehouse and print the rows."""
    from tasks.leaderboard import resolve_query, run_query
    from tbpr.env import tbpr_home

    result = run_query(warehouse or tbpr_home() / "warehouse.duckdb", resolve_query(query))
    Console().print(result_table(result))
    if not result.rows:
        Console(stderr=True).print("(no rows: has the pipeline scored anything yet?)")
