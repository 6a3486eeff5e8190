"""`tbpr train DATA --variant V`: one tracked training run; its run id is the last stdout line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from tbpr.app import app
from tbpr.options import DeviceName, plain_console

if TYPE_CHECKING:
    from tasks.train.loop import TrainResult


def result_table(result: TrainResult) -> Table:
    table = Table(title=f"{result.variant}: run {result.run_id}, best epoch {result.best_epoch}")
    table.add_column("split")
    for key in result.val_metrics:
        table.add_column(key, justify="right")
    table.add_row("val", *(f"{v:.2f}" for v in result.val_metrics.values()))
    table.add_row("test", *(f"{result.test_metrics[k]:.2f}" for k in result.val_metrics))
    return table


@app.command()
def train(
    data: Annotated[
        Path, typer.Argument(help="Prepared DATA folder (images/captions Parquet, manifest.json).")
    ],
    variant: Annotated[str, typer.Option(help="global, spatial, channel, mixed, nonlocal, cross_scan, ...")],
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epochs (default: the train config's, 10).")
    ] = None,
    device: Annotated[DeviceName, typer.Option(help="auto: CUDA when present.")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue the latest unfinished run of this config.")] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="key=value of the train config, e.g. lr=3e-4, model.embed_dim=128."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    profile: Annotated[
        str | None,
        typer.Option(help="start from a preset's train settings (configs/<profile>.toml), e.g. irra"),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="start from a TOML run config's train settings ([train.config])"),
    ] = None,
) -> None:
    """Train one variant: an MLflow run with per-epoch val metrics, test metrics and a registered model.

    `--profile irra` (or `--config FILE`) starts from a run config's train settings; `--set` then
    changes them. Several processes train one model under torchrun: `torchrun --standalone --nproc_per_node N -m tbpr
    train DATA --variant V` (batch_size is the global batch; rank 0 evaluates, logs and prints)."""
    from pydantic import ValidationError

    from tasks.core.errors import TbprError
    from tasks.core.settings import apply_overrides, validation_summary
    from tasks.data.layout import IMAGES
    from tasks.train.config import TrainConfig
    from tasks.train.distributed import launched_ranks
    from tasks.train.loop import train_variant

    if not (data / IMAGES).is_file():
        raise TbprError(f"{data} holds no {IMAGES}; run `tbpr prepare` (or `tbpr synth`) first")
    chosen = [f"variant={json.dumps(variant)}", f"device={json.dumps(device)}"]
    sets = [*(overrides or []), *([f"epochs={epochs}"] if epochs else [])]
    if profile or config_file:
        from flows.config import PipelineConfig, load_config, profile_path

        # the run config's [train.config] (and its per_variant patch) with the --set applied inside it,
        # so that a preset's placeholder (e.g. the CLIP folder) is replaced before it is checked
        preset = load_config(
            PipelineConfig, config_file or profile_path(str(profile)), [f"train.config.{o}" for o in sets]
        )
        try:
            config = apply_overrides(preset.train.for_variant(variant), chosen)
        except ValidationError as exc:
            raise TbprError(
                f"the {profile or config_file} train settings do not fit variant {variant!r}: "
                f"{validation_summary(exc)}"
            ) from exc
    else:
        config = apply_overrides(TrainConfig(), [*chosen, *sets])
    result = train_variant(data, config, resume=resume, progress=progress)
    if not launched_ranks().main:
        return  # under torchrun, rank 0 reports
    console = plain_console()
    console.print(result_table(result))
    verdict = "now champion" if result.promoted else "champion unchanged"
    stopped = {
        "epochs": "ran every configured epoch",
        "plateau": "the smoothed val R1 plateaued",
        "budget": "the time budget cut it: this result depends on the machine's speed",
    }[result.stop_reason]
    console.print(
        f"{result.epochs} epochs, best {result.best_epoch}; stop_reason {result.stop_reason}: {stopped}"
    )
    console.print(f"time {result.phase_summary()}")
    console.print(
        f"registered tbpr-{result.variant} v{result.model_version} ({verdict}); checkpoint {result.checkpoint_dir}"
    )
    typer.echo(result.run_id)
