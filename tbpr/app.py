"""The typer application. Command modules under `tbpr.commands` add their commands to `app`."""

import typer

app = typer.Typer(
    name="tbpr",
    help="Text-based person re-identification: synth, prepare, train, embed, score, search, run, sql.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
