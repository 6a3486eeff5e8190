"""A plan run in shards: the gallery split over Dask workers (`tasks.score.shards` holds the rounds), the
result the same `Scored` for any number of shards: one process is one shard, run in place. The driver
never opens the gallery: counts and shapes come
from embed.json and the array headers, and the work is counted on a CPU copy of the model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tasks.core.shards import dask_client, gallery_shards
from tasks.embed.layout import IMAGE_LOCAL, QUERIES, TEXT_MASK, EmbedInfo
from tasks.score.cost import job_work, mean_words
from tasks.score.merge import Executor, InProcess
from tasks.score.shards import RoundSettings, _model, ids_of, score_sharded
from tasks.score.strategy import Scored
from tbpr_models.scoring import Shapes

if TYPE_CHECKING:
    from tasks.score.plan import ScorePlan


def emb_shapes(emb: Path, info: EmbedInfo) -> tuple[Shapes, int]:
    """The EMB's shapes and mean caption words without loading its features: embed.json's counts and
    dims, the memory-mapped arrays' headers (and the (Q, L) word masks, small)."""
    text_mask = np.load(emb / TEXT_MASK, mmap_mode="r")  # (Q, L) bool
    image_local = np.load(emb / IMAGE_LOCAL, mmap_mode="r")  # (G, N, D) float16, header only
    shapes = Shapes(
        num_texts=info.num_queries,
        num_images=info.num_images,
        words=text_mask.shape[1],
        regions=image_local.shape[1],
        dim=info.embed_dim,
    )
    return shapes, mean_words(np.asarray(text_mask))


def score_in_shards(
    plan: ScorePlan, emb: Path, device: torch.device, executor: Executor | None = None
) -> Scored:
    """Score `emb` by `plan` in `plan.shards` shards: one shard in this process (`InProcess`), more on
    `executor` or a Dask client (the scheduler at `plan.scheduler`, or a local cluster whose start is
    recorded as `seconds_cluster_start`). The top ranks and the metrics do not depend on the shards."""
    info = EmbedInfo.read(emb)
    info.check_weights()  # the workers load the checkpoint by path
    parts = gallery_shards(info.num_images, plan.shards)
    here = executor is None and len(parts) == 1
    settings = RoundSettings(
        emb=emb.resolve(),
        checkpoint=info.checkpoint,
        mode=plan.mode,
        top_k=plan.top_k,
        index=plan.index,
        memory_budget_mb=plan.memory_budget_mb,
        device=str(device),
        precision=plan.precision,
        weights=info.weights_digest,
        show_progress=here,
    )
    person_ids = ids_of(emb, QUERIES, "person_id")
    cluster_seconds = None
    if executor is not None or here:
        result = score_sharded(settings, parts, person_ids, executor or InProcess())
    else:
        cluster_start = time.perf_counter()
        with dask_client(len(parts), plan.scheduler) as client:
            cluster_seconds = time.perf_counter() - cluster_start
            result = score_sharded(settings, parts, person_ids, client)
    shapes, words = emb_shapes(emb, info)
    pruned = plan.mode == "pruned"
    num_queries = max(1, len(person_ids))
    work = job_work(
        _model(info.checkpoint, str(device) if here else "cpu", info.weights_digest),  # this process's copy
        shapes,
        words,
        plan.index if pruned else None,
        plan.top_k if pruned else None,
        result.pairs_scored / num_queries,
        probes_per_query=result.probes / num_queries if result.probes else None,
    )
    extra = result.details | ({} if cluster_seconds is None else {"seconds_cluster_start": cluster_seconds})
    return Scored(
        result.ranking,
        result.seconds,
        result.pairs_scored,
        seconds_stage1=result.seconds_stage1,
        pairs_stage1=len(person_ids) * info.num_images if pruned and plan.index == "flat" else None,
        candidates_found=result.pairs_scored if pruned else None,
        work=work,
        positives=result.positives,
        extra=extra,
    )
