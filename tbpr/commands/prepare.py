"""`tbpr prepare SOURCE --format F --out DATA`: a public dataset layout to validated Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from tbpr.app import app
from tbpr.options import plain_console, styled

if TYPE_CHECKING:
    from tasks.data.prepare import PrepareSummary


def summary_tables(summary: PrepareSummary) -> list[Table]:
    """The per-split table the literature prints, and the quarantine counts by reason (if any)."""
    title = summary.dataset if summary.dataset == summary.fmt else f"{summary.dataset} ({summary.fmt} layout)"
    splits = Table(title=title)
    for column in ("split", "identities", "images", "captions"):
        splits.add_column(column, justify="left" if column == "split" else "right")
    for name, counts in summary.splits.items():
        splits.add_row(name, f"{counts.identities:,}", f"{counts.images:,}", f"{counts.captions:,}")
    quarantine = Table(title=f"quarantine: {summary.quarantined:,} of {summary.records:,} records")
    quarantine.add_column("reason")
    quarantine.add_column("records", justify="right")
    for reason, count in sorted(summary.quarantine.items(), key=lambda item: (-item[1], item[0])):
        quarantine.add_row(reason, f"{count:,}")
    return [splits, quarantine] if summary.quarantine else [splits]


@app.command()
def prepare(
    source: Annotated[Path, typer.Argument(help="Dataset root: the annotation JSON and imgs/.")],
    fmt: Annotated[
        Literal["cuhk-pedes", "icfg-pedes", "rstpreid"],
        typer.Option("--format", help="Source layout (`tbpr synth` writes cuhk-pedes)."),
    ],
    out: Annotated[
        Path | None, typer.Option(help="DATA folder (default: $TBPR_HOME/data/<SOURCE name>-<format>).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Threads that read and decode images.")] = 2,
) -> None:
    """Validate a CUHK-PEDES, ICFG-PEDES or RSTPReid layout into images/captions/quarantine Parquet."""
    from tasks.core.env import home
    from tasks.core.outputs import check_outside_home
    from tasks.data.prepare import prepare_dataset

    target = out if out is not None else home().prepared(source.resolve(), fmt)
    check_outside_home(target)
    summary = prepare_dataset(source, fmt, target, workers=workers)
    console = plain_console()
    if summary.up_to_date:
        console.print(
            styled(
                "up to date",
                "green",
                f": {summary.out} already holds this input ({summary.content_hash[:19]})",
            )
        )
    else:
        console.print(styled("prepared", "green", f" {summary.out} ({summary.content_hash[:19]})"))
    for table in summary_tables(summary):
        console.print(table)
    if not summary.quarantine:
        console.print(f"quarantine: none of {summary.records:,} records")
    if summary.quality:
        console.print(quality_table(summary))


def quality_table(summary: PrepareSummary) -> Table | str:
    """The data-quality flags (kept, not dropped): how many of each and one example."""
    flagged = sum(entry["count"] for entry in summary.quality.values())
    if not flagged:
        return f"data quality: no flags ({', '.join(summary.quality)})"
    table = Table(
        title=f"data quality: {flagged:,} flags (kept in DATA; every row: tbpr sql data_quality)",
        caption_justify="left",
    )
    for column in ("flag", "rows", "example"):
        table.add_column(column, justify="right" if column == "rows" else "left", overflow="fold")
    for flag, entry in summary.quality.items():
        example = entry["examples"][0] if entry["examples"] else None
        shown = "" if example is None else f"person {example['person_id']}: {example['detail']}"
        if example is not None and "text" in example:
            shown += f" ({example['text'][:60]!r})"
        table.add_row(flag, f"{entry['count']:,}", shown)
    return table
