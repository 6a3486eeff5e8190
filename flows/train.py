"""Flow `train-variants`: one training task per variant; a failing variant loses none of the others."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture, wait

from flows.config import TrainRunConfig, write_config
from flows.prefect_tasks import feature_cache_task, promote_task, train_task
from tasks.core.errors import TbprError
from tasks.tracking.names import model_name
from tasks.tracking.selection import choose_lr
from tasks.train.config import TrainConfig
from tasks.train.loop import TrainResult


@dataclass(frozen=True)
class TrainOutcome:
    results: dict[str, TrainResult] = field(default_factory=dict)  # model name -> result
    failed: dict[str, str] = field(default_factory=dict)  # model name -> error message
    chosen_lr: dict[str, float] = field(default_factory=dict)  # variant -> lr chosen on val (lr_grid)
    searched: dict[str, TrainResult] = field(default_factory=dict)  # the lr search's other runs


BACKBONE = "backbone"  # the output folder of the shared fine-tuned encoders


class VariantsFailed(RuntimeError):
    """Raised at the end of a flow whose variants did not all train (the others did)."""


@flow(name="train-variants")
def train_variants_flow(config: TrainRunConfig) -> TrainOutcome:
    if config.out is not None:
        write_config(config, config.out)
    # several rich progress bars at once clash: show them only when variants train one at a time
    progress = config.runner.kind == "thread" and config.runner.workers == 1
    init_from = None
    if config.train.backbone is not None:
        init_from = str(train_backbone(config, progress).checkpoint_dir)
    elif config.train.config.features == "cached":  # one shared cache, built once before the heads
        first = config.train.models()[0]
        feature_cache_task(config.data, config.train.for_variant(first[1], first[2]), progress=progress)
    outcome = TrainOutcome()
    futures: dict[str, PrefectFuture[Any]] = {}
    by_variant: dict[str, list[tuple[str, int]]] = {}
    for name, variant, seed in config.train.models():
        by_variant.setdefault(variant, []).append((name, seed))
    for variant, models in by_variant.items():
        try:
            configs = [(name, config.train.for_variant(variant, seed)) for name, seed in models]
        except (ValueError, TbprError) as exc:  # a per-variant patch that does not validate
            outcome.failed.update({name: str(exc) for name, _ in models})
            continue
        if init_from is not None:
            configs = [(n, c.model_copy(update={"init_from": init_from})) for n, c in configs]
        grid = config.train.lr_grid
        if grid and len(grid) > 1:
            lr = search_lr(config, configs[0], grid, outcome, progress)
            if lr is None:
                continue
            outcome.chosen_lr[variant] = lr
            configs = [(n, c.model_copy(update={"lr": lr})) for n, c in configs[1:]]
        elif grid:
            configs = [(n, c.model_copy(update={"lr": grid[0]})) for n, c in configs]
        futures |= {name: submit(config, name, c, progress) for name, c in configs}
    wait(list(futures.values()))
    collect(futures, outcome)
    if outcome.failed and config.fail_on_error:
        raise VariantsFailed(failure_message(outcome))
    return outcome


def submit(
    config: TrainRunConfig, name: str, train_config: TrainConfig, progress: bool, promote: bool = True
) -> PrefectFuture[Any]:
    """One training task, its checkpoints under `config.out / name` (`promote=False`: never champion)."""
    if config.out is not None:
        train_config = train_config.model_copy(update={"output_dir": config.out / name})
    return train_task.with_options(task_run_name=f"train-{name}").submit(
        config.data,
        train_config,
        tracking=config.tracking,
        progress=progress,
        parent_run_id=config.parent_run_id,
        promote=promote,
    )


def collect(futures: dict[str, PrefectFuture[Any]], outcome: TrainOutcome) -> None:
    for name, future in futures.items():
        if future.state.is_completed():
            outcome.results[name] = future.result()
        else:
            outcome.failed[name] = str(future.state.message or future.state.name)


def search_lr(
    config: TrainRunConfig,
    first: tuple[str, TrainConfig],
    grid: list[float],
    outcome: TrainOutcome,
    progress: bool,
) -> float | None:
    """Train the variant's first seed once per lr of `grid`; keep the run of the best smoothed val R1
    under the model's own name (the others under `<name>-lr<lr>`, in MLflow only); its lr."""
    name, base = first
    runs = {lr: (f"{name}-lr{lr:g}", base.model_copy(update={"lr": lr})) for lr in grid}
    # no search run is promoted while they train; the chosen one may be, below
    futures = {lr: submit(config, run_name, c, progress, promote=False) for lr, (run_name, c) in runs.items()}
    wait(list(futures.values()))
    done: dict[float, TrainResult] = {}
    for lr, future in futures.items():
        if future.state.is_completed():
            done[lr] = future.result()
    if not done:
        outcome.failed[name] = f"every lr of {grid} failed"
        return None
    best = choose_lr({lr: result.val_curve for lr, result in done.items()}, base.smooth)
    chosen = done.pop(best)
    promoted = promote_task(config.tracking, model_name(chosen.variant), chosen.model_version)
    outcome.results[name] = dataclasses.replace(chosen, promoted=promoted)
    outcome.searched.update({runs[lr][0]: result for lr, result in done.items()})
    return best


def train_backbone(config: TrainRunConfig, progress: bool) -> TrainResult:
    """Fine-tune the shared encoders once, then cache their output for the heads (a re-run finds it)."""
    assert config.train.backbone is not None
    backbone = config.train.backbone
    if config.out is not None:
        backbone = backbone.model_copy(update={"output_dir": config.out / BACKBONE})
    result = train_task.with_options(task_run_name=f"train-{BACKBONE}-{backbone.variant}")(
        config.data,
        backbone,
        tracking=config.tracking,
        progress=progress,
        parent_run_id=config.parent_run_id,
    )
    head = config.train.for_variant(backbone.variant).model_copy(
        update={"init_from": str(result.checkpoint_dir)}
    )
    if head.features == "cached":
        feature_cache_task(config.data, head, progress=progress)
    return result


def failure_message(outcome: TrainOutcome) -> str:
    names = ", ".join(f"{variant} ({message})" for variant, message in outcome.failed.items())
    return f"{len(outcome.failed)} of {len(outcome.failed) + len(outcome.results)} variants failed: {names}"
