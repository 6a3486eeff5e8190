"""Task runner by configuration: Prefect's thread pool, its process pool, or Dask (local cluster or a
scheduler)."""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from flows.config import RunnerConfig
from tasks.core.device import set_threads
from tasks.core.env import configure_logging


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
    if config.kind == "process":
        # each worker process computes with its own torch/FAISS threads: two 1-thread trainings on two
        # cores outrun one 2-thread training whose every small op waits for both (README "Time and storage")
        level = logging.getLogger().getEffectiveLevel()
        return ProcessPoolTaskRunner(
            max_workers=config.workers,
            initializer=start_worker,
            initargs=(config.threads_per_worker, level, api_url()),
        )
    return ThreadPoolTaskRunner(max_workers=config.workers)


def api_url() -> str | None:
    """The Prefect API this process talks to, the temporary server of `tbpr run` included (None: none
    is set up yet). A worker process told nothing would start a temporary server of its own."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url) if client.api_url else None


def start_worker(threads: int, level: int, api: str | None) -> None:
    """A process pool worker's set-up: the flow's Prefect API (`api`), its compute threads, and the
    library's log lines (each epoch, each run's time) shown as the CLI shows them, marked with the
    worker's process id."""
    if api and not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_API_URL"] = api
    set_threads(threads)
    if not logging.getLogger().handlers:
        configure_logging(level, prefix="[worker %(process)d] ")


def scoring_runner(config: RunnerConfig) -> TaskRunner[Any]:
    """The runner of a pipeline's scoring flows: `config`'s, except that a process pool becomes one
    thread. Each model's scoring flow is seconds of work over memory-mapped EMBs; a pool of fresh
    processes per flow spent longer starting and importing than scoring (2 of 10 variants took 163 s
    against 161 s for all 10 on one thread, measured on 2 cores)."""
    if config.kind == "process":
        return ThreadPoolTaskRunner(max_workers=1)
    return task_runner(config)
