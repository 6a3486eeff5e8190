"""`tbpr synth OUT`: the built-in synthetic dataset (CUHK-PEDES layout)."""

from __future__ import annotations

from pathlib import Path

import typer

from tbpr.app import app
from tbpr.options import plain_console


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write (new, empty, or a previous synth output)."),
    identities: int = typer.Option(1000, "--identities", "-n", help="Number of people (at least 6)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, byte-identical files."),
    held_out: int | None = typer.Option(
        None, "--held-out", help="Identities in each of val and test (default: about 10% each)."
    ),
    test: int | None = typer.Option(
        None, "--test", help="Identities in test instead (default: --held-out's count)."
    ),
    preview: Path | None = typer.Option(
        None, "--preview", help="Also write a contact sheet PNG of 12 samples."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Rendering processes (default: up to 2)."
    ),
) -> None:
    """Synthetic pedestrians with two captions per image, written in the CUHK-PEDES layout."""
    from rich.table import Table

    from tasks.core.outputs import check_outside_home
    from tasks.data.synth import generate

    check_outside_home(out, option="OUT")
    summary = generate(
        out, identities=identities, seed=seed, preview=preview, held_out=held_out, test=test, workers=workers
    )
    table = Table(title=f"tbpr synth -> {out} (seed {seed}, {summary.seconds:.1f} s)")
    for column in ("split", "identities", "images", "captions"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name in ("train", "val", "test"):
        counts = getattr(summary, name)
        table.add_row(name, str(counts.identities), str(counts.images), str(counts.captions))
    console = plain_console()
    console.print(table)
    if preview is not None:
        console.print(f"preview: {preview}")
