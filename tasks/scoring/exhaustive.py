"""Exhaustive scoring: the model's pair scorer over every (query, image) pair, in memory-bounded blocks.

A block of Qb queries x Gb images costs about Qb*L*D + Gb*N*D feature floats plus, for a pairwise
scorer, Qb*Gb*L*N attention floats (times a few temporaries). Blocks are sized so that this stays
under the memory budget; the full (Q, G) score matrix is the only thing that grows with Q*G.
Dimension letters: Q queries, G gallery, N regions, L words, D dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import Progress
from torch import Tensor

from tasks.scoring.source import FeatureSource
from tbpr_models.features import ImageFeatures, TextFeatures

Scorer = Callable[[TextFeatures, ImageFeatures], Tensor]  # (Q, G) scores, e.g. model.similarity
PAIRWISE_TEMPORARIES = 4  # (Qb, Gb, L, N) float tensors alive at once in a pairwise scorer (estimate)


@dataclass(frozen=True)
class Shapes:
    """Sizes that decide block memory."""

    num_texts: int  # Q
    num_images: int  # G
    words: int  # L
    regions: int  # N
    dim: int  # D
    pairwise: bool


@dataclass(frozen=True)
class BlockPlan:
    query_block: int  # Qb
    gallery_block: int  # Gb

    def blocks(self, shapes: Shapes) -> int:
        return math.ceil(shapes.num_texts / self.query_block) * math.ceil(
            shapes.num_images / self.gallery_block
        )


def plan_blocks(shapes: Shapes, memory_budget_mb: float, bytes_per_float: int = 4) -> BlockPlan:
    """Roughly square blocks whose estimated working set fits `memory_budget_mb`."""
    budget = max(1.0, memory_budget_mb) * 2**20
    pair_bytes = bytes_per_float * (
        PAIRWISE_TEMPORARIES * shapes.words * shapes.regions if shapes.pairwise else 1
    )
    image_bytes = bytes_per_float * shapes.regions * shapes.dim
    text_bytes = bytes_per_float * shapes.words * shapes.dim
    # square blocks of side s: s*s*pair + s*(image+text) <= budget
    side = (
        -(image_bytes + text_bytes) + math.sqrt((image_bytes + text_bytes) ** 2 + 4 * pair_bytes * budget)
    ) / (2 * pair_bytes)
    gallery_block = int(min(shapes.num_images, max(1, side)))
    rest = budget - gallery_block * image_bytes
    query_block = int(min(shapes.num_texts, max(1, rest // (text_bytes + gallery_block * pair_bytes))))
    return BlockPlan(query_block=query_block, gallery_block=gallery_block)


@torch.inference_mode()
def exhaustive_similarity(
    scorer: Scorer,
    source: FeatureSource,
    plan: BlockPlan,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    queries: slice | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """(Q, G) float32 scores of every query (or the `queries` slice) against every gallery image."""
    rows = range(source.num_texts)[queries or slice(None)]
    num_images = source.num_images
    out = np.empty((len(rows), num_images), dtype=np.float32)  # (Q, G)
    gallery_starts = range(0, num_images, plan.gallery_block)
    query_starts = range(rows.start, rows.stop, plan.query_block)
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("exhaustive scoring", total=len(gallery_starts) * len(query_starts))
        for g0 in gallery_starts:
            g1 = min(g0 + plan.gallery_block, num_images)
            images = source.images(slice(g0, g1), device, dtype)
            for q0 in query_starts:
                q1 = min(q0 + plan.query_block, rows.stop)
                texts = source.texts(slice(q0, q1), device, dtype)
                block = scorer(texts, images)  # (Qb, Gb)
                out[q0 - rows.start : q1 - rows.start, g0:g1] = block.float().cpu().numpy()
                progress.advance(task)
    return out
