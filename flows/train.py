"""Flow `train-variants`: one training task per variant; a failing variant loses none of the others."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow
from prefect.futures import wait

from flows.config import TrainRunConfig, write_config
from flows.prefect_tasks import train_task
from tasks.train.loop import TrainResult


@dataclass(frozen=True)
class TrainOutcome:
    results: dict[str, TrainResult] = field(default_factory=dict)  # model name -> result
    failed: dict[str, str] = field(default_factory=dict)  # model name -> error message


class VariantsFailed(RuntimeError):
    """Raised at the end of a flow whose variants did not all train (the others did)."""


@flow(name="train-variants")
def train_variants_flow(config: TrainRunConfig) -> TrainOutcome:
    if config.out is not None:
        write_config(config, config.out)
    # several rich progress bars at once clash: show them only when variants train one at a time
    progress = config.runner.kind == "thread" and config.runner.workers == 1
    futures = {}
    for name, variant, seed in config.train.models():
        train_config = config.train.for_variant(variant, seed)
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
    outcome = TrainOutcome()
    for name, future in futures.items():
        if future.state.is_completed():
            outcome.results[name] = future.result()
        else:
            outcome.failed[name] = str(future.state.message or future.state.name)
    if outcome.failed and config.fail_on_error:
        raise VariantsFailed(failure_message(outcome))
    return outcome


def failure_message(outcome: TrainOutcome) -> str:
    names = ", ".join(f"{variant} ({message})" for variant, message in outcome.failed.items())
    return f"{len(outcome.failed)} of {len(outcome.failed) + len(outcome.results)} variants failed: {names}"
