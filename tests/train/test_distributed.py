"""Data-parallel training with torchrun on the CPU (gloo, 2 processes) against one process with the same
global batch: one MLflow run, the same losses and weights, and `--resume` continuing a one-process run.
Also gradient accumulation (against one batch of the accumulated size), fp16 with a gradient scaler and
the per-epoch peak memory metric, in one process.

Tolerance: float32 sums in another order (the gathered global batch, gradients averaged over
processes) give the same per-epoch losses within a relative 1e-5 and weights within 1e-5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from tasks.tracking import names
from tasks.tracking.config import TrackingConfig
from tasks.train.config import TrainConfig
from tasks.train.loop import train_variant
from tasks.train.state import EpochRecord

TinyConfig = Callable[..., TrainConfig]
RTOL = 1e-5


class Interrupt(Exception):
    """Raised by a callback to stop a run after an epoch, as a crash would."""


@pytest.fixture(scope="module")
def tracking(tracking_uri: tuple[str, str]) -> TrackingConfig:
    uri, artifacts = tracking_uri
    return TrackingConfig(tracking_uri=uri, artifact_root=artifacts)


@pytest.fixture
def ddp_config(tiny_config: TinyConfig, clip_model: dict[str, Any], tmp_path: Path) -> TrainConfig:
    """cross_scan (gathered local features, ranking loss over the global batch) with SDM and ID losses;
    fp32; identity batches of 4 identities x 2 captions; nothing random in the tiny CLIP's forward."""
    return tiny_config(
        tmp_path / "single",
        variant="cross_scan",
        model=clip_model,
        batch_size=8,
        sampler="identity",
        precision="fp32",
        num_workers=0,
        lr=3e-4,
    )


def torchrun(processes: int, home: Path, data: Path, config: TrainConfig, *extra: str) -> str:
    """`torchrun --standalone --nproc_per_node N -m tbpr train DATA ...` with `config`; the run id printed."""
    settings = config.model_dump(mode="json", exclude={"variant", "device", "output_dir"})
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
        "-m", "tbpr", "train", str(data), "--variant", config.variant, "--device", "cpu", "--no-progress",
        *sets, *extra,
    ]  # fmt: skip
    env = {**os.environ, "TBPR_HOME": str(home), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1]


def runs(home: Path) -> list[Any]:
    mlflow = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return mlflow.search_runs([e.experiment_id for e in mlflow.search_experiments()])


def losses(home: Path, run_id: str) -> list[float]:
    mlflow = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return [m.value for m in sorted(mlflow.get_metric_history(run_id, "train/loss"), key=lambda m: m.step)]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Every weight within RTOL, except the attention key biases: softmax ignores them, so their true
    gradient is zero and Adam turns float noise into lr-sized steps (up to 2e-2 relative here)."""
    assert a.keys() == b.keys()
    compared = [k for k in a if not k.endswith("self_attn.k_proj.bias")]
    assert len(compared) > 50
    for key in compared:
        torch.testing.assert_close(a[key], b[key], rtol=RTOL, atol=RTOL, msg=key)


@pytest.mark.slow
def test_two_processes_train_the_model_one_process_trains(
    ddp_config: TrainConfig, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    single_home, ddp_home = tmp_path / "home1", tmp_path / "home2"
    monkeypatch.setenv("TBPR_HOME", str(single_home))
    single = train_variant(tiny_data, ddp_config, progress=False)

    run_id = torchrun(2, ddp_home, tiny_data, ddp_config)
    (run,) = runs(ddp_home)  # one MLflow run, written by rank 0 alone
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    expected = losses(single_home, single.run_id)
    assert len(expected) == 2 and expected[0] != expected[1]
    assert losses(ddp_home, run_id) == pytest.approx(expected, rel=RTOL)
    assert run.data.metrics["test/R1"] == pytest.approx(single.test_metrics["R1"])
    folder = Path(run.data.tags[names.TAG_CHECKPOINT_DIR])
    assert_same_weights(weights(folder / "epoch_002"), weights(single.checkpoint_dir.parent / "epoch_002"))


@pytest.mark.slow
def test_torchrun_resume_continues_an_interrupted_run(
    ddp_config: TrainConfig, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("TBPR_HOME", str(home))
    reference = train_variant(
        tiny_data, ddp_config.model_copy(update={"output_dir": tmp_path / "reference"}), progress=False
    )

    def stop_after_first(record: EpochRecord) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        train_variant(
            tiny_data,
            ddp_config.model_copy(update={"output_dir": tmp_path / "interrupted"}),
            progress=False,
            on_epoch_end=stop_after_first,
        )
    interrupted = next(r for r in runs(home) if r.info.status == "FAILED")
    run_id = torchrun(2, home, tiny_data, ddp_config, "--resume")
    assert run_id == interrupted.info.run_id
    assert {r.info.run_id: r.info.status for r in runs(home)}[run_id] == "FINISHED"
    assert losses(home, run_id) == pytest.approx(losses(home, reference.run_id), rel=RTOL)
    assert_same_weights(
        weights(tmp_path / "interrupted" / "epoch_002"), weights(tmp_path / "reference" / "epoch_002")
    )


def test_gradient_accumulation_equals_one_batch_of_the_accumulated_size(
    tiny_config: TinyConfig,
    clip_model: dict[str, Any],
    tiny_data: Path,
    tmp_path: Path,
    tracking: TrackingConfig,
) -> None:
    """With the per-sample identity loss alone, two accumulated batches of 4 are one batch of 8 (the random
    sampler's order and each sample's augmentation do not depend on the batch size)."""
    common = {"model": {**clip_model, "loss_weights": {"sdm": 0.0}}, "precision": "fp32", "epochs": 1}
    whole = train_variant(
        tiny_data, tiny_config(tmp_path / "whole", batch_size=8, **common), tracking=tracking, progress=False
    )
    accumulated = train_variant(
        tiny_data,
        tiny_config(tmp_path / "acc", batch_size=4, grad_accumulation=2, **common),
        tracking=tracking,
        progress=False,
    )
    assert_same_weights(weights(whole.checkpoint_dir), weights(accumulated.checkpoint_dir))
    unaccumulated = train_variant(
        tiny_data, tiny_config(tmp_path / "small", batch_size=4, **common), tracking=tracking, progress=False
    )
    a, b = weights(whole.checkpoint_dir), weights(unaccumulated.checkpoint_dir)
    assert any(not torch.allclose(a[k], b[k], rtol=RTOL, atol=RTOL) for k in a)  # the check can fail


def test_fp16_trains_with_a_gradient_scaler_and_peak_memory_is_logged(
    tiny_config: TinyConfig,
    clip_model: dict[str, Any],
    tiny_data: Path,
    tmp_path: Path,
    tracking: TrackingConfig,
) -> None:
    config = tiny_config(tmp_path / "fp16", model=clip_model, batch_size=8, precision="fp16", epochs=1)
    result = train_variant(tiny_data, config, tracking=tracking, progress=False)
    mlflow = MlflowClient(tracking.resolved_tracking_uri())
    metrics = mlflow.get_run(result.run_id).data.metrics
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    before = weights(result.checkpoint_dir)
    saved = json.loads((result.checkpoint_dir / "train_state.json").read_text())["scaler"]
    assert "scale" in json.dumps(saved)  # the loss scaler resumes where it was
    assert all(torch.isfinite(t.float()).all() for t in before.values())
    # the epoch's peak resident memory: at least the weights it trained, at most the machine's memory
    weights_mb = sum(t.numel() * 4 for t in before.values()) / 2**20
    with open("/proc/meminfo") as meminfo:
        total_mb = int(meminfo.readline().split()[1]) / 1024  # MemTotal, kB
    assert weights_mb < metrics["train/peak_memory_mb"] < total_mb
