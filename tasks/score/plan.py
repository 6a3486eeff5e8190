"""The scoring plan: what one scoring job does, typed and validated in one place (`ScorePlan`).

A plan names a strategy (registered in `tasks.score.strategy`: `exhaustive`, `pruned`, `cascade`,
`external`, or your own) and its options; sharding is how a plan runs (`shards` > 1: the gallery in
shards on Dask workers; one process is one shard), not another strategy. Every rule on combinations
of options lives in `ScorePlan.__post_init__` and the strategy's `check`, so `tbpr score` and the
pipeline's `ScoreJob` (flows/config.py) both build a plan and never re-check. Errors name options as
the caller spells them (`names`: `--top-k` on the command line, `top_k` in a TOML job).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tasks.core.device import Precision
from tasks.core.errors import TbprError
from tasks.embed.index import check_index_kind
from tasks.score import strategies as _built_in  # noqa: F401  (registers the built-in strategies)
from tasks.score.strategy import SCORE_MODES, ScoreMode, Strategy, get_strategy, registered_strategies

# how the command line spells each option (the default), and how a pipeline job (TOML) does
CLI_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "mode": "--mode",
        "top_k": "--top-k",
        "index": "--index",
        "adaptive": "--adaptive",
        "candidates": "--candidates-from",
        "reranker": "--reranker",
        "shards": "--shards",
    }
)
JOB_NAMES: Mapping[str, str] = MappingProxyType({key: key for key in CLI_NAMES} | {"reranker": "reranker"})


class PlanError(TbprError):
    """A plan whose options do not go together (a `TbprError`: one `error:` line, exit 2)."""


@dataclass(frozen=True)
class ScorePlan:
    """One scoring job. `top_k` and `index` are the first stage of the strategies that prune
    (`Strategy.prunes`); `candidates_from` is a cascade's proposing EMB; `reranker` an external
    re-ranker's folder; `shards` > 1 runs the plan on Dask workers (the one at `scheduler`, or a
    local cluster)."""

    strategy: str = "exhaustive"
    top_k: int = 64
    index: str = "flat"
    adaptive: bool = False
    candidates_from: Path | None = None
    reranker: Path | None = None
    shards: int = 1
    scheduler: str | None = None
    memory_budget_mb: float = 512.0
    device: Any = "cpu"  # a name ("cpu", "cuda:0", "auto") or a torch.device
    precision: Precision = "fp32"
    names: Mapping[str, str] = field(default_factory=lambda: CLI_NAMES, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.strategy not in registered_strategies():
            raise PlanError(
                f"unknown scoring strategy {self.strategy!r}; registered: {', '.join(registered_strategies())}"
            )
        check_index_kind(self.index)
        if self.top_k < 1:
            raise PlanError(f"{self.names['top_k']} must be at least 1 (got {self.top_k})")
        if self.shards < 1:
            raise PlanError(f"{self.names['shards']} must be at least 1 (got {self.shards})")
        self.runs.check(self)
        if self.shards > 1 and not self.runs.in_shards(self):
            raise PlanError(f"{self.strategy} scoring runs in one process; drop {self.names['shards']}")

    @property
    def runs(self) -> Strategy:
        """The strategy that scores this plan."""
        return get_strategy(self.strategy)

    @property
    def mode(self) -> ScoreMode:
        """What metrics.json and MLflow call the job: `exhaustive`, or `pruned` (every strategy with a
        first stage)."""
        return self.runs.mode

    def error(self, template: str) -> PlanError:
        """A PlanError whose `{option}` fields are the caller's spelling of each option."""
        return PlanError(template.format(**self.names, strategy=self.strategy, kind=self.index))

    @classmethod
    def from_options(
        cls,
        mode: str,
        *,
        candidates_from: Path | None = None,
        reranker: Path | None = None,
        names: Mapping[str, str] = CLI_NAMES,
        **options: Any,
    ) -> ScorePlan:
        """The plan of `tbpr score`'s options (and a pipeline job's): `--mode exhaustive|pruned`, with
        `--candidates-from` (a cascade) or `--reranker` (an external re-ranker) as pruned options."""
        if mode not in SCORE_MODES:
            raise PlanError(f"unknown mode {mode!r}; use one of {', '.join(SCORE_MODES)}")
        strategy = mode
        if mode == "pruned" and (reranker is not None or candidates_from is not None):
            strategy = "external" if reranker is not None else "cascade"
        return cls(
            strategy=strategy, candidates_from=candidates_from, reranker=reranker, names=names, **options
        )


__all__ = ["CLI_NAMES", "JOB_NAMES", "PlanError", "ScorePlan"]
