"""Tracking against a real MLflow store (SQLite in a temp folder): params, champion promotion."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.errors import TbprError
from tasks.core.settings import flatten_params
from tasks.tracking.config import TrackingConfig
from tasks.tracking.models import resolve_checkpoint
from tasks.tracking.names import (
    CHECKPOINT_ARTIFACT,
    TAG_DATASET,
    VERSION_DATA,
    VERSION_VAL_QUERIES,
    VERSION_VAL_R1,
)
from tasks.tracking.store import Tracker, promote_if_better
from tbpr_models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, is_checkpoint


@pytest.fixture(scope="module")
def tracker(tracking_uri: tuple[str, str]) -> Tracker:
    uri, artifacts = tracking_uri
    return Tracker(TrackingConfig(tracking_uri=uri, artifact_root=artifacts, experiment="tracking-tests"))


def registered_version(
    tracker: Tracker, name: str, val_r1: float, tmp_path: Path, data: dict[str, str] | None = None
) -> str:
    """A finished run with a checkpoint artifact, registered as a new version of `name` (`data`: the
    tags of what its val R1 was measured on, as training writes them)."""
    run_id = tracker.start_run(tracker.experiment_id("unused"), "train-x", {"variant": "x", "stage": "train"})
    for file in (CONFIG_FILE, WEIGHTS_FILE):  # what makes a folder a checkpoint (contents unused here)
        (tmp_path / file).write_text("{}")
        tracker.log_artifacts(run_id, tmp_path / file, CHECKPOINT_ARTIFACT)
    tracker.end_run(run_id)
    return tracker.register_model(name, run_id, {VERSION_VAL_R1: str(val_r1), **(data or {})})


def test_champion_moves_only_to_a_better_val_r1(tracker: Tracker, tmp_path: Path) -> None:
    name = "tbpr-promotion-test"
    first = registered_version(tracker, name, 50.0, tmp_path)
    assert promote_if_better(tracker.config, name, first)  # no champion yet
    worse = registered_version(tracker, name, 40.0, tmp_path)
    assert not promote_if_better(tracker.config, name, worse)
    tie = registered_version(tracker, name, 50.0, tmp_path)
    assert not promote_if_better(tracker.config, name, tie)
    assert tracker.champion(name) == (first, 50.0)
    better = registered_version(tracker, name, 61.5, tmp_path)
    assert promote_if_better(tracker.config, name, better)
    assert tracker.champion(name) == (better, 61.5)
    checkpoint, info = resolve_checkpoint(f"models:/{name}@champion", tracker.config)
    assert info["model_version"] == better and is_checkpoint(checkpoint)


def test_experiment_artifacts_go_under_the_configured_root(tracker: Tracker) -> None:
    experiment = tracker.client.get_experiment(tracker.experiment_id("unused"))
    assert experiment.name == "tracking-tests"
    assert experiment.artifact_location == f"{tracker.config.artifact_root}/tracking-tests"


def test_resolve_model_rejects_unknown_references(tracker: Tracker) -> None:
    with pytest.raises(TbprError, match="no model found"):
        resolve_checkpoint("0123456789abcdef0123456789abcdef", tracker.config)
    with pytest.raises(TbprError, match="no model found"):
        resolve_checkpoint("models:/tbpr-nothing@champion", tracker.config)


def test_flatten_params_uses_dotted_keys() -> None:
    flat = flatten_params(
        {"model": {"embed_dim": 32, "image": {"widths": [8, 16]}, "loss_weights": {}}, "lr": 0.1}
    )
    assert flat == {
        "model.embed_dim": "32",
        "model.image.widths": "[8, 16]",
        "model.loss_weights": "{}",
        "lr": "0.1",
    }


def test_processes_starting_together_share_one_new_sqlite_store(tmp_path: Path) -> None:
    """Without the schema lock, concurrent first runs fail with "table ... already exists"."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = (
        "import sys; from tasks.tracking.config import TrackingConfig; from tasks.tracking.store import Tracker; "
        "print(Tracker(TrackingConfig(tracking_uri=sys.argv[1])).experiment_id('race'))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], [err[-500:] for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1


@pytest.mark.parametrize("folder", ["a?b", "c#d", "e%41f"])
def test_a_tbpr_home_with_uri_characters_keeps_the_store_inside_it(
    folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default SQLite URI is quoted by SQLAlchemy (`?` would start a query string, `%41` read as
    `A`), the artifact root by pathlib, the warehouse's read of the store by sqlite's own URI rules."""
    from tasks.report.mlflow_tables import read_mlflow_tables

    home = tmp_path / folder
    monkeypatch.setenv("TBPR_HOME", str(home))
    tracker = Tracker()
    run_id = tracker.start_run(tracker.experiment_id("odd"), "r", {"stage": "score"})
    (tmp_path / "metrics.json").write_text("{}")
    tracker.log_artifacts(run_id, tmp_path / "metrics.json")
    tracker.end_run(run_id)
    assert (home / "mlflow.db").is_file() and tracker.config.sqlite_file() == home / "mlflow.db"
    assert list(home.glob("mlartifacts/**/metrics.json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folder, "metrics.json"])  # nothing beside
    runs = read_mlflow_tables(home / "mlflow.db")["runs_raw"]
    assert runs["run_id"].to_pylist() == [run_id]
    assert Tracker().client.get_run(run_id).info.status == "FINISHED"  # a new client finds the same store


def test_best_champion_is_the_registered_champion_of_best_val_r1(tmp_path: Path) -> None:
    from tasks.core.errors import TbprError
    from tasks.tracking.models import best_champion

    missing = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}")
    with pytest.raises(TbprError, match=r"no champion model is registered.*pass --run"):
        best_champion(missing)
    assert not (tmp_path / "none" / "mlflow.db").exists()  # not created to find out
    tracker = Tracker(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    with pytest.raises(TbprError, match="no champion model is registered"):
        best_champion(tracker.config)
    for name, r1 in (("tbpr-global", 30.0), ("tbpr-cross_scan", 42.5), ("tbpr-spatial", 12.0)):
        assert promote_if_better(tracker.config, name, registered_version(tracker, name, r1, tmp_path))
    registered_version(tracker, "tbpr-channel", 99.0, tmp_path)  # registered, never champion
    ref, reason = best_champion(tracker.config)
    assert ref == "models:/tbpr-cross_scan@champion"
    assert reason.startswith(
        "tbpr-cross_scan v1 (val R1 42.50 on unknown data, 0 val queries): the best of 3"
    )
    assert "(others: tbpr-global v1 30.00, tbpr-spatial v1 12.00)" in reason


# what training tags a version with: the main job's DATA (100 val identities) and the quick profile's
MAIN = {TAG_DATASET: "synth", VERSION_DATA: "sha256:main", VERSION_VAL_QUERIES: "624"}
QUICK = {TAG_DATASET: "synth", VERSION_DATA: "sha256:quick", VERSION_VAL_QUERIES: "48"}


def test_a_quick_profile_model_never_becomes_the_main_jobs_champion(tmp_path: Path) -> None:
    from tasks.tracking.models import best_champion

    tracker = Tracker(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))

    def register(name: str, r1: float, data: dict[str, str]) -> str:
        return registered_version(tracker, name, r1, tmp_path, data)

    main = register("tbpr-global", 40.0, MAIN)
    assert promote_if_better(tracker.config, "tbpr-global", main)
    quick = register("tbpr-global", 95.0, QUICK)  # 2 epochs on a tiny val split: a high, meaningless R1
    assert not promote_if_better(tracker.config, "tbpr-global", quick)
    assert tracker.champion("tbpr-global") == (main, 40.0)
    better = register("tbpr-global", 41.0, MAIN)  # the same data: val R1 decides
    assert promote_if_better(tracker.config, "tbpr-global", better)
    assert not promote_if_better(tracker.config, "tbpr-global", register("tbpr-global", 41.0, MAIN))  # a tie
    # a store where the quick profile ran first: the main job's model replaces its champion
    first = register("tbpr-spatial", 90.0, QUICK)
    assert promote_if_better(tracker.config, "tbpr-spatial", first)
    later = register("tbpr-spatial", 20.0, MAIN)
    assert promote_if_better(tracker.config, "tbpr-spatial", later)
    assert tracker.champion("tbpr-spatial") == (later, 20.0)
    assert not promote_if_better(tracker.config, "tbpr-spatial", register("tbpr-spatial", 99.0, QUICK))
    # a calibration control is registered, never champion
    control = register("tbpr-control_top_half", 99.0, MAIN)
    assert not promote_if_better(tracker.config, "tbpr-control_top_half", control)
    assert tracker.champion("tbpr-control_top_half") is None
    # a variant trained only by the quick profile has a champion, but it is not the default model
    assert promote_if_better(tracker.config, "tbpr-cross_scan", register("tbpr-cross_scan", 97.0, QUICK))
    ref, reason = best_champion(tracker.config)
    assert ref == "models:/tbpr-global@champion"
    assert reason.startswith(f"tbpr-global v{better} (val R1 41.00 on synth sha256:main, 624 val queries)")
    assert "the best of 2 champion(s) validated on that data (others: tbpr-spatial v2 20.00)" in reason
    assert "not compared" in reason and "tbpr-cross_scan v1 (val R1 97.00 on synth sha256:quick" in reason


def test_a_logged_file_is_one_copy_on_disk_linked_to_its_source(tracker: Tracker, tmp_path: Path) -> None:
    """A local artifact store holds a hard link to each logged file: the same bytes, stored once."""
    run_id = tracker.start_run(tracker.experiment_id("unused"), "train-link", {"stage": "train"})
    source = tmp_path / "model.safetensors"
    source.write_bytes(b"weights" * 1000)
    folder = tmp_path / "encoders"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.bin").write_bytes(b"a" * 100)
    tracker.log_artifacts(run_id, source, CHECKPOINT_ARTIFACT)
    tracker.log_artifacts(run_id, folder, f"{CHECKPOINT_ARTIFACT}/encoders")
    tracker.end_run(run_id)
    root = Path(tracker.client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    logged = root / CHECKPOINT_ARTIFACT / "model.safetensors"
    assert logged.read_bytes() == source.read_bytes() and logged.samefile(source)
    nested = root / CHECKPOINT_ARTIFACT / "encoders" / "sub" / "a.bin"
    assert nested.read_bytes() == b"a" * 100 and nested.samefile(folder / "sub" / "a.bin")
    source.unlink()  # the run folder's copy removed: the logged artifact stays
    assert logged.read_bytes() == b"weights" * 1000
