"""`tbpr sql NAME|FILE`: a query from `sql/` (or a file) against the warehouse, printed as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tbpr.app import app
from tbpr.options import result_table


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="a name in sql/ (e.g. leaderboard) or a .sql file")],
    warehouse: Annotated[
        Path | None, typer.Option(help="warehouse.duckdb (default: $TBPR_HOME/warehouse.duckdb)")
    ] = None,
) -> None:
    """Run an analysts' query against the DuckDB warehouse and print the rows."""
    from tasks.core.env import home
    from tasks.report.queries import resolve_query, run_query

    result = run_query(warehouse or home().warehouse, resolve_query(query))
    Console().print(result_table(result))
    if not result.rows:
        Console(stderr=True).print("(no rows: has the pipeline scored anything yet?)")
