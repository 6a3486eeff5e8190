"""Score the queries of an EMB folder against its gallery by a `ScorePlan` (`tasks.score.plan`).

`score_plan` is the one runner: it checks the inputs, runs the plan's strategy in this process (or
in shards on Dask workers, `tasks.score.sharded`), computes the per-query metrics from the positives'
ranks (`tbpr_models.metrics.per_query_from_ranks`, whatever the strategy), writes
`OUT/rankings.parquet` (top 20 per query), `OUT/per_query.parquet` and `OUT/metrics.json`, and logs
one MLflow scoring run (`tasks.score.record`). `score` is the same with `tbpr score`'s options.
Dimension letters: Q queries, G gallery.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, cast

from tasks.core.device import (
    Precision,
    keep_freed_memory,
    precision_dtype,
    resolve_device,
    resolve_precision,
)
from tasks.core.errors import TbprError
from tasks.core.files import write_json_atomic, write_parquet_atomic
from tasks.core.outputs import check_out_folder
from tasks.embed.layout import GALLERY, QUERIES, EmbedInfo
from tasks.score.layout import METRICS, PER_QUERY, RANKINGS
from tasks.score.plan import ScorePlan
from tasks.score.ranking import rankings_table
from tasks.score.record import ScoreResult, log_scoring_run, metrics_document, model_details, per_query_table
from tasks.score.shards import ids_of
from tasks.score.strategy import SCORE_MODES, LocalJob, Scored, ScoreMode
from tasks.tracking import names
from tasks.tracking.config import TrackingConfig
from tbpr_models.metrics import PerQuery, per_query_from_ranks, positive_ranks

log = logging.getLogger(__name__)


def score(
    emb: Path,
    out: Path,
    *,
    mode: ScoreMode,
    track: bool = True,
    tracking: TrackingConfig | None = None,
    parent_run_id: str | None = None,
    candidates_from: Path | None = None,
    reranker: Path | None = None,
    **options: Any,
) -> ScoreResult:
    """`score_plan` of the plan `tbpr score`'s options make (`ScorePlan.from_options`): `mode`
    exhaustive or pruned; with pruned, `candidates_from` (a cascade) or `reranker` (an external
    re-ranker); `options` are the plan's other fields (top_k, index, adaptive, shards, scheduler,
    memory_budget_mb, device, precision)."""
    plan = ScorePlan.from_options(mode, candidates_from=candidates_from, reranker=reranker, **options)
    return score_plan(plan, emb, out, track=track, tracking=tracking, parent_run_id=parent_run_id)


def score_plan(
    plan: ScorePlan,
    emb: Path,
    out: Path,
    *,
    track: bool = True,
    tracking: TrackingConfig | None = None,
    parent_run_id: str | None = None,
) -> ScoreResult:
    """Rank every query of `emb` by `plan`, write rankings and metrics to `out`, and log a scoring run."""
    check_out_folder(
        out,
        command="score",
        marker=METRICS,
        names=(RANKINGS, PER_QUERY),
        inputs={"EMB folder": emb, "--candidates-from folder": plan.candidates_from},
    )
    device = resolve_device(plan.device)
    # `auto` resolved once: the record and every shard score in the precision that is written down
    plan = dataclasses.replace(plan, precision=cast(Precision, resolve_precision(plan.precision, device)))
    dtype = precision_dtype(plan.precision)
    info = EmbedInfo.read(emb)
    if info.num_queries == 0:
        raise TbprError(
            f"{emb} has no queries (an image folder's EMB: no captions, no person ids) to score; "
            f'search it instead: tbpr search {emb} "a man in a red jacket"'
        )
    if track and parent_run_id:
        from tasks.tracking.store import require_run  # mlflow loads only when a run is logged

        require_run(tracking, parent_run_id, "--parent-run-id")
    if plan.shards == 1:
        keep_freed_memory(math.ceil(plan.memory_budget_mb))  # reuse freed blocks, within the budget
    scored = plan.runs.score(LocalJob(plan, emb, device, dtype))
    query_ids = ids_of(emb, QUERIES, "caption_id")
    image_ids = ids_of(emb, GALLERY, "image_id")
    per_query = _per_query(scored, emb, info)
    metrics = per_query.metrics()
    pruned = plan.mode == "pruned"
    result = ScoreResult(
        out=out,
        mode=plan.mode,
        metrics={name: float(metrics[name]) for name in names.METRICS},
        pairs_scored=scored.pairs_scored,
        seconds=scored.seconds,
        top_k=plan.top_k if pruned else None,
        index=plan.index if pruned else None,
        details={
            "strategy": plan.strategy,
            "shards": plan.shards,
            "precision": plan.precision,
            **model_details(info),
            **scored.details(),
        },
    )
    out.mkdir(parents=True, exist_ok=True)
    # written last: marks a complete OUT (an interrupted one has none)
    (out / METRICS).unlink(missing_ok=True)
    write_parquet_atomic(rankings_table(scored.ranking, query_ids, image_ids), out / RANKINGS)
    write_parquet_atomic(per_query_table(per_query, query_ids), out / PER_QUERY)
    write_json_atomic(out / METRICS, metrics_document(result), indent=2, sort_keys=True)
    if track:
        run_id = log_scoring_run(result, tracking=tracking, parent_run_id=parent_run_id)
        result = dataclasses.replace(result, run_id=run_id)
        write_json_atomic(out / METRICS, metrics_document(result), indent=2, sort_keys=True)
    log.info(
        "%s scoring: R1 %.2f, %d pairs in %.2f s",
        plan.strategy,
        result.metrics["R1"],
        result.pairs_scored,
        result.seconds,
    )
    return result


def _per_query(scored: Scored, emb: Path, info: EmbedInfo) -> PerQuery:
    """Each query's metrics from its positives' ranks: given (sharded), or read from the full ranking."""
    if scored.positives is not None:
        query, ranks = scored.positives
    else:
        query_pids = ids_of(emb, QUERIES, "person_id")
        gallery_pids = ids_of(emb, GALLERY, "person_id")
        query, ranks = positive_ranks(scored.ranking.order, query_pids, gallery_pids)
    return per_query_from_ranks(query, ranks, info.num_queries, info.num_images)


__all__ = [
    "SCORE_MODES",
    "Precision",
    "ScoreMode",
    "ScorePlan",
    "ScoreResult",
    "metrics_document",
    "score",
    "score_plan",
]
