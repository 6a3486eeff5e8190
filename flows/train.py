"""Flow `train-variants`: one training task per variant; a failing variant loses none of the others."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow
from prefect.futures import wait

from flows.config import TrainRunConfig, write_config
from flows.prefect_tasks import feature_cache_task, train_task
from tasks.core.errors import TbprError
from tasks.train.loop import TrainResult


@dataclass(frozen=True)
class TrainOutcome:
    results: dict[str, TrainResult] = field(default_factory=dict)  # model name -> result
    failed: dict[str, str] = field(default_factory=dict)  # model name -> error message


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
    futures = {}
    outcome = TrainOutcome()
    for name, variant, seed in config.train.models():
        try:
            train_config = config.train.for_variant(variant, seed)
        except (ValueError, TbprError) as exc:  # a per-variant patch that does not validate
            outcome.failed[name] = str(exc)
            continue
        if init_from is not None:
            train_config = train_config.model_copy(update={"init_from": init_from})
        if config.out is not None:
            train_config = train_config.model_copy(update={"output_dir": config.out / name})
        futures[name] = train_task.with_options(task_run_name=f"train-{name}").submit(
            config.data,
            train_config,
            tracking=config.tracking,
            progress=progress,
            parent_run_id=config.parent_run_id,
        )
    wait(list(futures.values()))
    for name, future in futures.items():
        if future.state.is_completed():
            outcome.results[name] = future.result()
        else:
            outcome.failed[name] = str(future.state.message or future.state.name)
    if outcome.failed and config.fail_on_error:
        raise VariantsFailed(failure_message(outcome))
    return outcome


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
