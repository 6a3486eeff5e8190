"""Counted scoring cost: what a job does per query, as numbers that do not depend on the timer.

A job's cost per query is the sum of
- encoding the query caption with every model the job runs (a cascade encodes with two),
- its first stage: the gallery cosines a flat index computes (G per query), or the distances an
  hnsw/ivf index computes (FAISS's own `ndis` counters: the index probes), at 2·D FLOPs each,
- its pair scoring: the pairs it scores per query times the head's FLOPs per pair.
FLOPs are those `torch.utils.flop_counter` counts (matmuls, bmm, attention: the element-wise work
such as SCAN's exponentials is not counted) on a fixed synthetic block of the job's shapes, so the
same config gives the same numbers on any machine, however busy. A pair costs at least the 2·D of
the global cosine every pair scorer adds (the counter does not see a `vecdot`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from tbpr_models import RetrievalModel
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.scoring import Shapes

SYNTHETIC_QUERIES = 4  # captions of the synthetic block the pair FLOPs are counted on
SYNTHETIC_IMAGES = 16  # images of the exhaustive block (the candidate block uses the job's k)


# The field's test split (CUHK-PEDES: 6,156 queries x 3,074 images): each job's cost is also given at
# that gallery size, where pair scoring, not query encoding, decides what a query costs
CUHK_PEDES_GALLERY = 3074


@dataclass(frozen=True)
class WorkCounts:
    """A scoring job's work per query (FLOPs) and its parts."""

    encode_flops: int  # encoding one caption, summed over the job's models
    stage1_flops: float  # the first stage per query (0 for exhaustive)
    pair_flops: float  # FLOPs per scored pair
    pairs_per_query: float
    num_images: int  # G of the scored gallery
    stage1_per_image: bool = False  # a flat first stage: a cosine per gallery image
    # pairs per query on another gallery: None, one per image (exhaustive); else min(k, G), or the
    # pairs scored here when k is the query's own (adaptive)
    top_k: int | None = None
    adaptive: bool = False

    @property
    def flops_per_query(self) -> float:
        return self.encode_flops + self.stage1_flops + self.pairs_per_query * self.pair_flops

    def flops_per_query_at(self, images: int) -> float:
        """The same job's FLOPs per query against a gallery of `images` (index probes kept as counted)."""
        stage1 = (
            self.stage1_flops * images / max(1, self.num_images)
            if self.stage1_per_image
            else self.stage1_flops
        )
        if self.top_k is None:
            pairs = float(images)
        else:
            pairs = self.pairs_per_query if self.adaptive else float(min(self.top_k, images))
        return self.encode_flops + stage1 + pairs * self.pair_flops

    def details(self) -> dict[str, Any]:
        """What metrics.json and MLflow record."""
        return {
            "flops_per_query": self.flops_per_query,
            "flops_per_query_cuhk_pedes": self.flops_per_query_at(CUHK_PEDES_GALLERY),
            "flops_encode_query": self.encode_flops,
            "flops_stage1_per_query": self.stage1_flops,
            "flops_per_pair": self.pair_flops,
        }


def _count(fn: Any) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def encode_flops(model: RetrievalModel, words: int) -> int:
    """FLOPs of encoding one caption of `words` tokens (text encoder, projection and head pooling)."""
    model.eval()
    ids = torch.ones((1, max(1, words)), dtype=torch.long, device=_device(model))
    mask = torch.ones_like(ids)
    return _count(lambda: model.encode_texts(ids, mask))


def _device(model: RetrievalModel) -> torch.device:
    return next(model.parameters()).device


def _synthetic(shapes: Shapes, words: int, images: int) -> tuple[TextFeatures, ImageFeatures]:
    gen = torch.Generator().manual_seed(0)
    (length, regions, dim) = (max(1, shapes.words), max(1, shapes.regions), shapes.dim)
    mask = torch.arange(length).expand(SYNTHETIC_QUERIES, length) < max(1, min(words, length))  # (Qs, L)
    text_global = torch.nn.functional.normalize(torch.randn(SYNTHETIC_QUERIES, dim, generator=gen), dim=-1)
    image_global = torch.nn.functional.normalize(torch.randn(images, dim, generator=gen), dim=-1)
    texts = TextFeatures(
        global_=text_global, local=torch.randn(SYNTHETIC_QUERIES, length, dim, generator=gen), mask=mask
    )
    return texts, ImageFeatures(global_=image_global, local=torch.randn(images, regions, dim, generator=gen))


def pair_flops(model: RetrievalModel, shapes: Shapes, words: int, k: int | None) -> float:
    """FLOPs per pair of the head's exhaustive scorer (`k` None) or its candidate scorer with k candidates
    per query, on a synthetic block of `shapes` (captions of `words` real words); at least 2·D."""
    head, device = model.head, _device(model)
    images = SYNTHETIC_IMAGES if k is None else max(1, k)
    texts, gallery = _synthetic(shapes, words, images)
    texts, gallery = texts.to(device), gallery.to(device)
    if k is None:
        flops = _count(lambda: head.similarity(texts, gallery))
    else:
        candidates = (
            torch.arange(images, device=device).expand(SYNTHETIC_QUERIES, images).contiguous()
        )  # (Qs, k)
        flops = _count(lambda: head.similarity_candidates(texts, gallery, candidates))
    return max(2.0 * shapes.dim, flops / (SYNTHETIC_QUERIES * images))


def mean_words(text_mask: np.ndarray) -> int:
    """The mean count of real words per caption (rounded), from the EMB's word masks (Q, L)."""
    return round(float(np.asarray(text_mask).sum(axis=1).mean())) if len(text_mask) else 0


class IndexProbes:
    """Distances FAISS computes inside the block (hnsw and ivf; a flat index counts none): `with
    IndexProbes() as probes: search(...)`, then `probes.count`."""

    count = 0

    def __enter__(self) -> IndexProbes:
        stats: Any = faiss.cvar  # FAISS's global search counters (SWIG, untyped)
        stats.hnsw_stats.reset()
        stats.indexIVF_stats.reset()
        return self

    def __exit__(self, *exc: object) -> None:
        stats: Any = faiss.cvar
        self.count = int(stats.hnsw_stats.ndis) + int(stats.indexIVF_stats.ndis)


def stage1_flops(kind: str | None, num_images: int, dim: int, probes_per_query: float | None) -> float:
    """FLOPs per query of the first stage: flat, 2·D per gallery image; another index, 2·D per probe."""
    if kind is None:
        return 0.0
    distances = num_images if kind == "flat" or probes_per_query is None else probes_per_query
    return 2.0 * dim * distances


def job_work(
    model: RetrievalModel,
    shapes: Shapes,
    words: int,
    kind: str | None,
    top_k: int | None,
    pairs_per_query: float,
    probes_per_query: float | None = None,
    candidates_model: RetrievalModel | None = None,
    adaptive: bool = False,
) -> WorkCounts:
    """A job's counted work per query from the EMB's shapes and mean caption words (`mean_words`):
    every model it runs encodes the query; `kind` None is a job without a first stage."""
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
