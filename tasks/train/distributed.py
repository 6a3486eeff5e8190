"""Data-parallel training across processes started by torchrun (DistributedDataParallel).

`torchrun --standalone --nproc_per_node N -m tbpr train ...` starts N processes with RANK, LOCAL_RANK
and WORLD_SIZE set; `process_group` joins them (NCCL on GPUs, gloo on CPUs). Every process trains on
its share of each global batch (`shard`), gradients are averaged, and only rank 0 evaluates, logs to
MLflow and writes checkpoints; what rank 0 decides (the run, each epoch's record, the result) reaches
the others by `share`. Without torchrun everything here is a no-op for one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from tasks.core.errors import TbprError

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the data-parallel processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that evaluates, logs and writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched_ranks() -> Ranks:
    """The ranks torchrun gave this process (RANK, WORLD_SIZE, LOCAL_RANK), or one process."""
    try:
        return Ranks(
            rank=int(os.environ.get("RANK", "0")),
            world=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
    except ValueError as exc:
        raise TbprError(f"bad RANK/WORLD_SIZE/LOCAL_RANK in the environment: {exc}") from None


@contextmanager
def process_group(device: torch.device) -> Iterator[Ranks]:
    """Join the torchrun process group for the duration (gloo on CPU, NCCL on CUDA); one process: no-op.
    A group that is already initialised (by the caller) is used as it is."""
    ranks = launched_ranks()
    if not ranks.distributed or dist.is_initialized():
        yield ranks
        return
    if device.type == "cuda":
        torch.cuda.set_device(ranks.local_rank)
    # rank 0 alone builds the feature cache, evaluates and registers while the others wait in a
    # collective: a long timeout instead of NCCL's 10 minutes
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=6))
    try:
        yield ranks
    finally:
        dist.destroy_process_group()


def process_device(device: torch.device, ranks: Ranks) -> torch.device:
    """Each process's own GPU (cuda:LOCAL_RANK) when training on CUDA with several processes."""
    if ranks.distributed and device.type == "cuda":
        return torch.device("cuda", ranks.local_rank)
    return device


def share(value: T, ranks: Ranks) -> T:
    """Rank 0's `value` on every process (any picklable object); `value` itself for one process."""
    if not ranks.distributed:
        return value
    box = [value if ranks.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def shard(rows: list[int], ranks: Ranks) -> list[int]:
    """This process's contiguous share of a global batch (its size a multiple of the world size)."""
    if not ranks.distributed:
        return rows
    size = len(rows) // ranks.world
    return rows[ranks.rank * size : (ranks.rank + 1) * size]


def mean_over_processes(values: dict[str, float], ranks: Ranks, device: torch.device) -> dict[str, float]:
    """Each value averaged over the processes (the same keys on every process)."""
    if not ranks.distributed or not values:
        return values
    keys = sorted(values)
    stacked = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(stacked)
    return {k: float(v) / ranks.world for k, v in zip(keys, stacked.tolist(), strict=True)}


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()
