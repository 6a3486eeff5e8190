"""Scoring every (query, image) pair in memory-bounded blocks: the one block scorer that training
evaluation (features in memory) and exhaustive scoring (features memory-mapped from EMB) share.

A block of Qb queries x Gb images costs about Qb*L*D + Gb*N*D feature floats plus, per pair, what
the head says its `similarity` keeps alive (`VariantHead.pair_floats`: 1 for a cosine of globals,
a few (L, N) maps for a pair scorer). Blocks are sized so that this stays under the memory budget;
the (Q, G) score matrix is the only thing that grows with Q*G.
Dimension letters: Q queries, G gallery, N regions, L words, D dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from tbpr_models.features import ImageFeatures, TextFeatures

Rows = slice | np.ndarray  # a contiguous block or a list of row indices
Scorer = Callable[[TextFeatures, ImageFeatures], Tensor]  # (Q, G) scores, e.g. model.similarity


class FeatureSource(Protocol):
    """Features of Q queries and G gallery images, handed out by rows."""

    @property
    def num_images(self) -> int: ...

    @property
    def num_texts(self) -> int: ...

    def image_globals(self) -> np.ndarray:
        """(G, D) float32, L2-normalised."""
        ...

    def text_globals(self) -> np.ndarray:
        """(Q, D) float32, L2-normalised."""
        ...

    def images(self, rows: Rows, device: torch.device, dtype: torch.dtype) -> ImageFeatures: ...

    def texts(self, rows: Rows, device: torch.device, dtype: torch.dtype) -> TextFeatures: ...


class InMemoryFeatures:
    """A `FeatureSource` over encoded features already in memory (training evaluation)."""

    def __init__(self, texts: TextFeatures, images: ImageFeatures) -> None:
        self._texts, self._images = texts, images

    @property
    def num_images(self) -> int:
        return len(self._images)

    @property
    def num_texts(self) -> int:
        return len(self._texts)

    def image_globals(self) -> np.ndarray:
        return self._images.global_.float().cpu().numpy()

    def text_globals(self) -> np.ndarray:
        return self._texts.global_.float().cpu().numpy()

    def images(self, rows: Rows, device: torch.device, dtype: torch.dtype) -> ImageFeatures:
        return self._images.select(_index(rows)).to(device, dtype)

    def texts(self, rows: Rows, device: torch.device, dtype: torch.dtype) -> TextFeatures:
        return self._texts.select(_index(rows)).to(device, dtype)


def _index(rows: Rows) -> slice | Tensor:
    return rows if isinstance(rows, slice) else torch.from_numpy(np.asarray(rows, dtype=np.int64))


@dataclass(frozen=True)
class Shapes:
    """Sizes that decide block memory."""

    num_texts: int  # Q
    num_images: int  # G
    words: int  # L
    regions: int  # N
    dim: int  # D


@dataclass(frozen=True)
class BlockPlan:
    query_block: int  # Qb
    gallery_block: int  # Gb

    def blocks(self, num_texts: int, num_images: int) -> int:
        """How many (query block, gallery block) pairs cover `num_texts` x `num_images`."""
        return math.ceil(num_texts / self.query_block) * math.ceil(num_images / self.gallery_block)


def plan_blocks(
    shapes: Shapes, memory_budget_mb: float, pair_floats: int = 1, bytes_per_float: int = 4
) -> BlockPlan:
    """Roughly square blocks whose estimated working set fits `memory_budget_mb`; `pair_floats` is
    the head's `pair_floats(L, N)`."""
    budget = max(1.0, memory_budget_mb) * 2**20
    pair_bytes = bytes_per_float * max(1, pair_floats)
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
def similarity_in_blocks(
    scorer: Scorer,
    source: FeatureSource,
    plan: BlockPlan,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    queries: slice | None = None,
    on_block: Callable[[], None] | None = None,
) -> np.ndarray:
    """(Q, G) float32 scores of every query (or the `queries` slice) against every gallery image,
    gallery block by gallery block (each image block is read once); `on_block` after each block."""
    rows = range(source.num_texts)[queries or slice(None)]
    num_images = source.num_images
    out = np.empty((len(rows), num_images), dtype=np.float32)  # (Q, G)
    for g0 in range(0, num_images, plan.gallery_block):
        g1 = min(g0 + plan.gallery_block, num_images)
        images = source.images(slice(g0, g1), device, dtype)
        for q0 in range(rows.start, rows.stop, plan.query_block):
            q1 = min(q0 + plan.query_block, rows.stop)
            block = scorer(source.texts(slice(q0, q1), device, dtype), images)  # (Qb, Gb)
            out[q0 - rows.start : q1 - rows.start, g0:g1] = block.float().cpu().numpy()
            if on_block is not None:
                on_block()
    return out
