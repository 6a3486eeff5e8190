"""Process-wide defaults (offline, no telemetry) and the TBPR_HOME layout. Applied by entry points and
the tracking client, never at import."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    # Prefect's ephemeral server can take longer than its default 20 s to start on a busy machine
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def configure_offline() -> None:
    """Turn hub downloads and telemetry off unless the user already chose otherwise."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


def configure_logging(level: int = logging.INFO, prefix: str = "") -> None:
    """Log lines as the CLI shows them: rich, message only, `prefix` before each (a worker process
    marks its lines), Prefect's per-request httpx lines off."""
    from rich.logging import RichHandler

    handler = RichHandler(show_path=False, show_time=False)
    logging.basicConfig(level=level, format=f"{prefix}%(message)s", handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Prefect's API calls, one line each at INFO


def tbpr_home() -> Path:
    """`TBPR_HOME`, default `./.tbpr`: data, runs, mlflow.db and warehouse.duckdb live here."""
    return Path(os.environ.get("TBPR_HOME", ".tbpr")).resolve()


@dataclass(frozen=True)
class Home:
    """What lives under TBPR_HOME (README, "Two commands")."""

    root: Path

    @property
    def data(self) -> Path:
        """Prepared DATA folders, one per source."""
        return self.root / "data"

    def prepared(self, source: Path, fmt: str) -> Path:
        """The DATA folder of `source` prepared in format `fmt`: `data/<source folder name>-<fmt>`."""
        return self.data / f"{source.name}-{fmt}"

    @property
    def runs(self) -> Path:
        """Pipeline runs (`<time>-<name>/`) and standalone trainings (`train/<run id>/`)."""
        return self.root / "runs"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def feature_cache(self) -> Path:
        """Frozen encoder outputs, one folder per cache key (`tasks.cache`)."""
        return self.root / "cache" / "features"

    @property
    def model_cache(self) -> Path:
        """Checkpoints downloaded from a remote artifact store."""
        return self.root / "cache" / "models"

    def disk(self) -> dict[str, int]:
        """Bytes on disk of each top-level entry (folders with everything under them), as `du` counts
        them: allocated blocks, a file hard-linked in two places (an MLflow artefact and its run
        folder's checkpoint) once, under the first entry by name. Empty when TBPR_HOME does not exist."""
        seen: set[tuple[int, int]] = set()

        def used(path: Path) -> int:
            stat = path.lstat()
            if (stat.st_dev, stat.st_ino) in seen:
                return 0
            seen.add((stat.st_dev, stat.st_ino))
            return stat.st_blocks * 512

        parts: dict[str, int] = {}
        for entry in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            below = entry.rglob("*") if entry.is_dir() and not entry.is_symlink() else []
            parts[entry.name] = used(entry) + sum(used(path) for path in below)
        return parts


def home() -> Home:
    """The layout of the current `TBPR_HOME`."""
    return Home(tbpr_home())
