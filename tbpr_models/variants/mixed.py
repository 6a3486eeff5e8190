"""`mixed`: channel then spatial attention (CBAM) for the globals, plus K part/phrase embeddings.

Global: a CBAM-style block (Woo et al., ECCV 2018): a channel gate from the average- and max-pooled
tokens, then spatial attention pooling (softmax over regions, or over words for the text). Parts:
K learned part queries attend over the regions and K learned phrase queries over the words, giving
K part and K phrase embeddings that an extra `part` loss aligns (SDM on the concatenation of the
L2-normalised parts), as in the part/phrase matching of Li et al. (Sensors 2020) and the
feature-decomposition network FDN of Wang et al. (Neurocomputing 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from tbpr_models.attention import attention_pool, l2_normalize, masked_mean, masked_softmax
from tbpr_models.config import VariantConfig
from tbpr_models.features import Batch, ImageFeatures, TextFeatures
from tbpr_models.layers import RegionScorer, SqueezeExcite, WordScorer
from tbpr_models.losses import itc_loss, sdm_loss
from tbpr_models.variant import HeadDims, LossContext, VariantHead


@dataclass(frozen=True)
class MixedConfig(VariantConfig):
    kind: Literal["mixed"] = "mixed"
    reduction: int = 4  # channel-gate bottleneck D // reduction
    hidden: int = 128  # width of the spatial scorers
    kernel_size: int = 3
    num_parts: int = 4  # K
    part_loss: Literal["sdm", "itc"] = "sdm"


class PartQueries(nn.Module):
    """K learned queries attend over tokens (B, M, D): K embeddings (B, K, D)."""

    def __init__(self, dim: int, num_parts: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_parts, dim) / math.sqrt(dim))
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        keys = self.key(tokens)  # (B, M, D)
        logits = torch.einsum("kd,bmd->bkm", self.queries.to(keys.dtype), keys) / math.sqrt(keys.shape[-1])
        weights = masked_softmax(logits, None if mask is None else mask.unsqueeze(1), dim=-1)  # (B, K, M)
        return torch.einsum("bkm,bmd->bkd", weights, self.value(tokens))  # (B, K, D)


def _masked_max(tokens: Tensor, mask: Tensor) -> Tensor:
    """Max over words (B, L, D) -> (B, D), ignoring padding."""
    return tokens.masked_fill(~mask.unsqueeze(-1), torch.finfo(tokens.dtype).min).amax(dim=1)


def _flatten_parts(parts: Tensor) -> Tensor:
    """(B, K, D) -> (B, K*D) unit vectors whose cosine is the mean of the per-part cosines."""
    b, k, d = parts.shape
    return l2_normalize(parts).reshape(b, k * d) / math.sqrt(k)  # (B, K*D)


class MixedHead(VariantHead):
    loss_names = ("part",)

    def __init__(self, config: MixedConfig, dims: HeadDims) -> None:
        super().__init__(config, dims)
        d = dims.embed_dim
        self.image_gate = SqueezeExcite(d, config.reduction)
        self.text_gate = SqueezeExcite(d, config.reduction)
        self.region_scorer = RegionScorer(d, config.hidden, dims.image_grid, config.kernel_size)
        self.word_scorer = WordScorer(d, config.hidden)
        self.image_parts = PartQueries(d, config.num_parts)
        self.text_phrases = PartQueries(d, config.num_parts)
        self.part_loss = config.part_loss

    def images(self, tokens: Tensor) -> ImageFeatures:
        gate = self.image_gate(tokens.mean(dim=1), tokens.amax(dim=1))  # (B, D)
        refined = tokens * gate.unsqueeze(1)  # (B, N, D)
        pooled = attention_pool(refined, self.region_scorer(refined))  # (B, D)
        return ImageFeatures(global_=l2_normalize(pooled), local=refined)

    def texts(self, tokens: Tensor, mask: Tensor) -> TextFeatures:
        mask = mask.bool()
        gate = self.text_gate(masked_mean(tokens, mask, dim=1), _masked_max(tokens, mask))  # (B, D)
        refined = tokens * gate.unsqueeze(1)  # (B, L, D)
        pooled = attention_pool(refined, self.word_scorer(refined), mask)  # (B, D)
        return TextFeatures(global_=l2_normalize(pooled), local=refined, mask=mask)

    def parts(self, texts: TextFeatures, images: ImageFeatures) -> tuple[Tensor, Tensor]:
        """(phrase embeddings (B, K, D), part embeddings (B, K, D)) from the refined local features."""
        return self.text_phrases(texts.local, texts.mask), self.image_parts(images.local)

    def head_losses(
        self, texts: TextFeatures, images: ImageFeatures, batch: Batch, ctx: LossContext
    ) -> dict[str, Tensor]:
        phrases, parts = self.parts(texts, images)
        text_parts, image_parts = _flatten_parts(phrases), _flatten_parts(parts)
        if self.part_loss == "itc":
            return {"part": itc_loss(text_parts, image_parts, ctx.logit_scale)}
        return {"part": sdm_loss(text_parts, image_parts, ctx.person_ids, ctx.logit_scale)}
