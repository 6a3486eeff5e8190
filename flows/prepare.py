"""Flow `prepare-dataset`: synthesise (when no source is configured) and prepare validated Parquet."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.config import PrepareRunConfig, write_config
from flows.prefect_tasks import prepare_task, synth_task
from tasks.data.prepare import PrepareSummary


def source_dir(config: PrepareRunConfig) -> Path:
    """The configured source, or where the synthetic source is generated (beside the output)."""
    synth = config.data.synth
    return config.data.source or config.out.parent / f"synth-raw-{synth.tag}"


@flow(name="prepare-dataset")
def prepare_dataset_flow(config: PrepareRunConfig) -> PrepareSummary:
    source, fmt = source_dir(config), config.data.format
    if config.data.source is None:
        synth_task(
            source,
            identities=config.data.synth.identities,
            seed=config.data.synth.seed,
            held_out=config.data.synth.held_out,
            test=config.data.synth.test,
        )
        fmt = "cuhk-pedes"
    summary = prepare_task(source, fmt, config.out)
    write_config(config, config.out)
    return summary
