"""Encode a split and compute the retrieval metrics (queries = its captions, gallery = its images).

Dimension letters: Q queries, G gallery images, L words, N image regions, D embedding dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from tasks.cache.features import CachedSplit, SplitPoint
from tasks.core.device import autocast
from tasks.core.packed import Ragged
from tasks.data.reader import ImageDataset, SplitData, Tokenize, Transform
from tasks.train.batches import usable_workers
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.metrics import retrieval_metrics
from tbpr_models.model import RetrievalModel
from tbpr_models.scoring import BlockPlan, InMemoryFeatures, similarity_in_blocks


@dataclass(frozen=True)
class EvalSettings:
    device: torch.device
    precision: str = "bf16"  # "bf16": autocast to bfloat16; "fp32": no autocast
    batch_size: int = 256
    query_block: int = 256
    gallery_block: int = 1024
    num_workers: int = 0
    top_k: int | None = None  # pairwise heads: re-rank each caption's global top-k (None: every pair)


@torch.inference_mode()
def encode_images(
    model: RetrievalModel, split: SplitData, transform: Transform, settings: EvalSettings
) -> ImageFeatures:
    """Features of every image of `split`, in gallery order, float32 on `settings.device`."""
    loader = DataLoader(
        ImageDataset(split, transform),
        batch_size=settings.batch_size,
        num_workers=usable_workers(settings.num_workers),
    )
    parts = []
    for pixels in loader:
        with autocast(settings.device, settings.precision):
            parts.append(model.encode_images(pixels.to(settings.device)).to(settings.device, torch.float32))
    return ImageFeatures(
        global_=torch.cat([p.global_ for p in parts]),  # (G, D)
        local=torch.cat([p.local for p in parts]),  # (G, N, D)
    )


@torch.inference_mode()
def encode_texts(
    model: RetrievalModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    settings: EvalSettings,
    cached: np.ndarray | Ragged | None = None,
    start_stage: int = 0,
) -> TextFeatures:
    """Features of tokenised captions (Q, L); each batch is trimmed to its longest caption, then the
    word features are zero-padded (mask False) to the longest caption overall. With `cached` (Q, L', C)
    hidden states from the feature cache, the text encoder continues from stage `start_stage`."""
    lengths = attention_mask.sum(dim=1)  # (Q,)
    width = max(int(lengths.max()), 1) if len(lengths) else 1
    parts = []
    for start in range(0, input_ids.shape[0], settings.batch_size):
        stop = start + settings.batch_size
        length = max(int(lengths[start:stop].max()), 1)
        if cached is not None:
            length = min(length, cached.shape[1])
        ids = input_ids[start:stop, :length].to(settings.device)  # (B, L')
        mask = attention_mask[start:stop, :length].to(settings.device)  # (B, L')
        with autocast(settings.device, settings.precision):
            if cached is None:
                feats = model.encode_texts(ids, mask)
            else:
                hidden = torch.from_numpy(np.ascontiguousarray(cached[start:stop, :length]))
                hidden = hidden.to(settings.device).float()
                feats = model.head.texts(model.text_tokens(ids, mask, hidden, start_stage), mask.bool())
        feats = feats.to(settings.device, torch.float32)
        pad = width - feats.local.shape[1]
        parts.append(
            TextFeatures(
                global_=feats.global_,
                local=torch.nn.functional.pad(feats.local, (0, 0, 0, pad)),  # (B, L, D)
                mask=torch.nn.functional.pad(feats.mask.bool(), (0, pad)),  # (B, L)
            )
        )
    return TextFeatures(
        global_=torch.cat([p.global_ for p in parts]),  # (Q, D)
        local=torch.cat([p.local for p in parts]),  # (Q, L, D)
        mask=torch.cat([p.mask for p in parts]),  # (Q, L)
    )


@torch.inference_mode()
def encode_cached(
    model: RetrievalModel,
    cached: CachedSplit,
    point: SplitPoint,
    input_ids: Tensor,
    attention_mask: Tensor,
    settings: EvalSettings,
) -> tuple[TextFeatures, ImageFeatures]:
    """Features of a split from its feature cache: only the stages above the split point run."""
    images = []
    pooled = model.head.mean_pooled  # only the globals matter: project the mean region (the same global)
    for start in range(0, len(cached.images), settings.batch_size):
        # torch's vectorised float16 -> float32 (numpy's astype is a scalar loop, 5x slower)
        acts = torch.from_numpy(np.ascontiguousarray(cached.images[start : start + settings.batch_size]))
        with autocast(settings.device, settings.precision):
            tokens = model.image_tokens(acts.to(settings.device).float(), point.image, pooled=pooled)
            images.append(model.head.images(tokens).to(settings.device, torch.float32))
    texts = encode_texts(model, input_ids, attention_mask, settings, cached.texts, point.text)
    return texts, ImageFeatures(
        global_=torch.cat([p.global_ for p in images]), local=torch.cat([p.local for p in images])
    )


def evaluate_cached(
    model: RetrievalModel,
    split: SplitData,
    cached: CachedSplit,
    point: SplitPoint,
    tokenize: Tokenize,
    settings: EvalSettings,
) -> dict[str, float]:
    """`evaluate_split` on the feature cache of `split` (the same numbers within float16 rounding)."""
    was_training = model.training
    model.eval()
    try:
        input_ids, attention_mask = tokenize(split.texts)  # (Q, L) each
        texts, images = encode_cached(model, cached, point, input_ids, attention_mask, settings)
        return _metrics(model, texts, images, split, settings)
    finally:
        model.train(was_training)


def evaluate_split(
    model: RetrievalModel, split: SplitData, tokenize: Tokenize, transform: Transform, settings: EvalSettings
) -> dict[str, float]:
    """R1, R5, R10, mAP, mINP (percent) of `split`'s captions against `split`'s images."""
    was_training = model.training
    model.eval()
    try:
        images = encode_images(model, split, transform, settings)
        input_ids, attention_mask = tokenize(split.texts)  # (Q, L) each
        texts = encode_texts(model, input_ids, attention_mask, settings)
        return _metrics(model, texts, images, split, settings)
    finally:
        model.train(was_training)


def _metrics(
    model: RetrievalModel,
    texts: TextFeatures,
    images: ImageFeatures,
    split: SplitData,
    settings: EvalSettings,
) -> dict[str, float]:
    if settings.top_k is not None and model.pairwise and len(images.global_) > settings.top_k:
        return retrieval_metrics(
            pruned_similarity(model, texts, images, settings.top_k, settings),
            split.caption_pids,
            split.image_pids,
        )
    with torch.inference_mode():
        plan = BlockPlan(settings.query_block, settings.gallery_block)

        def scorer(t: TextFeatures, i: ImageFeatures) -> Tensor:
            with autocast(settings.device, settings.precision):
                return model.similarity(t, i)

        similarity = similarity_in_blocks(
            scorer, InMemoryFeatures(texts, images), plan, device=settings.device
        )
    return retrieval_metrics(similarity, split.caption_pids, split.image_pids)


@torch.inference_mode()
def pruned_similarity(
    model: RetrievalModel, texts: TextFeatures, images: ImageFeatures, k: int, settings: EvalSettings
) -> Tensor:
    """(Q, G) scores whose descending order is pruned scoring's ranking: each caption's top `k` images
    by the global cosine first, in the order of the pair score, then every other image in the order
    of the global cosine. Scores k pairs per caption instead of G."""
    cosine = texts.global_.float() @ images.global_.float().t()  # (Q, G)
    candidates = cosine.topk(k, dim=1).indices  # (Q, k)
    with autocast(settings.device, settings.precision):
        pair = model.similarity_candidates(texts, images, candidates).float()  # (Q, k)
    # candidates shifted to >= 0, the rest to <= -1: every candidate ranks above every other image
    ranked = cosine - cosine.amax(dim=1, keepdim=True) - 1.0  # (Q, G) <= -1
    lifted = pair - pair.amin(dim=1, keepdim=True)  # (Q, k) >= 0
    return ranked.scatter_(1, candidates, lifted)
