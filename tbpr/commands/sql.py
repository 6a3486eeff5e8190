"""`tbpr sql NAME|FILE`: a query from `sql/` (or a file) against the warehouse, printed as a table (or
written whole to a Parquet or CSV file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tbpr.app import app
from tbpr.options import plain_console, result_table


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="a name in sql/ (e.g. leaderboard) or a .sql file")],
    warehouse: Annotated[
        Path | None, typer.Option(help="warehouse.duckdb (default: $TBPR_HOME/warehouse.duckdb)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="rows printed per result (the rest are counted)")] = 1000,
    out: Annotated[
        Path | None,
        typer.Option(help="write the whole result to FILE.parquet or FILE.csv instead of printing it"),
    ] = None,
    wide: Annotated[
        bool,
        typer.Option("--wide", help="leaderboard: every column, however wide (default: fit the terminal)"),
    ] = False,
) -> None:
    """Run an analysts' query against the DuckDB warehouse and print the rows of each statement."""
    from tasks.core.env import home
    from tasks.core.outputs import check_outside_home
    from tasks.report.queries import COMPACT_OF, export_query, render_leaderboard, resolve_query, run_queries

    source = warehouse or home().warehouse
    if out is not None:
        check_outside_home(out)
        rows = export_query(source, resolve_query(query), out)
        plain_console().print(f"wrote {rows:,} rows to {out}")
        return
    console, notes = plain_console(), plain_console(stderr=True)
    path = resolve_query(query)
    for result in run_queries(source, path, limit=limit):
        if path.stem in COMPACT_OF:  # plain text at the terminal's width, compact columns if need be
            console.print(render_leaderboard(result, console.width, wide=wide, compact=COMPACT_OF[path.stem]))
        else:
            console.print(result_table(result))
        if result.not_shown:
            notes.print(
                f"({result.not_shown:,} more rows of {result.total:,} not shown: --limit N shows more, "
                "--out FILE.parquet|FILE.csv writes them all)",
                highlight=False,
            )
        elif not result.rows:
            notes.print("(no rows: has the pipeline scored anything yet?)")
