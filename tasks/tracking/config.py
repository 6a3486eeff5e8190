"""Where MLflow records: SQLite under TBPR_HOME by default, or a server URI."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tasks.core.env import home


class TrackingConfig(BaseModel):
    """Where MLflow records: SQLite under TBPR_HOME by default, or a server URI."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_uri: str | None = None  # default sqlite:///$TBPR_HOME/mlflow.db
    artifact_root: str | None = None  # default $TBPR_HOME/mlartifacts (new experiments only)
    experiment: str | None = None  # default tbpr/<dataset>

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{home().mlflow_db}"

    def experiment_artifact_location(self, experiment: str) -> str:
        root = self.artifact_root or home().mlartifacts.as_uri()
        return f"{root.rstrip('/')}/{experiment}"

    def sqlite_file(self) -> Path | None:
        """The SQLite file behind the tracking URI, or None for a tracking server."""
        uri = self.resolved_tracking_uri()
        return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
