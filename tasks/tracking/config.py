"""Where MLflow records: SQLite under TBPR_HOME by default, or a server URI."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tasks.core.env import home


class TrackingConfig(BaseModel):
    """Where MLflow records: SQLite under TBPR_HOME by default, or a server URI."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    tracking_uri: str | None = None  # default sqlite:///$TBPR_HOME/mlflow.db
    artifact_root: str | None = None  # default $TBPR_HOME/mlartifacts (new experiments only)
    experiment: str | None = None  # default tbpr/<dataset>

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or sqlite_uri(home().mlflow_db)

    def experiment_artifact_location(self, experiment: str) -> str:
        root = self.artifact_root or home().mlartifacts.as_uri()
        return f"{root.rstrip('/')}/{experiment}"

    def sqlite_file(self) -> Path | None:
        """The SQLite file behind the tracking URI, or None for a tracking server."""
        uri = self.resolved_tracking_uri()
        if not uri.startswith("sqlite:///"):
            return None
        from sqlalchemy.engine import make_url

        return Path(str(make_url(uri).database))


def sqlite_uri(database: Path) -> str:
    """The SQLAlchemy URI of a SQLite file, its path quoted by SQLAlchemy itself (which MLflow's store
    unquotes back), so a `?`, `#` or `%41` in a folder name stays part of the path."""
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database=str(database)).render_as_string(hide_password=False)
