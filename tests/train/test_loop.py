"""End to end on the tiny DATA: an MLflow run with the named tags/metrics, a registered model, an exact
resume, selection on val R1, and the errors of bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient
from pydantic import ValidationError
from safetensors.torch import load_file

from tasks.cache.features import data_hash
from tasks.core.device import resolve_precision
from tasks.core.errors import TbprError
from tasks.data.reader import decode_image, load_prepared
from tasks.tracking.config import TrackingConfig
from tasks.tracking.models import resolve_checkpoint
from tasks.tracking.store import Tracker
from tasks.train.callbacks import config_hash
from tasks.train.config import TrainConfig
from tasks.train.evaluate import EvalSettings, evaluate_split
from tasks.train.loop import TrainResult, train_variant
from tasks.train.state import EpochRecord
from tbpr_models import ImageTransform, build_tokenizer, load_checkpoint, retrieval_metrics

TinyConfig = Callable[..., TrainConfig]
METRICS = ("R1", "R5", "R10", "mAP", "mINP")


class Interrupt(Exception):
    """Raised by a callback to stop a run after an epoch, as a crash would."""


@dataclass(frozen=True)
class Trained:
    result: TrainResult
    tracking: TrackingConfig
    config: TrainConfig


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> TrackingConfig:
    """A store of this module's own: the session's store holds other tests' champions, validated on
    larger val splits, which a tiny model may not displace (champions compare on the same data)."""
    root = tmp_path_factory.mktemp("loop-mlflow")
    return TrackingConfig(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=(root / "a").as_uri())


@pytest.fixture(scope="module")
def trained(
    tiny_data: Path,
    tracking: TrackingConfig,
    tiny_config: TinyConfig,
    tmp_path_factory: pytest.TempPathFactory,
) -> Trained:
    config = tiny_config(tmp_path_factory.mktemp("run_a"))
    return Trained(train_variant(tiny_data, config, tracking=tracking, progress=False), tracking, config)


def client(tracking: TrackingConfig) -> MlflowClient:
    uri = tracking.resolved_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_run_has_tags_params_metrics_and_registered_model(trained: Trained) -> None:
    mlflow = client(trained.tracking)
    run = mlflow.get_run(trained.result.run_id)
    assert run.info.status == "FINISHED"
    assert mlflow.get_experiment(run.info.experiment_id).name == "tbpr/tiny"
    tags = run.data.tags
    assert (tags["variant"], tags["dataset"], tags["stage"]) == ("global", "tiny", "train")
    assert len(tags["git_sha"]) in (40, len("unknown"))
    assert run.data.params["model.embed_dim"] == "32"
    assert run.data.params["model.text.kind"] == "small"
    assert run.data.params["model.num_classes"] == "6"  # the training identities
    assert float(run.data.params["train.lr"]) == trained.config.lr
    # `auto` precision is recorded as what ran on this machine, not as "auto"
    assert trained.config.precision == "auto"
    assert run.data.params["train.precision"] == resolve_precision("auto", torch.device("cpu"))
    for key in ("train/loss", "train/loss_sdm", "train/loss_id", "train/samples_per_s"):
        assert [m.step for m in mlflow.get_metric_history(run.info.run_id, key)] == [1, 2]
    val_r1 = {m.step: m.value for m in mlflow.get_metric_history(run.info.run_id, "val/R1")}
    assert sorted(val_r1) == [1, 2]
    for name in METRICS:
        assert run.data.metrics[f"test/{name}"] == pytest.approx(trained.result.test_metrics[name])
    best = trained.result.best_epoch
    assert val_r1[best] == max(val_r1.values()) and trained.result.val_metrics["R1"] == val_r1[best]
    assert {a.path for a in mlflow.list_artifacts(run.info.run_id, "checkpoint")} == {
        "checkpoint/model.safetensors", "checkpoint/config.json",
    }  # fmt: skip
    versions = mlflow.search_model_versions(f"run_id = '{run.info.run_id}'")
    assert [(v.name, str(v.version)) for v in versions] == [("tbpr-global", trained.result.model_version)]


def test_resolve_model_by_run_id_and_champion_alias(trained: Trained, tiny_data: Path) -> None:
    by_run, info = resolve_checkpoint(trained.result.run_id, trained.tracking)
    assert info["run_id"] == trained.result.run_id and info["variant"] == "global"
    assert trained.result.promoted  # the first version of tbpr-global becomes its champion
    by_alias, alias_info = resolve_checkpoint("models:/tbpr-global@champion", trained.tracking)
    assert by_alias == by_run and alias_info["model_version"] == trained.result.model_version
    champion = Tracker(trained.tracking).champion_version("tbpr-global")  # what its val R1 was measured on
    prepared = load_prepared(tiny_data)
    assert champion is not None and champion.val_queries == len(prepared.splits["val"].caption_ids) > 0
    assert champion.data == data_hash(prepared) and champion.dataset == prepared.dataset
    logged = load_file(str(by_run / "model.safetensors"))
    selected = load_file(str(trained.result.checkpoint_dir / "model.safetensors"))
    assert logged.keys() == selected.keys() and all(torch.equal(logged[k], selected[k]) for k in logged)


def test_test_metrics_match_a_direct_computation(trained: Trained, tiny_data: Path) -> None:
    model = load_checkpoint(trained.result.checkpoint_dir)
    test = load_prepared(tiny_data).splits["test"]
    tokenize = build_tokenizer(model.config.text)
    transform = ImageTransform(64, 32, train=False)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        pixels = torch.stack([transform(decode_image(b.as_py())) for b in test.images])  # (G, 3, H, W)
        images = model.encode_images(pixels)
        texts = model.encode_texts(*tokenize(test.texts))
        similarity = model.similarity(texts, images).float()  # (Q, G)
    expected = retrieval_metrics(similarity, test.caption_pids, test.image_pids)
    assert trained.result.test_metrics == pytest.approx(expected, abs=1e-6)
    again = evaluate_split(model, test, tokenize, transform, EvalSettings(torch.device("cpu"), query_block=2))
    assert again == pytest.approx(trained.result.test_metrics)


def test_resume_gives_the_weights_of_an_uninterrupted_run(
    tiny_config: TinyConfig, trained: Trained, tiny_data: Path, tmp_path: Path
) -> None:
    config = tiny_config(tmp_path / "run_b")
    seen: list[int] = []

    def stop_after_first(record: EpochRecord) -> None:
        seen.append(record.epoch)
        raise Interrupt

    with pytest.raises(Interrupt):
        train_variant(
            tiny_data, config, tracking=trained.tracking, progress=False, on_epoch_end=stop_after_first
        )
    mlflow = client(trained.tracking)
    interrupted = mlflow.search_runs(
        [mlflow.get_run(trained.result.run_id).info.experiment_id], "attributes.status = 'FAILED'"
    )
    assert seen == [1] and len(interrupted) == 1
    half_written = tmp_path / "run_b" / ".epoch_002.tmp"  # as a kill during epoch 2's checkpoint leaves it
    half_written.mkdir()
    (half_written / "model.safetensors").write_bytes(b"half")
    resumed = train_variant(tiny_data, config, tracking=trained.tracking, resume=True, progress=False)
    assert not half_written.exists()  # no debris: the resumed epoch 2 was staged afresh
    assert resumed.run_id == interrupted[0].info.run_id
    assert mlflow.get_run(resumed.run_id).info.status == "FINISHED"
    assert trained.config.output_dir is not None
    a = load_file(str(trained.config.output_dir / "epoch_002" / "model.safetensors"))
    b = load_file(str(tmp_path / "run_b" / "epoch_002" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert resumed.val_metrics == trained.result.val_metrics
    assert [m.step for m in mlflow.get_metric_history(resumed.run_id, "val/R1")] == [1, 2]


def test_resume_key_follows_the_data_content_not_its_path(
    tiny_config: TinyConfig, tiny_data: Path, tmp_path: Path
) -> None:
    # DATA re-prepared at the same path from other sources must not resume the old run (it crashed on a
    # size mismatch); the same content elsewhere is the same run's data
    config = tiny_config(tmp_path / "out")
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data, copy)
    before = config_hash(config, load_prepared(copy))
    assert before == config_hash(config, load_prepared(tiny_data))
    table = pq.read_table(copy / "captions.parquet")
    texts = [text + " again" for text in table.column("text").to_pylist()]
    pq.write_table(
        table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts)),
        copy / "captions.parquet",
    )
    assert config_hash(config, load_prepared(copy)) != before


def test_a_new_run_refuses_an_output_dir_holding_an_earlier_runs_epochs(
    tiny_config: TinyConfig, trained: Trained, tiny_data: Path
) -> None:
    """It would continue from them silently (a different config, another seed's weights): that is what
    --resume is for; the folder and the store are left as they were."""
    assert trained.config.output_dir is not None
    before = sorted(p.name for p in trained.config.output_dir.iterdir())
    runs = len(
        client(trained.tracking).search_runs(
            [e.experiment_id for e in client(trained.tracking).search_experiments()]
        )
    )
    with pytest.raises(
        TbprError, match=re.escape("holds the checkpoints of an earlier run (epoch_002/); pass --resume")
    ):
        train_variant(
            tiny_data,
            trained.config.model_copy(update={"seed": 5}),
            tracking=trained.tracking,
            progress=False,
        )
    assert sorted(p.name for p in trained.config.output_dir.iterdir()) == before
    assert (
        len(
            client(trained.tracking).search_runs(
                [e.experiment_id for e in client(trained.tracking).search_experiments()]
            )
        )
        == runs
    )


def test_identity_sampler_and_time_budget(
    tiny_config: TinyConfig, tiny_data: Path, trained: Trained, tmp_path: Path
) -> None:
    config = tiny_config(
        tmp_path, sampler="identity", captions_per_identity=2, epochs=3, time_budget_minutes=1e-6
    )
    result = train_variant(tiny_data, config, tracking=trained.tracking, progress=False)
    history = client(trained.tracking).get_metric_history(result.run_id, "val/R1")
    assert [m.step for m in history] == [1] and result.best_epoch == 1  # stopped after the first epoch
    # a run the clock cut says so: its result depends on the machine's speed
    tags = client(trained.tracking).get_run(result.run_id).data.tags
    assert result.stop_reason == tags["stop_reason"] == "budget" and tags["epochs_run"] == "1"


def test_training_stops_on_a_val_plateau(
    tiny_config: TinyConfig, tiny_data: Path, trained: Trained, tmp_path: Path
) -> None:
    # at a vanishing learning rate val R1 never improves on epoch 1: patience 2 stops after epoch 3
    config = tiny_config(tmp_path, epochs=6, lr=1e-12, patience=2)
    result = train_variant(tiny_data, config, tracking=trained.tracking, progress=False)
    history = client(trained.tracking).get_metric_history(result.run_id, "val/R1")
    assert [m.step for m in history] == [1, 2, 3] and result.epochs == 3
    assert len({m.value for m in history}) == 1 and result.best_epoch == 1
    assert result.stop_reason == "plateau" and result.val_curve == tuple(m.value for m in history)
    tags = client(trained.tracking).get_run(result.run_id).data.tags
    assert tags["stop_reason"] == "plateau" and tags["epochs_run"] == "3"


def test_a_run_that_ran_every_epoch_says_so(trained: Trained) -> None:
    tags = client(trained.tracking).get_run(trained.result.run_id).data.tags
    assert trained.result.stop_reason == tags["stop_reason"] == "epochs"
    assert trained.result.epochs == trained.config.epochs == int(tags["epochs_run"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"variant": "no_such_variant"}, "no_such_variant"),
        ({"model": {"no_such_field": 1}}, "no_such_field"),
        ({"sampler": "identity", "captions_per_identity": 4}, "captions_per_identity"),
    ],
)
def test_bad_settings_are_refused_when_the_config_is_loaded(
    tiny_config: TinyConfig, tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        tiny_config(tmp_path, **changes)


def test_settings_that_do_not_fit_the_data_raise_tbpr_error(
    tiny_config: TinyConfig, tiny_data: Path, trained: Trained, tmp_path: Path
) -> None:
    with pytest.raises(TbprError, match="batch_size"):
        train_variant(
            tiny_data, tiny_config(tmp_path, batch_size=64), tracking=trained.tracking, progress=False
        )


def test_missing_data_raises(tiny_config: TinyConfig, tmp_path: Path, trained: Trained) -> None:
    (tmp_path / "no_data").mkdir()  # a folder without DATA's files
    with pytest.raises(TbprError, match=r"images\.parquet"):
        train_variant(
            tmp_path / "no_data", tiny_config(tmp_path / "out"), tracking=trained.tracking, progress=False
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_raises(
    tiny_config: TinyConfig, tiny_data: Path, trained: Trained, tmp_path: Path
) -> None:
    with pytest.raises(TbprError, match="cuda"):
        train_variant(
            tiny_data, tiny_config(tmp_path, device="cuda"), tracking=trained.tracking, progress=False
        )


def test_cli_missing_data_exits_2_without_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tbpr.cli", "train", str(tmp_path / "nope"), "--variant", "global"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "tbpr prepare" in done.stderr and "Traceback" not in done.stderr + done.stdout


@pytest.mark.slow
def test_cli_trains_and_prints_the_run_id_last(
    tiny_config: TinyConfig, tiny_data: Path, tmp_path: Path
) -> None:
    settings = [
        f"--set=model={json.dumps(tiny_config(tmp_path).model)}",
        "--set=batch_size=4",
        "--set=eval_batch_size=8",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "tbpr.cli", "train", str(tiny_data), "--variant", "global", "--epochs", "1",
         "--device", "cpu", "--no-progress", *settings],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TBPR_HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    checkpoint, info = resolve_checkpoint(
        run_id, TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    )
    assert info["variant"] == "global" and checkpoint.is_relative_to(tmp_path / "mlartifacts")


def test_a_finished_run_keeps_no_optimizer_state_and_accounts_for_its_time(trained: Trained) -> None:
    folder = trained.result.checkpoint_dir.parent
    epochs = sorted(folder.glob("epoch_[0-9][0-9][0-9]"))
    assert epochs and all((e / "model.safetensors").is_file() for e in epochs)
    assert not list(folder.glob("epoch_*/train_state.safetensors"))  # never resumed: dropped at the end
    phases = trained.result.phases
    assert set(phases) == {"build", "steps", "val", "checkpoint", "finish"} and min(phases.values()) > 0
    metrics = client(trained.tracking).get_run(trained.result.run_id).data.metrics
    assert metrics["time/steps"] == pytest.approx(phases["steps"])
    assert 0.0 < trained.result.overhead < 1.0
    summary = trained.result.phase_summary()  # phases under 0.05 s are left out of the line
    assert summary.startswith(f"{trained.result.wall_seconds:.1f} s: ") and " steps " in summary


def test_only_the_last_kept_epoch_keeps_its_optimizer_state(tmp_path: Path) -> None:
    from tasks.train.state import STATE_TENSORS, prune_epoch_dirs

    for epoch in (1, 2, 3):
        (tmp_path / f"epoch_{epoch:03d}").mkdir()
        (tmp_path / f"epoch_{epoch:03d}" / STATE_TENSORS).write_bytes(b"x")
    prune_epoch_dirs(tmp_path, keep={1, 3})  # best 1, last 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_001", "epoch_003"]
    assert not (tmp_path / "epoch_001" / STATE_TENSORS).exists()
    assert (tmp_path / "epoch_003" / STATE_TENSORS).exists()
