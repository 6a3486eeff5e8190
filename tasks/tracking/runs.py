"""The pipeline's own MLflow run: a parent run whose children are the trainings and scoring jobs.

Thin helpers over `tasks.tracking.store.Tracker` (the only MLflow client), for the pipeline flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tasks.tracking.config import TrackingConfig
from tasks.tracking.names import STAGE_PIPELINE, TAG_DATASET, TAG_STAGE
from tasks.tracking.store import Tracker


def open_parent_run(tracking: TrackingConfig, dataset: str, name: str, params: Mapping[str, str]) -> str:
    """A RUNNING run tagged stage=pipeline in `tbpr/<dataset>`, with the flattened run config as params."""
    tracker = Tracker(tracking)
    run_id = tracker.start_run(
        tracker.experiment_id(dataset), name, {TAG_STAGE: STAGE_PIPELINE, TAG_DATASET: dataset}
    )
    tracker.log_params(run_id, params)
    return run_id


def close_run(tracking: TrackingConfig, run_id: str, failed: bool) -> None:
    Tracker(tracking).end_run(run_id, "FAILED" if failed else "FINISHED")


def log_files(tracking: TrackingConfig, run_id: str, files: list[Path], artifact_path: str) -> None:
    """Log local files (pictures, config.json) as artifacts of a run."""
    tracker = Tracker(tracking)
    for path in files:
        tracker.log_artifacts(run_id, path, artifact_path)
