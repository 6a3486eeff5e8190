"""Process-wide defaults: offline, no telemetry, a home folder. Applied by entry points, never at import."""

from __future__ import annotations

import os
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


def tbpr_home() -> Path:
    """`TBPR_HOME`, default `./.tbpr`: data, runs, mlflow.db and warehouse.duckdb live here."""
    return Path(os.environ.get("TBPR_HOME", ".tbpr")).resolve()
