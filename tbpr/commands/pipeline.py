"""`tbpr run`: the `tbpr-pipeline` flow on a preset or config file, then the leaderboard and where to look."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from tasks.core.errors import TbprError
from tbpr.app import app
from tbpr.options import (
    damaged_input_errors,
    hide_expected_tracebacks,
    plain_console,
    styled,
)

if TYPE_CHECKING:
    from flows.config import EmbedSettings
    from tasks.core.env import Home


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Option(help="a TOML run config (default: the --profile preset)")
    ] = None,
    profile: Annotated[
        str,
        typer.Option(help="preset in configs/: quick (a few minutes), main (~20 min on 2 cores) or full"),
    ] = "main",
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a config key, e.g. --set train.config.epochs=2"),
    ] = None,
    control: Annotated[
        bool,
        typer.Option(
            "--control",
            help="also train the controls: control_top_half (global seeing the top half of each image), "
            "which the leaderboard must find significantly worse than global, and control_aa (global "
            "with other seeds), which it must find not significant",
        ),
    ] = False,
) -> None:
    """Run the whole pipeline: synthetic data (or a configured source) to a leaderboard."""
    from flows.config import PipelineConfig, load_config, profile_path
    from tasks.core.env import home
    from tasks.tracking.config import sqlite_uri

    extra = ["train.control=true"] if control else []
    settings = load_config(PipelineConfig, config or profile_path(profile), [*(overrides or []), *extra])
    from flows.pipeline import tbpr_pipeline

    hide_expected_tracebacks()
    console = plain_console()
    state = tbpr_pipeline(settings, return_state=True)
    if not state.is_completed():
        failure: object = state.result(raise_on_failure=False)
        if isinstance(failure, BaseException) and isinstance(failure, (TbprError, *damaged_input_errors())):
            raise failure  # bad input found by a stage: one `error:` line, exit 2 (tbpr.cli)
    tbpr = home()
    show_leaderboard(console, tbpr.warehouse)
    if state.is_completed():
        show_phases(console, state.result())
        show_removed(console, state.result(), rebuild_command(settings.embed))
    show_disk(console, tbpr)
    console.print(
        styled(
            "\nLook closer",
            "bold",
            "\n"
            f"  MLflow UI:  mlflow ui --backend-store-uri {shlex.quote(sqlite_uri(tbpr.mlflow_db))}\n"
            "  Prefect UI: prefect server start   (then open http://127.0.0.1:4200; export\n"
            "              PREFECT_API_URL=http://127.0.0.1:4200/api before `tbpr run` to watch it live)\n"
            "  SQL:        tbpr sql leaderboard [--wide] | variant_vs_global | variant_vs_gpo\n"
            "              | pruned_vs_exhaustive | metric_history | hardest_queries | attribute_errors\n"
            "              | data_quality | cost_frontier | open_set",
        )
    )
    if not state.is_completed():
        plain_console(stderr=True).print(styled(f"pipeline {state.name}:", "bold red", f" {state.message}"))
        raise typer.Exit(1)


def show_phases(console: Console, result: object) -> None:
    """Where the run's time went: each stage of the flow, then the training runs per variant (mean
    seconds per run by phase, and the share not spent in training steps)."""
    phases: dict[str, float] = getattr(result, "phases", {})
    runs: dict[str, tuple[str, dict[str, float]]] = getattr(result, "runs", {})
    if not phases:
        return
    stages = ", ".join(f"{k} {v:.0f}" for k, v in phases.items())
    console.print(styled("\nTime", "bold", f" {sum(phases.values()):.0f} s: {stages}"))
    by_variant: dict[str, list[dict[str, float]]] = {}
    for variant, times in runs.values():
        by_variant.setdefault(variant, []).append(times)
    if not by_variant:
        return
    names = list(next(iter(by_variant.values()))[0])
    table = Table(title="training runs: mean seconds per run", title_justify="left", box=None)
    for column in ("variant", "runs", *names, "total", "overhead"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    every: list[dict[str, float]] = []
    for variant, group in sorted(by_variant.items()):
        every += group
        table.add_row(variant, str(len(group)), *_phase_cells(group, names))
    table.add_row("all", str(len(every)), *_phase_cells(every, names))
    console.print(table)


def show_disk(console: Console, tbpr: Home) -> None:
    """One line: what TBPR_HOME holds on disk, in all and by top-level entry (as `du` counts)."""
    parts = tbpr.disk()
    if not parts:
        return
    mb = {name: size / 2**20 for name, size in sorted(parts.items(), key=lambda item: -item[1])}
    listing = ", ".join(f"{name} {size:.0f}" for name, size in mb.items() if size >= 0.5)
    console.print(styled("\nDisk", "bold", f" {sum(mb.values()):.0f} MB under {tbpr.root}: {listing}"))


def rebuild_command(embed: EmbedSettings) -> str:
    """The `tbpr embed` line that rebuilds one of a pipeline's EMBs as the pipeline wrote it (its
    precision and local storage, where they are not the command's defaults)."""
    options = [
        f"--{name.replace('_', '-')} {value}"
        for name, value, default in (
            ("precision", embed.precision, "fp32"),
            ("local_dtype", embed.local_dtype, "float16"),
        )
        if value != default
    ]
    return " ".join(["tbpr embed DATA --run RUN_ID --out EMB", *options])


def show_removed(console: Console, result: object, rebuild: str) -> None:
    """One line on the EMB folders `keep_emb` removed, and how to rebuild one (`rebuild_command`)."""
    removed = getattr(result, "removed", None)
    if removed is None or not removed.folders:
        return
    console.print(
        styled(
            "\nEMB",
            "bold",
            f" kept each variant's best val seed; removed {len(removed.folders)} other folders "
            f"({removed.bytes / 2**20:.0f} MB; `{rebuild}` rebuilds one)",
        )
    )


def _phase_cells(runs: list[dict[str, float]], names: list[str]) -> list[str]:
    mean = {k: sum(r.get(k, 0.0) for r in runs) / len(runs) for k in names}
    total = sum(mean.values())
    overhead = 100.0 * (1.0 - mean.get("steps", 0.0) / total) if total else 0.0
    return [*(f"{mean[k]:.1f}" for k in names), f"{total:.1f}", f"{overhead:.0f}%"]


def show_leaderboard(console: Console, warehouse: Path) -> None:
    """The leaderboard at the terminal's width (80 in a log file): its compact columns when narrow."""
    from tasks.report.queries import leaderboard, render_leaderboard

    if warehouse.is_file():
        console.print(render_leaderboard(leaderboard(warehouse), console.width))
