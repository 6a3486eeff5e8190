"""A trainer callback added in one file: it sees every epoch and the tested result, beside MlflowRun."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.tracking.config import TrackingConfig
from tasks.train.callbacks import TrainCallback
from tasks.train.loop import _Trainer, train_variant
from tasks.train.result import TrainResult
from tasks.train.state import EpochRecord


class Recorder(TrainCallback):
    """Keeps each epoch's val R1 and the result it was handed, and stamps the result."""

    def __init__(self) -> None:
        self.val_r1: list[float] = []
        self.finished: TrainResult | None = None
        self.timed = False

    def on_epoch_end(self, trainer: _Trainer, record: EpochRecord) -> None:
        assert (trainer.out / f"epoch_{record.epoch:03d}" / "model.safetensors").is_file()  # written before
        self.val_r1.append(record.val["R1"])

    def on_finish(self, trainer: _Trainer, result: TrainResult) -> TrainResult:
        self.finished = result
        return result

    def on_timed(self, trainer: _Trainer, result: TrainResult) -> None:
        self.timed = sum(result.phases.values()) > 0


def test_a_callback_sees_every_epoch_and_the_registered_result(
    tiny_data: Path, tiny_config: object, tmp_path: Path
) -> None:
    # a store of its own: the session's store holds other tests' champions
    uri, artifacts = f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri()
    recorder = Recorder()
    config = tiny_config(tmp_path / "run")  # type: ignore[operator]
    result = train_variant(
        tiny_data,
        config,
        tracking=TrackingConfig(tracking_uri=uri, artifact_root=artifacts),
        progress=False,
        callbacks=[recorder],
    )
    assert recorder.val_r1 == list(result.val_curve) and len(recorder.val_r1) == result.epochs
    assert recorder.finished is not None and recorder.timed
    # MlflowRun ran first: the callback after it sees the registered version
    assert recorder.finished.model_version == result.model_version != ""
    assert recorder.finished.test_metrics == pytest.approx(result.test_metrics)
