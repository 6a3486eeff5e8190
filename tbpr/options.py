"""Options and output helpers several commands share (command modules never import each other)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from tasks.report.queries import QueryResult

IndexName = Literal["flat", "hnsw", "ivf", "ivfpq", "fastscan"]
DeviceName = Literal["auto", "cpu", "cuda"]
Shards = Annotated[
    int, typer.Option(min=1, help="Split the gallery into N shards on Dask workers (a local cluster).")
]
Scheduler = Annotated[
    str | None, typer.Option(help="With --shards: a running Dask scheduler, e.g. tcp://host:8786.")
]


def plain_console(stderr: bool = False) -> Console:
    """A console that prints text literally: user text (paths, captions, queries, table cells) is never
    read as rich markup (`[red]`, `[/]`) or emoji codes (`:smile:`); styles come only from `styled`. Lines
    are not folded (soft wrap), so a path in a message stays whole to copy."""
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False, soft_wrap=True)


def styled(label: str, style: str, rest: str) -> Text:
    """`label` in `style`, then `rest` literally: e.g. styled("error:", "bold red", f" {message}")."""
    return Text.assemble((label, style), rest)


def damaged_input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a file given to tbpr is missing, unwritable, truncated or not what it
    should be (raised by the libraries that read it)."""
    import json
    import pickle

    import duckdb
    import pyarrow
    from safetensors import SafetensorError

    return (
        OSError,
        EOFError,
        json.JSONDecodeError,
        UnicodeDecodeError,
        pickle.UnpicklingError,
        pyarrow.ArrowException,
        SafetensorError,
        duckdb.Error,
    )


class HideExpectedTracebacks(logging.Filter):
    """Drops the traceback from log records of expected failures (bad input, a damaged file): Prefect logs
    a failed task with its traceback, and the CLI then prints the one `error:` line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tasks.core.errors import TbprError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (TbprError, *damaged_input_errors())):
            record.exc_info, record.exc_text = None, None
        return True


def hide_expected_tracebacks() -> None:
    """Add `HideExpectedTracebacks` to the handlers that print Prefect's run logs (root's and Prefect's)."""
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, HideExpectedTracebacks) for f in handler.filters):
                handler.addFilter(HideExpectedTracebacks())


def quiet_faiss() -> None:
    """FAISS logs at INFO which SIMD module it tries at import (it dispatches AVX2/AVX-512 at run time)."""
    logging.getLogger("faiss").setLevel(logging.WARNING)


def result_table(result: QueryResult) -> Table:
    """A rich table of a query result (floats to 2 decimals)."""
    table = Table(title=result.name, caption=result.question or None, caption_justify="left")
    for column in result.columns:
        table.add_column(column, overflow="fold")
    for row in result.rows:
        table.add_row(*("" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
    return table
