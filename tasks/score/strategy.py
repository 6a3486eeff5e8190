"""Scoring strategies by name: the base class, the registry, and the one result every strategy returns.

A strategy is a `Strategy` subclass registered with `register_strategy(MyStrategy())`: its `name` (the
plan's `strategy`), its `mode` (`exhaustive`, or `pruned` for everything with a first stage: what
metrics.json, MLflow and the warehouse call the job), `check` (its rules on the plan's options, run
by `ScorePlan`'s constructor) and `score` (one process: an opened EMB in, a `Scored` out). The runner
(`tasks.score.run`) does the rest the same way for every strategy: checks, per-query metrics, OUT,
MLflow. Built-ins: `tasks.score.strategies`. Dimension letters: Q queries, G gallery, P positives.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import numpy as np
import torch

from tasks.core.errors import TbprError
from tasks.embed.store import EmbeddingStore
from tasks.score.cost import WorkCounts
from tasks.score.ranking import Ranking
from tbpr_models import RetrievalModel

if TYPE_CHECKING:
    from tasks.score.plan import ScorePlan

ScoreMode = Literal["exhaustive", "pruned"]
SCORE_MODES: tuple[str, ...] = get_args(ScoreMode)


@dataclass(frozen=True)
class Scored:
    """What every strategy returns, in one process or in shards: the same fields, so every job records
    the same keys (`details`). `seconds` is the scoring span only: first stage and pair scoring, never
    model loading, a cluster's start or writing OUT."""

    ranking: Ranking  # (Q, G) gallery rows best first (sharded: the top T of each query)
    seconds: float
    pairs_scored: int  # pairs the scorer computed
    seconds_stage1: float | None = None  # the first stage's part of `seconds` (None: no first stage)
    pairs_stage1: int | None = None  # the cosines a flat first stage computes (hnsw, ivf: not counted)
    candidates_found: int | None = None  # first-stage candidates that were scored
    work: WorkCounts | None = None  # counted work per query (None: not counted, an external re-ranker)
    # (P,) query and (P,) 1-based rank of every (query, positive) pair, when `ranking` is cut (sharded);
    # None: read from the full ranking
    positives: tuple[np.ndarray, np.ndarray] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # the strategy's own details

    def details(self) -> dict[str, Any]:
        """metrics.json's details: the common keys (None where a key does not apply), counted work,
        then the strategy's own."""
        staged = self.seconds_stage1 is not None
        common = {
            "seconds_stage1": self.seconds_stage1,
            "seconds_rerank": self.seconds - self.seconds_stage1 if staged else None,  # type: ignore[operator]
            "pairs_stage1": self.pairs_stage1,
            "pairs_rerank": self.pairs_scored if staged else None,
            "candidates_found": self.candidates_found,
        }
        return common | (self.work.details() if self.work else {}) | dict(self.extra)


@dataclass
class LocalJob:
    """A plan run from this process: its EMB (opened on first use: the shard rounds never open the
    whole gallery here), the device and the pair scorer's dtype."""

    plan: ScorePlan
    emb: Path
    device: torch.device
    dtype: torch.dtype
    opened: dict[str, Any] = field(default_factory=dict)  # what a strategy opens once per job

    @functools.cached_property
    def store(self) -> EmbeddingStore:
        return EmbeddingStore(self.emb)

    @functools.cached_property
    def model(self) -> RetrievalModel:
        """The EMB's model (loaded on first use: an external re-ranker never loads it)."""
        return self.store.info.load_model(self.device)


class Strategy(abc.ABC):
    """Base of every scoring strategy; subclasses set `name` and implement `score`."""

    name: ClassVar[str]
    mode: ClassVar[ScoreMode] = "pruned"
    takes: ClassVar[frozenset[str]] = frozenset()  # of the options adaptive, candidates, reranker

    def check(self, plan: ScorePlan) -> None:
        """Its rules on the plan's options (a PlanError through `plan.error`); by default, none of the
        options adaptive, candidates and reranker unless `takes` names it."""
        given = {
            "adaptive": plan.adaptive,
            "candidates": plan.candidates_from is not None,
            "reranker": plan.reranker is not None,
        }
        for option in sorted(name for name, on in given.items() if on and name not in self.takes):
            raise plan.error(f"{{{option}}} is not an option of {{strategy}} scoring")

    def in_shards(self, plan: ScorePlan) -> bool:
        """Whether `plan` runs on the shard rounds of `tasks.score.shards` (any number of shards, one in
        this process; `score` hands it to them), so that `shards` > 1 is allowed; only exhaustive and
        fixed-k pruned scoring have them."""
        return False

    @abc.abstractmethod
    def score(self, job: LocalJob) -> Scored:
        """Rank every query of the job's EMB against its gallery (on the shard rounds when `in_shards`)."""


_STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    """Make `strategy` a plan's `strategy` by its name (a later one of the same name replaces it)."""
    _STRATEGIES[strategy.name] = strategy
    return strategy


def registered_strategies() -> tuple[str, ...]:
    return tuple(_STRATEGIES)


def get_strategy(name: str) -> Strategy:
    if name not in _STRATEGIES:
        raise TbprError(f"unknown scoring strategy {name!r}; registered: {', '.join(_STRATEGIES)}")
    return _STRATEGIES[name]
