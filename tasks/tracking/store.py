"""The MLflow client, in one module: experiments, runs, params, metrics, artifacts, registry, champion.

Everything goes through an explicit `MlflowClient` built from a `TrackingConfig` (no global tracking
URI, no active-run stack), so threads of a flow can track different runs side by side.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from tasks.core.env import configure_offline, home
from tasks.core.errors import TbprError
from tasks.tracking.config import TrackingConfig
from tasks.tracking.names import (
    CHAMPION,
    CHECKPOINT_ARTIFACT,
    TAG_DATASET,
    TAG_GIT_SHA,
    TAG_VARIANT,
    VERSION_DATA,
    VERSION_VAL_QUERIES,
    VERSION_VAL_R1,
    model_name,
)
from tasks.tracking.selection import beats_champion
from tbpr_models.checkpoint import is_checkpoint
from tbpr_models.registry import VARIANTS

log = logging.getLogger(__name__)

_BATCH = 100  # MLflow's limit of params per log_batch call


def git_sha() -> str:
    """The commit of the checkout this code runs from, or "unknown" outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _sqlite_client(uri: str, database: Path) -> MlflowClient:
    """A client on a SQLite store, built under a file lock: building it creates and migrates the schema,
    and processes starting together otherwise race on `CREATE TABLE` ("table datasets already exists")."""
    database.parent.mkdir(parents=True, exist_ok=True)
    # MLflow 3 makes the folder of the URI's path without unquoting it: with a `?` or `%` in the path,
    # that is a second, empty folder beside the real one, removed again below
    stray = _missing_folders(Path(uri.removeprefix("sqlite:///")).parent)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_registered_models(max_results=1)  # the registry store initialises on first use
        for folder in stray:
            with contextlib.suppress(OSError):  # not empty: not MLflow's
                folder.rmdir()
        return client


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


@dataclass(frozen=True)
class Version:
    """A registered model version and what its val R1 was measured on."""

    name: str
    version: str
    val_r1: float
    dataset: str  # "" when the version predates these tags
    data: str  # DATA's content hash ("": unknown)
    val_queries: int  # the val split's captions (0: unknown)

    @property
    def population(self) -> tuple[str, str]:
        """What its val R1 can be compared with: versions of the same dataset and DATA."""
        return self.dataset, self.data

    def describe(self) -> str:
        on = f"{self.dataset or 'unknown data'}" + (f" {self.data[:15]}" if self.data else "")
        return f"{self.name} v{self.version} (val R1 {self.val_r1:.2f} on {on}, {self.val_queries:,} val queries)"


def is_control(name: str) -> bool:
    """Whether registered model `name` is a calibration control (`tbpr-control_top_half`): never a
    champion, whatever its score."""
    spec = VARIANTS.get(name.removeprefix(model_name("")))
    return spec is not None and bool(spec.head_cls.control)


class Tracker:
    """An MLflow client bound to one tracking configuration."""

    def __init__(self, tracking: TrackingConfig | None = None) -> None:
        configure_offline()
        self.config = tracking or TrackingConfig()
        uri, database = self.config.resolved_tracking_uri(), self.config.sqlite_file()
        if database is not None:
            self.client = _sqlite_client(uri, database)
        else:
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def experiment_id(self, dataset: str) -> str:
        """Id of experiment `tbpr/<dataset>` (or the configured name), created with an explicit artifact root."""
        name = self.config.experiment or f"tbpr/{dataset}"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name, self.config.experiment_artifact_location(name)))
        except MlflowException:  # created meanwhile by a concurrent task
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def start_run(
        self, experiment_id: str, run_name: str, tags: Mapping[str, str], parent_run_id: str | None = None
    ) -> str:
        """A new RUNNING run (a child of `parent_run_id` when given); returns its id."""
        all_tags = {TAG_GIT_SHA: git_sha(), **tags}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        return str(self.client.create_run(experiment_id, run_name=run_name, tags=all_tags).info.run_id)

    def reopen_run(self, run_id: str) -> None:
        self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def latest_unfinished_run(
        self,
        experiment_id: str,
        tags: Mapping[str, str],
        usable: Callable[[dict[str, str]], bool] | None = None,
    ) -> str | None:
        """The most recent run with these tags that did not finish (crashed, killed, failed) and whose
        tags pass `usable` (e.g. its checkpoint folder still exists), if any."""
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"{where} and attributes.status != 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=50,
        )
        for run in runs:
            if usable is None or usable(dict(run.data.tags)):
                return str(run.info.run_id)
        return None

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), _BATCH):
            self.client.log_batch(run_id, params=items[start : start + _BATCH])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifacts(self, run_id: str, local: Path, artifact_path: str | None = None) -> None:
        """Log a file or folder as artifacts of `run_id`. With a local artifact store, each logged file
        becomes a hard link to its source: the same bytes once on disk, not twice (checkpoints are
        written to new files, never in place, so the link keeps what was logged)."""
        if local.is_dir():
            self.client.log_artifacts(run_id, str(local), artifact_path)
        else:
            self.client.log_artifact(run_id, str(local), artifact_path)
        root = _local_path(self.client.get_run(run_id).info.artifact_uri)
        if root is None:
            return
        logged = root / artifact_path if artifact_path else root
        if local.is_file():
            _link_copy(local, logged / local.name)
            return
        for source in (p for p in local.rglob("*") if p.is_file()):  # a folder's files, as MLflow lays them
            _link_copy(source, logged / source.relative_to(local))

    def register_model(self, name: str, run_id: str, tags: Mapping[str, str]) -> str:
        """A new version of registered model `name` whose source is the run's checkpoint artifact."""
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{CHECKPOINT_ARTIFACT}"
        version = self.client.create_model_version(name, source, run_id=run_id, tags=dict(tags))
        return str(version.version)

    def champion(self, name: str) -> tuple[str, float] | None:
        """(version, val R1) of the current champion of `name`, or None when it has none."""
        found = self.champion_version(name)
        return None if found is None else (found.version, found.val_r1)

    def champion_version(self, name: str) -> Version | None:
        """The current champion of `name` with what it was measured on, or None when it has none."""
        try:
            version = self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            return None
        return _version(name, version)

    def champions(self) -> list[Version]:
        """The champion of every registered `tbpr-<variant>` model (controls never are)."""
        found = []
        for model in self.client.search_registered_models(filter_string=f"name LIKE '{model_name('')}%'"):
            champion = self.champion_version(model.name)
            if champion is not None and not is_control(champion.name):
                found.append(champion)
        return found

    def promote_if_better(self, name: str, version: str) -> bool:
        """Move the `champion` alias to `version` when it beats the champion on the same data: a higher
        val R1 on the same dataset and DATA (ties keep the champion). Val R1 of other data does not
        compare: a champion validated on other data is replaced only by a version validated on a larger
        val split (a 2-epoch model on a small quick-profile split never displaces the main job's), and a
        version without these tags (an older tbpr) is compared by val R1 alone. Controls never move it."""
        candidate = _version(name, self.client.get_model_version(name, version))
        if is_control(name):
            log.info("%s is a calibration control: never a champion", candidate.describe())
            return False
        current = self.champion_version(name)
        if current is not None and not beats_champion(candidate, current):
            log.info("%s does not replace champion %s", candidate.describe(), current.describe())
            return False
        self.client.set_registered_model_alias(name, CHAMPION, version)
        log.info("%s is the new champion", candidate.describe())
        return True

    def resolve_model(self, ref: str) -> tuple[Path, dict[str, Any]]:
        """A run id or `models:/name@alias` / `models:/name/version` -> (local checkpoint dir, run info)."""
        info: dict[str, Any] = {}
        try:
            if ref.startswith("models:/"):
                name, _, rest = ref.removeprefix("models:/").partition("@")
                if rest:
                    version = self.client.get_model_version_by_alias(name, rest)
                else:
                    name, _, number = name.partition("/")
                    version = self.client.get_model_version(name, number)
                info |= {"model_name": name, "model_version": str(version.version)}
                run_id, source = str(version.run_id), str(version.source)
            else:
                run_id = ref
                source = f"{self.client.get_run(ref).info.artifact_uri}/{CHECKPOINT_ARTIFACT}"
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            raise TbprError(
                f"no model found for {ref!r} ({exc.error_code}); pass a train run id or "
                "models:/tbpr-<variant>@champion from this tracking store"
            ) from exc
        local = self._local_artifacts(source, run_id)
        if not is_checkpoint(local):
            raise TbprError(f"{ref!r} has no checkpoint at {source}; was the run finished by `tbpr train`?")
        tags = run.data.tags
        info |= {
            "run_id": run_id,
            "variant": tags.get(TAG_VARIANT),
            "dataset": tags.get(TAG_DATASET),
            "experiment_id": run.info.experiment_id,
            "metrics": dict(run.data.metrics),
            "tags": dict(tags),
        }
        return local, info

    def _local_artifacts(self, source: str, run_id: str) -> Path:
        parsed = urlparse(source)
        if parsed.scheme in ("", "file"):
            return Path(unquote(parsed.path))
        from mlflow.artifacts import download_artifacts

        target = home().model_cache / run_id
        target.mkdir(parents=True, exist_ok=True)
        uri = self.config.resolved_tracking_uri()
        return Path(download_artifacts(artifact_uri=source, dst_path=str(target), tracking_uri=uri))


def _version(name: str, version: Any) -> Version:
    tags = version.tags
    try:
        queries = int(tags.get(VERSION_VAL_QUERIES, "0"))
    except ValueError:
        queries = 0
    return Version(
        name=name,
        version=str(version.version),
        val_r1=float(tags.get(VERSION_VAL_R1, "-inf")),
        dataset=str(tags.get(TAG_DATASET, "")),
        data=str(tags.get(VERSION_DATA, "")),
        val_queries=queries,
    )


def require_run(tracking: TrackingConfig | None, run_id: str, option: str) -> None:
    """A TbprError unless `run_id` is a run of the tracking store (a SQLite store that does not exist
    is not created to find out)."""
    config = tracking or TrackingConfig()
    database = config.sqlite_file()
    try:
        if database is None or database.is_file():
            Tracker(config).client.get_run(run_id)
            return
        reason = f"there is no MLflow store at {database} yet"
    except MlflowException as exc:
        reason = f"{exc.error_code} in {config.resolved_tracking_uri()}"
    raise TbprError(
        f"{option} {run_id!r} is not a run of this MLflow store ({reason}); pass the id of an existing "
        f"run (the pipeline's parent run) or leave {option} out"
    )


def promote_if_better(tracking: TrackingConfig | None, name: str, version: str) -> bool:
    """Move alias `champion` of model `name` to `version` when its val R1 beats the champion's."""
    return Tracker(tracking).promote_if_better(name, version)


def _local_path(uri: str) -> Path | None:
    """The folder of a `file:` (or plain path) artifact URI; None for a remote store."""
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None


def _link_copy(source: Path, copy: Path) -> None:
    """Replace `copy` (a byte-equal copy of `source`) by a hard link to `source`; leave it where a link
    cannot be made (another file system, no permission)."""
    if not copy.is_file() or copy.stat().st_size != source.stat().st_size:
        return
    temporary = copy.with_name(f".{copy.name}.link")
    try:
        temporary.unlink(missing_ok=True)
        temporary.hardlink_to(source)
        temporary.replace(copy)
    except OSError:
        temporary.unlink(missing_ok=True)
