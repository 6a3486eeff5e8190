"""Score the queries of an EMB folder against its gallery: exhaustive or pruned.

Exhaustive scoring calls the pair scorer `model.similarity` on blocks; pruned scoring calls its
batched form `model.similarity_candidates` (the same scores) on each chunk of queries' FAISS candidates.
The model is rebuilt from the checkpoint recorded in `embed.json`; both modes both write `OUT/rankings.parquet` (top 100 per query) and `OUT/metrics.json`, and log
an MLflow scoring run through `tasks.tracking.store`. Dimension letters: Q queries, G gallery.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pyarrow as pa
import torch

from tasks.core.device import Precision, keep_freed_memory, precision_dtype, resolve_device
from tasks.core.errors import TbprError
from tasks.core.files import write_json_atomic, write_parquet_atomic
from tasks.core.outputs import check_out_folder
from tasks.core.shards import dask_client, gallery_shards
from tasks.embed.index import APPROXIMATE_SCORES, IndexParams, check_index_kind
from tasks.embed.layout import GALLERY as GALLERY_FILE
from tasks.embed.layout import QUERIES as QUERIES_FILE
from tasks.embed.layout import EmbedInfo
from tasks.embed.store import EmbeddingStore
from tasks.score.cascade import Alignment, align, propose, stage1_similarity
from tasks.score.cost import IndexProbes, WorkCounts, encode_flops, mean_words, pair_flops, stage1_flops
from tasks.score.exhaustive import exhaustive_similarity
from tasks.score.external import gallery_images, open_reranker, query_texts, rerank_external
from tasks.score.layout import METRICS, PER_QUERY, PER_QUERY_SCHEMA, RANKINGS
from tasks.score.pruned import Candidates, batched_chunk_size, first_stage, rerank, rerank_adaptive
from tasks.score.ranking import (
    Ranking,
    global_similarity,
    rank_exhaustive,
    rank_pruned,
    ranking_similarity,
    rankings_table,
)
from tasks.score.shards import Settings, ids_of, score_sharded
from tasks.tracking import names
from tasks.tracking.config import TrackingConfig
from tbpr_models import PerQuery, RetrievalModel, per_query_metrics
from tbpr_models.scoring import plan_blocks

log = logging.getLogger(__name__)

ScoreMode = Literal["exhaustive", "pruned"]
SCORE_MODES: tuple[str, ...] = get_args(ScoreMode)
# The precision of the pair scorer's matmuls and features (`tasks.core.device`); each word's relevance
# and the sum over words stay float32.


@dataclass(frozen=True)
class ScoreResult:
    out: Path
    mode: ScoreMode
    metrics: dict[str, float]  # R1, R5, R10, mAP, mINP in percent
    pairs_scored: int
    seconds: float  # scoring time: exhaustive blocks, or FAISS search + re-ranking
    top_k: int | None
    index: str | None
    run_id: str | None = None  # the MLflow scoring run
    details: dict[str, Any] = field(default_factory=dict)  # everything else in metrics.json


@dataclass(frozen=True)
class _Scored:
    ranking: Ranking
    similarity: np.ndarray  # (Q, G) whose descending order is the ranking
    pairs_scored: int
    seconds: float
    details: dict[str, Any]


def score(
    emb: Path,
    out: Path,
    *,
    mode: ScoreMode,
    top_k: int = 64,
    index: str = "flat",
    memory_budget_mb: float = 512.0,
    device: str | torch.device = "cpu",
    precision: Precision = "fp32",
    track: bool = True,
    tracking: TrackingConfig | None = None,
    parent_run_id: str | None = None,
    shards: int = 1,
    scheduler: str | None = None,
    adaptive: bool = False,
    candidates_from: Path | None = None,
    reranker: Path | None = None,
) -> ScoreResult:
    """Rank every query of `emb`, write rankings and metrics to `out`, and log a scoring run.

    `shards` > 1 splits the gallery into that many shards scored on Dask workers (`tasks.score.shards`:
    a local cluster, or the one at `scheduler`); the rankings and metrics are those of one process
    (exactly with the flat index; each shard's own hnsw/ivf/ivfpq/fastscan index is approximate as one is).
    `adaptive` (pruned) gives each query its own k <= top_k: re-ranking stops once the model's score
    bound says no further candidate can enter the query's top 10 (`tasks.score.pruned.rerank_adaptive`).
    `candidates_from` (pruned) is another model's EMB of the same queries and gallery whose index
    proposes the candidates that `emb`'s model re-ranks (a cascade, `tasks.score.cascade`).
    `reranker` (pruned) is a local Hugging Face cross-encoder folder (BLIP ITM) that re-ranks the top k
    of `emb`'s index in place of `emb`'s model, from the caption texts and the images of its DATA
    (`tasks.score.external`)."""
    if mode not in SCORE_MODES:
        raise TbprError(f"unknown mode {mode!r}; use one of {', '.join(SCORE_MODES)}")
    kind = check_index_kind(index)
    if top_k < 1:
        raise TbprError(f"--top-k must be at least 1 (got {top_k})")
    check_out_folder(
        out,
        command="score",
        marker=METRICS,
        names=(RANKINGS, PER_QUERY),
        inputs={"EMB folder": emb, "--candidates-from folder": candidates_from},
    )
    dtype = precision_dtype(precision)
    torch_device = resolve_device(device)
    if shards < 1:
        raise TbprError(f"--shards must be at least 1 (got {shards})")
    if adaptive and (mode != "pruned" or shards > 1):
        raise TbprError(
            "--adaptive is a pruned-scoring option of one process (not with exhaustive or --shards)"
        )
    if adaptive and kind in APPROXIMATE_SCORES:
        raise TbprError(
            f"--adaptive needs exact first-stage cosines to bound the scores; {kind}'s are approximate: "
            "use --index flat, hnsw or ivf"
        )
    if EmbedInfo.read(emb).num_queries == 0:
        raise TbprError(
            f"{emb} has no queries (an image folder's EMB: no captions, no person ids) to score; "
            f'search it instead: tbpr search {emb} "a man in a red jacket"'
        )
    if candidates_from is not None and (mode != "pruned" or shards > 1 or adaptive):
        raise TbprError(
            "--candidates-from is a pruned-scoring option of one process (not with exhaustive, "
            "--shards or --adaptive, whose bound needs the re-ranking model's own first stage)"
        )
    if reranker is not None and (mode != "pruned" or shards > 1 or adaptive or candidates_from is not None):
        raise TbprError(
            "--reranker re-ranks the top k of EMB's own index: a pruned-scoring option of one process "
            "(not with exhaustive, --shards, --adaptive or --candidates-from)"
        )
    cascade = _cascade(emb, candidates_from) if candidates_from is not None else None
    if track and parent_run_id:
        from tasks.tracking.store import require_run  # mlflow loads only when a run is logged

        require_run(tracking, parent_run_id, "--parent-run-id")
    if shards > 1:
        scored, per_query = _sharded(
            emb, mode, kind, top_k, memory_budget_mb, torch_device, precision, shards, scheduler
        )
        store_details = _model_details_of(EmbedInfo.read(emb))
        query_ids = ids_of(emb, QUERIES_FILE, "caption_id")
        image_ids = ids_of(emb, GALLERY_FILE, "image_id")
    else:
        store = EmbeddingStore(emb)
        keep_freed_memory(math.ceil(memory_budget_mb))  # reuse freed blocks, within the budget
        if reranker is not None:
            scored = _external(reranker, store, kind, top_k, torch_device)
        elif mode == "exhaustive":
            model = store.info.load_model(torch_device)
            scored = _exhaustive(model, store, memory_budget_mb, torch_device, dtype)
        else:
            model = store.info.load_model(torch_device)
            scored = _pruned(
                model, store, kind, top_k, memory_budget_mb, torch_device, dtype, adaptive, cascade
            )
        query_ids, query_pids = store.query_ids()
        image_ids, gallery_pids = store.gallery_ids()
        per_query = per_query_metrics(scored.similarity, query_pids, gallery_pids)  # ranks once
        store_details = _model_details(store)
        if reranker is not None:  # the re-ranker is the scored model, EMB's model the candidates one
            store_details |= {"model_ref": str(reranker.resolve()), "train_run_id": None}
            store_details |= {"variant": scored.details["reranker"]} | _candidates_details(store)
    metrics = per_query.metrics()
    result = ScoreResult(
        out=out,
        mode=mode,
        metrics={name: float(metrics[name]) for name in names.METRICS},
        pairs_scored=scored.pairs_scored,
        seconds=scored.seconds,
        top_k=top_k if mode == "pruned" else None,
        index=kind if mode == "pruned" else None,
        details={**scored.details, "precision": precision, **store_details},
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS).unlink(
        missing_ok=True
    )  # written last: marks a complete OUT (an interrupted one has none)
    write_parquet_atomic(rankings_table(scored.ranking, query_ids, image_ids), out / RANKINGS)
    write_parquet_atomic(per_query_table(per_query, query_ids), out / PER_QUERY)
    write_json_atomic(out / METRICS, metrics_document(result), indent=2, sort_keys=True)
    if track:
        run_id = log_scoring_run(result, tracking=tracking, parent_run_id=parent_run_id)
        result = dataclasses.replace(result, run_id=run_id)
        write_json_atomic(out / METRICS, metrics_document(result), indent=2, sort_keys=True)
    log.info(
        "%s scoring: R1 %.2f, %d pairs in %.2f s",
        mode,
        result.metrics["R1"],
        result.pairs_scored,
        result.seconds,
    )
    return result


def _exhaustive(
    model: RetrievalModel,
    store: EmbeddingStore,
    memory_budget_mb: float,
    device: torch.device,
    dtype: torch.dtype,
) -> _Scored:
    shapes = store.shapes()
    plan = plan_blocks(shapes, memory_budget_mb, model.head.pair_floats(shapes.words, shapes.regions))
    start = time.perf_counter()
    similarity = exhaustive_similarity(
        model.similarity, store, plan, device=device, dtype=dtype, show_progress=True
    )
    seconds = time.perf_counter() - start
    details = {"query_block": plan.query_block, "gallery_block": plan.gallery_block}
    pairs = similarity.size
    details |= _work(model, store, None, None, pairs / max(1, shapes.num_texts)).details()
    return _Scored(rank_exhaustive(similarity), similarity, pairs, seconds, details)


def _work(
    model: RetrievalModel,
    store: EmbeddingStore,
    kind: str | None,
    top_k: int | None,
    pairs_per_query: float,
    probes_per_query: float | None = None,
    candidates_model: RetrievalModel | None = None,
    adaptive: bool = False,
) -> WorkCounts:
    """The job's counted work per query (`tasks.score.cost`): every model it runs encodes the query."""
    shapes, words = store.shapes(), mean_words(np.asarray(store.text_mask))
    encoding = sum(  # a caption padded to each text encoder's max_length, as embedding encodes it
        encode_flops(m, m.config.text.max_length) for m in (model, candidates_model) if m is not None
    )
    return WorkCounts(
        encode_flops=encoding,
        stage1_flops=stage1_flops(kind, shapes.num_images, shapes.dim, probes_per_query),
        pair_flops=pair_flops(model, shapes, words, top_k),
        pairs_per_query=pairs_per_query,
        num_images=shapes.num_images,
        stage1_per_image=kind is not None and (kind == "flat" or probes_per_query is None),
        top_k=top_k,
        adaptive=adaptive,
    )


def _pruned(
    model: RetrievalModel,
    store: EmbeddingStore,
    kind: Any,
    top_k: int,
    memory_budget_mb: float,
    device: torch.device,
    dtype: torch.dtype,
    adaptive: bool = False,
    cascade: tuple[EmbeddingStore, Alignment] | None = None,
) -> _Scored:
    faiss_index = store.index(kind) if cascade is None else cascade[0].index(kind)
    shapes = store.shapes()
    image_floats = model.head.candidate_image_floats(shapes.regions, shapes.dim)
    chunk = batched_chunk_size(top_k, shapes, memory_budget_mb, image_floats, dtype.itemsize)
    start = time.perf_counter()
    with IndexProbes() as probes:
        if cascade is None:
            candidates = first_stage(faiss_index, store.text_globals(), top_k, IndexParams())
        else:
            candidates = propose(cascade[0], cascade[1], top_k, kind)
    stage1_seconds = time.perf_counter() - start
    options: dict[str, Any] = {
        "device": device,
        "dtype": dtype,
        "chunk": chunk,
        "memory_budget_mb": memory_budget_mb,
        "show_progress": not adaptive,
    }
    if adaptive:
        bound = model.head.score_bound(torch.from_numpy(np.array(store.text_mask)))
        if bound is None:
            raise TbprError(
                f"{store.info.variant} gives no bound on its scores, which a per-query k needs; drop "
                "--adaptive (cross_scan, hard_topk and the cosine heads have one)"
            )
        weight, offset = bound
        reranked = rerank_adaptive(model, store, candidates, (weight, offset.numpy()), **options)
        # candidates left unscored rank with the images outside the top k, in first-stage order
        candidates = Candidates(
            ids=np.where(np.isfinite(reranked.scores), candidates.ids, -1), scores=candidates.scores
        )
    else:
        reranked = rerank(model, store, candidates, **options)
    seconds = time.perf_counter() - start
    # evaluation only: images outside the top-k keep their first-stage (global cosine) order
    stage1 = (
        global_similarity(store.text_globals(), store.image_globals())
        if cascade is None
        else stage1_similarity(*cascade)
    )
    ranking = rank_pruned(candidates, reranked, stage1)
    details = {
        "seconds_stage1": stage1_seconds,
        "seconds_rerank": seconds - stage1_seconds,
        "rerank_group": chunk,
        "rerank_calls": reranked.calls,
        "rerank_workers": reranked.workers,
        "candidates_found": int((candidates.ids >= 0).sum()),
        "adaptive": adaptive,
        "mean_k": reranked.pairs_scored / max(1, len(candidates.ids)),
        # the cosines a flat first stage computes (hnsw and ivf compute fewer, not counted)
        "pairs_stage1": len(candidates.ids) * store.num_images if kind == "flat" else None,
        "pairs_rerank": reranked.pairs_scored,
    }
    if cascade is not None:
        details |= _candidates_details(cascade[0])
    num_queries = max(1, len(candidates.ids))
    work = _work(
        model,
        store,
        str(kind),
        top_k,
        reranked.pairs_scored / num_queries,
        probes.count / num_queries if probes.count else None,
        None if cascade is None else cascade[0].info.load_model(device),
        adaptive,
    )
    return _Scored(
        ranking, ranking_similarity(ranking), reranked.pairs_scored, seconds, details | work.details()
    )


def _external(reranker: Path, store: EmbeddingStore, kind: Any, top_k: int, device: torch.device) -> _Scored:
    """EMB's index proposes, the re-ranker of a local folder scores the candidates (`tasks.score.external`)."""
    scorer = open_reranker(reranker, device)
    texts, images = query_texts(store.emb), gallery_images(store.emb, Path(store.info.data))
    start = time.perf_counter()
    candidates = first_stage(store.index(kind), store.text_globals(), top_k, IndexParams())
    stage1_seconds = time.perf_counter() - start
    reranked = rerank_external(scorer, texts, images, candidates, show_progress=True)
    seconds = time.perf_counter() - start
    stage1 = global_similarity(store.text_globals(), store.image_globals())
    ranking = rank_pruned(candidates, reranked, stage1)
    details = {
        "reranker": scorer.kind,
        "seconds_stage1": stage1_seconds,
        "seconds_rerank": seconds - stage1_seconds,
        "rerank_calls": reranked.calls,
        "candidates_found": int((candidates.ids >= 0).sum()),
        "pairs_stage1": len(candidates.ids) * store.num_images if kind == "flat" else None,
        "pairs_rerank": reranked.pairs_scored,
    }
    return _Scored(ranking, ranking_similarity(ranking), reranked.pairs_scored, seconds, details)


def _sharded(
    emb: Path,
    mode: str,
    kind: str,
    top_k: int,
    memory_budget_mb: float,
    device: torch.device,
    precision: str,
    shards: int,
    scheduler: str | None,
) -> tuple[_Scored, PerQuery]:
    """The gallery in `shards` shards on Dask workers (`tasks.score.shards`); the top ranks and the
    metrics of one process."""
    info = EmbedInfo.read(emb)
    info.check_weights()  # the workers load the checkpoint by path
    settings = Settings(
        emb=emb.resolve(),
        checkpoint=info.checkpoint,
        mode=mode,
        top_k=top_k,
        index=kind,
        memory_budget_mb=memory_budget_mb,
        device=str(device),
        precision=precision,
    )
    parts = gallery_shards(info.num_images, shards)
    person_ids = ids_of(emb, QUERIES_FILE, "person_id")
    with dask_client(len(parts), scheduler) as client:
        start = time.perf_counter()  # the span one process times: the cluster's start is not counted
        result = score_sharded(settings, parts, person_ids, client)
        seconds = time.perf_counter() - start
    store = EmbeddingStore(emb)
    num_queries = max(1, store.num_texts)
    pairs_per_query = result.details.get("pairs_rerank", result.pairs_scored) / num_queries
    # each shard's hnsw/ivf probes are not gathered from the workers: costed as flat (an upper bound)
    work = _work(
        info.load_model(torch.device("cpu")),
        store,
        kind if mode == "pruned" else None,
        top_k if mode == "pruned" else None,
        pairs_per_query,
    )
    details = result.details | work.details()
    scored = _Scored(result.ranking, np.empty((0, 0), np.float32), result.pairs_scored, seconds, details)
    return scored, result.per_query


def _cascade(emb: Path, candidates_from: Path) -> tuple[EmbeddingStore, Alignment]:
    """The candidates EMB opened and aligned with `emb` (a TbprError naming both when they differ)."""
    EmbedInfo.read(emb)  # the scored folder first: its own errors name it
    source = EmbeddingStore(candidates_from)
    return source, align(emb, candidates_from)


def _candidates_details(source: EmbeddingStore) -> dict[str, Any]:
    """What metrics.json and MLflow record of a cascade's first stage: the candidates model."""
    return {
        "candidates": source.info.variant,
        "candidates_emb": str(source.emb.resolve()),
        "candidates_model_ref": source.info.model_ref,
        "candidates_train_run_id": source.info.train_run_id,
    }


def _model_details(store: EmbeddingStore) -> dict[str, Any]:
    return _model_details_of(store.info)


def _model_details_of(info: EmbedInfo) -> dict[str, Any]:
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


__all__ = ["SCORE_MODES", "Precision", "ScoreMode", "ScoreResult", "metrics_document", "score"]
