"""tbpr: text-based person re-identification, from dataset to leaderboard. This package is the CLI
only (`tbpr.cli`); the pipeline is in `flows` (Prefect), `tasks` (stages) and `tbpr_models` (torch)."""

from tasks.core.version import __version__

__all__ = ["__version__"]
