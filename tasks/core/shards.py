"""Galleries in shards: contiguous row ranges, and the Dask client that embedding and scoring run
their shards on (a scheduler the user runs, or a local cluster)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.core.errors import TbprError


@dataclass(frozen=True)
class Shard:
    """Gallery rows [start, stop)."""

    number: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def gallery_shards(num_images: int, shards: int) -> list[Shard]:
    """`shards` contiguous shards of near-equal size (no empty one: at most one per image)."""
    if shards < 1:
        raise TbprError(f"--shards must be at least 1 (got {shards})")
    count = min(shards, max(1, num_images))
    bounds = np.linspace(0, num_images, count + 1).round().astype(int)
    return [Shard(i, int(a), int(b)) for i, (a, b) in enumerate(itertools.pairwise(bounds))]


@contextmanager
def dask_client(shards: int, scheduler: str | None = None) -> Iterator[Any]:
    """A Dask client: of the scheduler at `scheduler` (e.g. tcp://10.0.0.5:8786), or of a local cluster
    of min(shards, CPUs) single-threaded worker processes started for the duration."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    workers = max(1, min(shards, os.cpu_count() or 1))
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
