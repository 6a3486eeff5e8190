"""What a scoring job records: `ScoreResult`, the content of `metrics.json` and `per_query.parquet`
(`tasks.score.layout`), and its MLflow scoring run (through `tasks.tracking.store`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.embed.layout import EmbedInfo
from tasks.score.layout import METRICS, PER_QUERY_SCHEMA
from tasks.score.strategy import ScoreMode
from tasks.tracking import names
from tasks.tracking.config import TrackingConfig
from tbpr_models import PerQuery


@dataclass(frozen=True)
class ScoreResult:
    out: Path
    mode: ScoreMode  # exhaustive, or pruned: every strategy with a first stage
    metrics: dict[str, float]  # R1, R5, R10, mAP, mINP in percent
    pairs_scored: int
    seconds: float  # scoring time: exhaustive blocks, or FAISS search + re-ranking
    top_k: int | None
    index: str | None
    run_id: str | None = None  # the MLflow scoring run
    details: dict[str, Any] = field(default_factory=dict)  # everything else in metrics.json


def model_details(info: EmbedInfo) -> dict[str, Any]:
    """What metrics.json and MLflow record of the scored EMB's model and split."""
    return {
        "model_ref": info.model_ref,
        "train_run_id": info.train_run_id,
        "variant": info.variant,
        "dataset": info.dataset,
        "num_queries": info.num_queries,
        "num_images": info.num_images,
    }


def log_scoring_run(
    result: ScoreResult, *, tracking: TrackingConfig | None = None, parent_run_id: str | None = None
) -> str:
    """An MLflow run (stage=score) in experiment tbpr/<dataset>, tagged with the training run; its id."""
    from tasks.tracking.store import Tracker  # mlflow loads only when a run is logged

    tracker = Tracker(tracking)
    details = result.details
    dataset = str(details.get("dataset") or "unknown")
    tags = {
        names.TAG_STAGE: names.STAGE_SCORE,
        names.TAG_VARIANT: str(details.get("variant")),
        names.TAG_DATASET: dataset,
        names.TAG_MODE: result.mode,
    }
    if details.get("train_run_id"):
        tags[names.TAG_TRAIN_RUN] = str(details["train_run_id"])
    if details.get("candidates"):
        tags |= {names.TAG_CASCADE: "true", names.TAG_CANDIDATES: str(details["candidates"])}
    name = f"score-{details.get('variant')}-{result.mode}" + (
        f"-{result.index}-k{result.top_k}" if result.top_k else ""
    )
    name += f"-from-{details['candidates']}" if details.get("candidates") else ""
    run_id = tracker.start_run(tracker.experiment_id(dataset), name, tags, parent_run_id=parent_run_id)
    try:
        params = {
            names.PARAM_MODE: result.mode,
            names.PARAM_TOP_K: result.top_k,
            names.PARAM_INDEX: result.index,
            names.PARAM_MODEL_REF: details["model_ref"],
        }
        params |= {
            key: details[key]
            for key in ("precision", "rerank_group", "query_block", "gallery_block", "reranker")
            if key in details
        }
        params |= {
            param: details[key]
            for param, key in (
                (names.PARAM_CANDIDATES, "candidates"),
                (names.PARAM_CANDIDATES_EMB, "candidates_emb"),
                (names.PARAM_CANDIDATES_RUN, "candidates_train_run_id"),
            )
            if details.get(key)
        }
        tracker.log_params(run_id, {key: str(value) for key, value in params.items()})
        metrics = {names.metric_key("test", name): value for name, value in result.metrics.items()}
        metrics |= {names.SCORE_SECONDS: result.seconds, names.SCORE_PAIRS: float(result.pairs_scored)}
        metrics |= {
            f"score/{key}": float(details[key])
            for key in (
                "seconds_stage1",
                "seconds_rerank",
                "pairs_stage1",
                "pairs_rerank",
                "flops_per_query",
                "flops_per_query_cuhk_pedes",
                "flops_encode_query",
                "flops_stage1_per_query",
                "flops_per_pair",
            )
            if details.get(key) is not None
        }
        tracker.log_metrics(run_id, metrics, step=0)
        tracker.log_artifacts(run_id, result.out / METRICS)
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    tracker.end_run(run_id)
    return run_id


def per_query_table(per_query: PerQuery, query_ids: np.ndarray) -> pa.Table:
    """`per_query.parquet`: each query's first-match rank, AP and INP (fractions, not percent)."""
    return pa.table(
        {
            "query_id": query_ids.astype(np.int64),
            "first_match_rank": per_query.first_match_rank,
            "ap": per_query.average_precision,
            "inp": per_query.inverse_negative_penalty,
        },
        schema=PER_QUERY_SCHEMA,
    )


def metrics_document(result: ScoreResult) -> dict[str, Any]:
    """The content of `metrics.json`."""
    return {
        **result.metrics,
        "pairs_scored": result.pairs_scored,
        "seconds": result.seconds,
        "mode": result.mode,
        "top_k": result.top_k,
        "index": result.index,
        "scoring_run_id": result.run_id,
        **result.details,
    }
