"""Task runner by configuration: Prefect's thread pool, or Dask (local cluster or a scheduler)."""

from __future__ import annotations

from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.config import RunnerConfig


def task_runner(config: RunnerConfig) -> TaskRunner[Any]:
    """The task runner that `config` describes (Dask imports only when asked for)."""
    if config.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if config.address:
            return DaskTaskRunner(address=config.address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": config.workers,
                "threads_per_worker": config.threads_per_worker,
                "processes": True,
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner(max_workers=config.workers)
