"""What happens around the training loop, as callbacks: the loop (`tasks.train.loop`) only trains,
evaluates val and writes checkpoints; a `TrainCallback` sees each finished epoch and the tested
result. `MlflowRun` is the one that tracks: it opens (or, resuming, reopens) the MLflow run, logs
params, per-epoch and test metrics, the selected checkpoint and the run config as artifacts, tags how
the run ended, registers `tbpr-<variant>` and offers it for `champion` (`tasks.tracking.selection`
decides), and ends the run FINISHED, FAILED or KILLED. A callback of your own is a subclass that
overrides what it needs (`tests/train/test_callbacks.py` adds one).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.cache.features import data_hash
from tasks.core.settings import flatten_params
from tasks.data.reader import PreparedData
from tasks.tracking import names
from tasks.tracking.store import Tracker
from tasks.train.config import RUNTIME_FIELDS, TrainConfig
from tasks.train.result import TrainResult
from tasks.train.state import TRAIN_CONFIG, EpochRecord, last_complete_epoch
from tbpr_models import parameter_counts
from tbpr_models.checkpoint import CONFIG_FILE, ENCODERS_DIR, WEIGHTS_FILE

if TYPE_CHECKING:  # the loop imports this module
    from tasks.train.loop import _Trainer

log = logging.getLogger(__name__)


def config_hash(config: TrainConfig, data: PreparedData) -> str:
    """Identity of a run for resuming: everything that changes the weights, and the data's content (not its
    path: DATA re-prepared at the same path from other sources is another run's data)."""
    semantic = config.model_dump(mode="json", exclude=set(RUNTIME_FIELDS))
    blob = json.dumps({"config": semantic, "data": data_hash(data)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class TrainCallback:
    """Hooks of one training call, on the process that writes (rank 0); each does nothing here."""

    def on_epoch_end(self, trainer: _Trainer, record: EpochRecord) -> None:
        """After an epoch's checkpoint is written (`record`: losses, val metrics, speed)."""

    def on_finish(self, trainer: _Trainer, result: TrainResult) -> TrainResult:
        """After the selected epoch is tested; may return the result with more filled in."""
        return result

    def on_timed(self, trainer: _Trainer, result: TrainResult) -> None:
        """Last: `result.phases` holds where the call's time went."""


class EpochHook(TrainCallback):
    """A plain function called with each epoch's record (`train_variant(on_epoch_end=...)`)."""

    def __init__(self, function: Callable[[EpochRecord], None]) -> None:
        self.function = function

    def on_epoch_end(self, trainer: _Trainer, record: EpochRecord) -> None:
        self.function(record)


class MlflowRun(TrainCallback):
    """The MLflow run of one training call, from its start to its registered model."""

    def __init__(self, tracker: Tracker, resume: bool, parent_run_id: str | None, promote: bool) -> None:
        self.tracker, self.resume, self.parent_run_id, self.promote = tracker, resume, parent_run_id, promote
        self.run_id = ""

    def open(self, trainer: _Trainer) -> tuple[str, Path]:
        """(run id, output folder): the latest unfinished run of this config when resuming (its folder
        still there), else a new run with its params."""
        config, data = trainer.config, trainer.data
        tags = {
            names.TAG_VARIANT: config.variant,
            names.TAG_DATASET: data.dataset,
            names.TAG_STAGE: names.STAGE_TRAIN,
            names.TAG_CONFIG_HASH: config_hash(config, data),
        }
        experiment = self.tracker.experiment_id(data.dataset)

        def usable(run_tags: dict[str, str]) -> bool:  # a run that failed before its folder existed
            folder = run_tags.get(names.TAG_CHECKPOINT_DIR)
            return folder is not None and Path(folder).is_dir()

        found = self.tracker.latest_unfinished_run(experiment, tags, usable) if self.resume else None
        if found:
            self.run_id = found
            out = Path(self.tracker.run_tags(found)[names.TAG_CHECKPOINT_DIR])
            self.tracker.reopen_run(found)
            log.info("resuming run %s from %s (epoch %d done)", found, out, last_complete_epoch(out))
            return found, out
        if self.resume:
            log.info("no unfinished %s run of this config to resume; starting a new one", config.variant)
        if config.output_dir is not None:  # refused before a run is started
            trainer.check_new_output()
        self.run_id = self.tracker.start_run(experiment, f"train-{config.variant}", tags, self.parent_run_id)
        out = trainer.new_output(self.run_id)
        self.tracker.set_tag(self.run_id, names.TAG_CHECKPOINT_DIR, str(out))
        params = flatten_params(trainer.model_config.to_dict(), "model.") | flatten_params(
            config.model_dump(mode="json", exclude={"model"}), "train."
        )
        params |= flatten_params(parameter_counts(trainer.model_config))  # trainable_params, head_params
        self.tracker.log_params(self.run_id, params)
        return self.run_id, out

    def on_epoch_end(self, trainer: _Trainer, record: EpochRecord) -> None:
        metrics = {
            names.TRAIN_LOSS: record.loss,
            names.TRAIN_SPEED: record.samples_per_s,
            names.TRAIN_PEAK_MEMORY: record.peak_memory_mb,
        }
        metrics |= {names.metric_key("train", f"loss_{k}"): v for k, v in record.losses.items()}
        metrics |= {names.metric_key("val", k): v for k, v in record.val.items()}
        self.tracker.log_metrics(self.run_id, metrics, step=record.epoch)

    def on_finish(self, trainer: _Trainer, result: TrainResult) -> TrainResult:
        """Test metrics, the selected checkpoint and the config as artifacts, how the run ended, and the
        registered version (offered for champion unless `promote` is off)."""
        run_id, best_dir, best = self.run_id, result.checkpoint_dir, result.best_epoch
        test = {names.metric_key("test", k): v for k, v in result.test_metrics.items()}
        self.tracker.log_metrics(run_id, test, step=best)
        for file in (WEIGHTS_FILE, CONFIG_FILE):
            self.tracker.log_artifacts(run_id, best_dir / file, names.CHECKPOINT_ARTIFACT)
        if (best_dir / ENCODERS_DIR).is_dir():  # the copies of a CLIP (or hf_vision) folder
            self.tracker.log_artifacts(
                run_id, best_dir / ENCODERS_DIR, f"{names.CHECKPOINT_ARTIFACT}/{ENCODERS_DIR}"
            )
        self.tracker.log_artifacts(run_id, trainer.out / TRAIN_CONFIG)
        self.tracker.set_tag(run_id, names.TAG_BEST_EPOCH, str(best))
        self.tracker.set_tag(run_id, names.TAG_STOP_REASON, result.stop_reason)
        self.tracker.set_tag(run_id, names.TAG_EPOCHS_RUN, str(result.epochs))
        name = names.model_name(result.variant)
        data = trainer.data
        version = self.tracker.register_model(
            name,
            run_id,
            {
                names.VERSION_VAL_R1: str(result.val_metrics["R1"]),
                names.TAG_DATASET: data.dataset,
                names.VERSION_DATA: data_hash(data),
                names.VERSION_VAL_QUERIES: str(len(data.splits["val"].caption_ids)),
                "epoch": str(best),
            },
        )
        promoted = self.promote and self.tracker.promote_if_better(name, version)
        return replace(result, model_version=version, promoted=promoted)

    def on_timed(self, trainer: _Trainer, result: TrainResult) -> None:
        times = {names.metric_key("time", k): v for k, v in result.phases.items()}
        self.tracker.log_metrics(self.run_id, times, step=result.best_epoch)

    def fail(self, exc: BaseException) -> None:
        """End an opened run FAILED, or KILLED on Ctrl-C or SIGTERM (resumable)."""
        if self.run_id:
            self.tracker.end_run(self.run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")

    def end(self) -> None:
        self.tracker.end_run(self.run_id)
