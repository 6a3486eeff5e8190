"""Sharded scoring: the gallery split into contiguous shards, each indexed and scored on a worker (Dask)
against every query; the workers' results merged into exactly the rankings and metrics of one process.

A worker reads only its shard of the EMB folder (its rows of the gallery globals, streamed from
Parquet, and of the memory-mapped local features), so no process ever holds the whole gallery:

1. exhaustive: the pair scores of every query x the shard's images (Q, S), kept on the worker;
   pruned: the shard's own FAISS index gives each query's top k (global rows); the driver merges
   the shards' lists into the global top k, and each worker re-ranks the candidates it holds, keeping
   the shard's first-stage cosines (Q, S) as well.
2. Each worker sends back its top `RANKINGS_TOP` per query (exhaustive: by pair score; pruned: the
   images outside the candidates, by first-stage score) and the scores of the positives it holds.
3. Each worker counts, for every positive, its images that rank above it (a higher score, or an
   equal one earlier in the gallery): a positive's rank is the sum over shards plus one (pruned: the
   candidates first, by pair score), which gives R@k, mAP and mINP without a (Q, G) matrix.

What a worker keeps between the rounds is one (Q, S) float32 block: memory per worker ~ 4 Q S bytes
plus its shard's local features. `executor` runs the rounds: a Dask `Client` (whose futures keep each
shard's block on the worker that computed it), or `InProcess` (the same rounds, one after another).
Dimension letters: Q queries, G gallery, S shard images, k candidates, T top kept, P positives.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tasks.core.device import precision_dtype, resolve_device
from tasks.core.errors import TbprError
from tasks.core.shards import Shard
from tasks.embed.index import IndexParams, build_index, load_index, save_index
from tasks.embed.layout import shard_index_file
from tasks.embed.store import EmbeddingStore, _ids
from tasks.score.cost import IndexProbes
from tasks.score.exhaustive import exhaustive_similarity
from tasks.score.layout import RANKINGS_TOP
from tasks.score.merge import Executor, InProcess, candidate_ranks, join_top, merge_candidates, merge_top
from tasks.score.pruned import Candidates, batched_chunk_size, first_stage, rerank
from tasks.score.ranking import Ranking, global_similarity
from tbpr_models import RetrievalModel
from tbpr_models.metrics import PerQuery, count_above, per_query_from_ranks, rank_order
from tbpr_models.scoring import plan_blocks

log = logging.getLogger(__name__)


def open_shard(emb: Path, shard: Shard) -> EmbeddingStore:
    """The EMB with only `shard`'s gallery rows (shard-local rows; every query)."""
    return EmbeddingStore(emb, gallery=(shard.start, shard.stop))


@functools.lru_cache(maxsize=2)
def _model(checkpoint: str, device: str, weights: str = "") -> RetrievalModel:
    """The EMB's model, loaded once per worker process (and per `weights` digest: a checkpoint replaced
    at the same path is loaded again)."""
    from tasks.tracking.models import open_checkpoint

    return open_checkpoint(Path(checkpoint), device=torch.device(device)).eval()


@dataclass(frozen=True)
class RoundSettings:
    """What every round needs to know (picklable: it travels to the workers)."""

    emb: Path
    checkpoint: str
    mode: str  # exhaustive | pruned
    top_k: int
    index: str
    memory_budget_mb: float
    device: str
    precision: str
    top: int = RANKINGS_TOP
    weights: str = ""  # the checkpoint's weights digest (embed.json): keys the worker's model cache
    show_progress: bool = False  # progress bars (one shard in this process)


@dataclass
class ShardState:
    """What a worker keeps between the rounds (never sent back whole)."""

    shard: Shard
    scores: np.ndarray  # (Q, S) float32: pair scores (exhaustive) or first-stage cosines (pruned)
    gallery_pids: np.ndarray  # (S,)
    candidate: np.ndarray | None = None  # (Q, S) bool: pruned, the image is one of the query's top k
    pair: np.ndarray | None = None  # (Q, k) float32 pruned: pair scores of the shard's candidates, else -inf
    seconds: float = 0.0  # the whole round
    scoring: dict[str, Any] = field(default_factory=dict)  # `seconds` of pair scoring alone, blocks, calls


@dataclass(frozen=True)
class ShardSummary:
    """What a worker sends back after round 1: its best images per query and its positives' scores."""

    top_rows: np.ndarray  # (Q, T') int64 global rows, best first (pruned: outside the candidates)
    top_scores: np.ndarray  # (Q, T') float32
    positive_query: np.ndarray  # (P,) int64 query of each positive this shard holds
    positive_row: np.ndarray  # (P,) int64 its global gallery row
    positive_score: np.ndarray  # (P,) float32 its score (pruned: first-stage; a candidate: NaN)
    pair: np.ndarray | None  # (Q, k) pruned: pair scores of this shard's candidates, -inf elsewhere
    seconds: float
    scoring: dict[str, Any]  # `ShardState.scoring`


@dataclass(frozen=True)
class Proposed:
    """What round 0 sends back: the shard's top k, the distances its index computed, the search's seconds."""

    candidates: Candidates  # (Q, k) global rows
    probes: int  # FAISS's ndis (hnsw, ivf; 0 for flat)
    seconds: float


def stage1_round(settings: RoundSettings, shard: Shard) -> Proposed:
    """Pruned, round 0: the shard's own FAISS index -> each query's top k (global rows). One shard of the
    whole gallery searches the EMB's own index for `top_k`, as one process always did."""
    source = open_shard(settings.emb, shard)
    whole = shard.start == 0 and shard.stop == source.info.num_images
    index = shard_index(source, settings.emb, shard, settings.index)
    k = settings.top_k if whole else min(settings.top_k, shard.size)
    start = time.perf_counter()
    with IndexProbes() as probes:
        found = first_stage(index, source.text_globals(), k, IndexParams())
    seconds = time.perf_counter() - start
    ids = np.where(found.ids >= 0, found.ids + shard.start, -1)
    return Proposed(Candidates(ids=ids, scores=found.scores), probes.count, seconds)


def shard_index(source: EmbeddingStore, emb: Path, shard: Shard, kind: str) -> faiss.Index:
    """The FAISS index of `kind` over the shard's globals: loaded from `EMB/shards/` when an earlier
    scoring of the same shard of the same embedding kept it, else built and kept there (`ivfpq` builds
    in ~14 s per 1M images, `hnsw` ~160 s: a scheduled re-scoring should not pay that again). `flat`
    (a copy of the globals, built as fast as it loads) and the indexes of an EMB without an
    `embed_id` (an older embed) are never kept. A damaged or mismatched file is rebuilt; an EMB that
    cannot be written to is scored without keeping the index. The whole gallery (one shard) uses
    only the index its embed built."""
    if shard.start == 0 and shard.stop == source.info.num_images:
        # the whole gallery: the index the embed built, or the error naming the kinds it built (a file
        # of another kind, left by an older embed, would miss re-embedded images)
        return source.index(kind)
    if kind == "flat" or not source.info.embed_id:
        return build_index(source.image_globals(), kind)  # type: ignore[arg-type]
    built_by = hashlib.sha1(f"faiss {faiss.__version__} {IndexParams()}".encode()).hexdigest()[:8]
    path = shard_index_file(emb, f"{source.info.embed_id}-{built_by}", kind, shard.start, shard.stop)
    if path.is_file():
        try:
            index = load_index(path)
            if index.ntotal == shard.size and index.d == source.shapes().dim:
                return index
        except TbprError:
            pass
        log.warning("rebuilding %s (damaged, or not this shard's)", path)
    index = build_index(source.image_globals(), kind)  # type: ignore[arg-type]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_index(index, path)
    except (OSError, RuntimeError) as exc:  # FAISS reports a failed write as a RuntimeError
        log.warning("scoring without keeping the shard index %s (%s)", path, exc)
    return index


def score_round(settings: RoundSettings, shard: Shard, candidates: Candidates | None = None) -> ShardState:
    """Round 1 on a worker: exhaustive pair scores of the shard, or (pruned) its first-stage cosines and
    the pair scores of the merged candidates it holds."""
    start = time.perf_counter()
    source = open_shard(settings.emb, shard)
    device = resolve_device(settings.device)
    dtype = precision_dtype(settings.precision)
    model = _model(settings.checkpoint, str(device), settings.weights)
    shapes = source.shapes()
    if candidates is None:
        plan = plan_blocks(
            shapes, settings.memory_budget_mb, model.head.pair_floats(shapes.words, shapes.regions)
        )
        begin = time.perf_counter()
        scores = exhaustive_similarity(
            model.similarity, source, plan, device=device, dtype=dtype, show_progress=settings.show_progress
        )
        scoring = {"seconds": time.perf_counter() - begin, "query_block": plan.query_block,
                   "gallery_block": plan.gallery_block}  # fmt: skip
        return ShardState(
            shard, scores, source.gallery_ids()[1], seconds=time.perf_counter() - start, scoring=scoring
        )
    mine = (candidates.ids >= shard.start) & (candidates.ids < shard.stop)  # (Q, k)
    local = Candidates(ids=np.where(mine, candidates.ids - shard.start, -1), scores=candidates.scores)
    image_floats = model.head.candidate_image_floats(shapes.regions, shapes.dim)
    chunk = batched_chunk_size(
        settings.top_k, shapes, settings.memory_budget_mb, image_floats, dtype.itemsize
    )
    begin = time.perf_counter()
    reranked = rerank(
        model,
        source,
        local,
        device=device,
        dtype=dtype,
        chunk=chunk,
        memory_budget_mb=settings.memory_budget_mb,
        show_progress=settings.show_progress,
    )
    scoring = {"seconds": time.perf_counter() - begin, "rerank_group": chunk, "rerank_calls": reranked.calls,
               "rerank_workers": reranked.workers}  # fmt: skip
    stage1 = global_similarity(source.text_globals(), source.image_globals())  # (Q, S) as one process
    candidate = np.zeros(stage1.shape, dtype=bool)
    rows, cols = np.nonzero(mine)
    candidate[rows, candidates.ids[rows, cols] - shard.start] = True
    pair = np.where(mine, reranked.scores, -np.inf).astype(np.float32)
    return ShardState(
        shard,
        stage1.astype(np.float32),
        source.gallery_ids()[1],
        candidate,
        pair,
        time.perf_counter() - start,
        scoring,
    )


def summarize(state: ShardState, query_pids: np.ndarray, top: int) -> ShardSummary:
    """Round 2 on a worker: the shard's best `top` per query (pruned: outside the candidates), and
    its positives with their scores (ties: the earlier row first)."""
    scores = state.scores if state.candidate is None else np.where(state.candidate, -np.inf, state.scores)
    take = min(top, scores.shape[1])
    order = rank_order(scores)[0][:, :take]  # (Q, T')
    top_scores = np.take_along_axis(scores, order, 1).astype(np.float32)
    query, column = np.nonzero(query_pids.reshape(-1, 1) == state.gallery_pids.reshape(1, -1))
    positive = state.scores[query, column].astype(np.float32)
    if state.candidate is not None:
        positive = np.where(state.candidate[query, column], np.nan, positive).astype(np.float32)
    return ShardSummary(
        top_rows=(order + state.shard.start).astype(np.int64),
        top_scores=top_scores,
        positive_query=query.astype(np.int64),
        positive_row=(column + state.shard.start).astype(np.int64),
        positive_score=positive,
        pair=state.pair,
        seconds=state.seconds,
        scoring=state.scoring,
    )


def count_round(state: ShardState, query: np.ndarray, row: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Round 3 on a worker: for each (query, row, score) threshold, the shard's images ranked above it:
    a higher score, or the same score at an earlier gallery row (pruned: candidates excluded)."""
    counts = np.zeros(len(query), dtype=np.int64)
    for begin in range(0, len(query), 2048):
        q, r, s = query[begin : begin + 2048], row[begin : begin + 2048], score[begin : begin + 2048]
        exclude = None if state.candidate is None else state.candidate[q]  # (p, S)
        counts[begin : begin + 2048] = count_above(state.scores[q], s, r, state.shard.start, exclude).numpy()
    return counts


@dataclass(frozen=True)
class ShardedResult:
    ranking: Ranking  # (Q, T) global rows and scores, best first
    positives: tuple[np.ndarray, np.ndarray]  # (P,) query and (P,) 1-based rank of every positive
    num_images: int
    pairs_scored: int
    seconds: float  # first stage and pair scoring (not the summaries and the rank counting)
    seconds_stage1: float | None  # pruned: the merged first stage
    probes: int  # distances the shards' indexes computed (hnsw, ivf; 0 for flat)
    details: dict[str, Any]

    @property
    def per_query(self) -> PerQuery:
        query, ranks = self.positives
        return per_query_from_ranks(query, ranks, len(self.ranking.order), self.num_images)


def score_sharded(
    settings: RoundSettings, shards: list[Shard], query_pids: np.ndarray, executor: Executor
) -> ShardedResult:
    """Rank every query over the sharded gallery: the same top `settings.top` and metrics as one process."""
    num_queries = len(query_pids)
    num_images = shards[-1].stop
    candidates: Candidates | None = None
    proposed: list[Proposed] = []
    start = time.perf_counter()
    if settings.mode == "pruned":
        proposed = executor.gather([executor.submit(stage1_round, settings, s, pure=False) for s in shards])
        lists = [p.candidates for p in proposed]
        candidates = lists[0] if len(lists) == 1 else merge_candidates(lists, min(settings.top_k, num_images))
    states = [executor.submit(score_round, settings, s, candidates, pure=False) for s in shards]
    summaries: list[ShardSummary] = executor.gather(
        [executor.submit(summarize, state, query_pids, settings.top, pure=False) for state in states]
    )
    top_rows = np.concatenate([s.top_rows for s in summaries], axis=1)
    top_scores = np.concatenate([s.top_scores for s in summaries], axis=1)
    query = np.concatenate([s.positive_query for s in summaries])
    row = np.concatenate([s.positive_row for s in summaries])
    score = np.concatenate([s.positive_score for s in summaries])
    if candidates is None:
        ranks = np.ones(len(query), dtype=np.int64)
        order, ordered = merge_top(top_rows, top_scores, settings.top)
        threshold = np.ones(len(query), dtype=bool)
        pairs = num_queries * num_images
    else:
        pair = np.max(np.stack([s.pair for s in summaries if s.pair is not None]), axis=0)  # (Q, k)
        ranks, threshold, cand_order, cand_scores = candidate_ranks(candidates, pair, query, row)
        tail_rows, tail_scores = merge_top(top_rows, top_scores, settings.top)
        order, ordered = join_top(
            cand_order, cand_scores, tail_rows, tail_scores, min(settings.top, num_images)
        )
        pairs = int((candidates.ids >= 0).sum())
    if threshold.any():
        counted = executor.gather(
            [
                executor.submit(
                    count_round, state, query[threshold], row[threshold], score[threshold], pure=False
                )
                for state in states
            ]
        )
        ranks[threshold] += np.sum(counted, axis=0)
    # the scoring span, as one process times it: the slowest shard's search, then its slowest scoring
    # (opening shards, loading models and indexes, summaries and rank counting are not in it)
    stage1 = max((p.seconds for p in proposed), default=0.0)
    scoring = [s.scoring for s in summaries]
    details: dict[str, Any] = {
        "shards": len(shards),
        "shard_seconds": [round(s.seconds, 3) for s in summaries],
        "seconds_wall": time.perf_counter() - start,  # every round, as the driver waited for them
    }
    if candidates is None:
        details |= {key: scoring[0][key] for key in ("query_block", "gallery_block")}
    else:
        details |= {
            "rerank_group": max(s["rerank_group"] for s in scoring),
            "rerank_calls": sum(s["rerank_calls"] for s in scoring),
            "rerank_workers": max(s["rerank_workers"] for s in scoring),
            "adaptive": False,
            "mean_k": pairs / max(1, num_queries),
        }
    return ShardedResult(
        Ranking(order=order, scores=ordered),
        (query, ranks),
        num_images,
        pairs,
        stage1 + max(s["seconds"] for s in scoring),
        stage1 if candidates is not None else None,
        sum(p.probes for p in proposed),
        details,
    )


def ids_of(emb: Path, table: str, column: str) -> np.ndarray:
    """One int64 id column of an EMB Parquet file (`layout.GALLERY` or `layout.QUERIES`), in row order;
    a TbprError when the file is missing or damaged."""
    try:
        return _ids(pq.read_table(emb / table, columns=[column]), column)
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        raise TbprError(f"{emb} is damaged ({exc}); re-run `tbpr embed` into it") from exc


__all__ = ["Executor", "InProcess", "RoundSettings", "ids_of", "merge_candidates", "score_sharded"]
