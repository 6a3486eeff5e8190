"""A plan run in shards: the gallery split over Dask workers (`tasks.score.shards` holds the rounds), the
result the same `Scored` as one process. The driver never opens the gallery: counts and shapes come
from embed.json and the array headers, and the work is counted on a CPU copy of the model.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from tasks.core.shards import dask_client, gallery_shards
from tasks.embed.layout import IMAGE_LOCAL, QUERIES, TEXT_MASK, EmbedInfo
from tasks.score.cost import job_work, mean_words
from tasks.score.plan import ScorePlan
from tasks.score.shards import Executor, Settings, ids_of, score_sharded
from tasks.score.strategy import Scored
from tbpr_models.scoring import Shapes


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
    """Score `emb` by `plan` on `plan.shards` shards: on `executor`, or a Dask client (the scheduler at
    `plan.scheduler`, or a local cluster whose start is recorded as `seconds_cluster_start`, outside
    `seconds`). The top ranks and the metrics are those of one process."""
    info = EmbedInfo.read(emb)
    info.check_weights()  # the workers load the checkpoint by path
    settings = Settings(
        emb=emb.resolve(),
        checkpoint=info.checkpoint,
        mode=plan.mode,
        top_k=plan.top_k,
        index=plan.index,
        memory_budget_mb=plan.memory_budget_mb,
        device=str(device),
        precision=plan.precision,
    )
    parts = gallery_shards(info.num_images, plan.shards)
    person_ids = ids_of(emb, QUERIES, "person_id")
    if executor is None:
        cluster_start = time.perf_counter()
        with dask_client(len(parts), plan.scheduler) as client:
            cluster_seconds = time.perf_counter() - cluster_start
            result = score_sharded(settings, parts, person_ids, client)
    else:
        cluster_seconds, result = 0.0, score_sharded(settings, parts, person_ids, executor)
    shapes, words = emb_shapes(emb, info)
    pruned = plan.mode == "pruned"
    # each shard's hnsw/ivf probes are not gathered from the workers: costed as flat (an upper bound)
    work = job_work(
        info.load_model(torch.device("cpu")),
        shapes,
        words,
        plan.index if pruned else None,
        plan.top_k if pruned else None,
        result.pairs_scored / max(1, shapes.num_texts),
    )
    num_queries = len(person_ids)
    return Scored(
        result.ranking,
        result.seconds,
        result.pairs_scored,
        seconds_stage1=result.seconds_stage1,
        pairs_stage1=num_queries * info.num_images if pruned and plan.index == "flat" else None,
        candidates_found=result.pairs_scored if pruned else None,
        work=work,
        positives=result.positives,
        extra=result.details | {"seconds_cluster_start": cluster_seconds},
    )
