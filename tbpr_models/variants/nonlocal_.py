"""`nonlocal`: non-local blocks over image regions, contextual self-attention over words, then pooling.

Image: embedded-Gaussian non-local blocks (Wang et al., CVPR 2018) let each region aggregate every
other region; text: pre-norm multi-head self-attention over the words gives contextual word features,
as in the non-local alignment of NAFS (Gao et al., "Contextual Non-Local Alignment over Full-Scale
Representation for Text-Based Person Search", 2021) and the cross-modal non-local modelling of
AXM-Net (Farooq et al., AAAI 2022). Globals are the mean of the refined regions / words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from tbpr_models.attention import l2_normalize, masked_mean
from tbpr_models.config import VariantConfig
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.variant import HeadDims, VariantHead


@dataclass(frozen=True)
class NonLocalConfig(VariantConfig):
    kind: Literal["nonlocal"] = "nonlocal"
    reduction: int = 2  # non-local inner width D // reduction
    blocks: int = 1  # non-local blocks (image) and self-attention blocks (text)
    text_heads: int = 4


class NonLocalBlock(nn.Module):
    """z = x + W softmax(theta(x) phi(x)^T / sqrt(C)) g(x), over the N regions."""

    def __init__(self, dim: int, reduction: int) -> None:
        super().__init__()
        inner = max(dim // reduction, 1)
        self.norm = nn.LayerNorm(dim)
        self.theta = nn.Linear(dim, inner)
        self.phi = nn.Linear(dim, inner)
        self.g = nn.Linear(dim, inner)
        self.out = nn.Linear(inner, dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        theta, phi = self.theta(h), self.phi(h)  # (B, N, C)
        affinity = torch.einsum("bnc,bmc->bnm", theta, phi) / math.sqrt(theta.shape[-1])  # (B, N, N)
        y = torch.einsum("bnm,bmc->bnc", affinity.softmax(dim=-1), self.g(h))  # (B, N, C)
        return x + self.out(y)


class ContextBlock(nn.Module):
    """x + MHA(LN(x)) over the words, padding masked out."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.norm(x)
        attended, _ = self.attn(h, h, h, key_padding_mask=~mask, need_weights=False)  # (B, L, D)
        return x + attended


class NonLocalHead(VariantHead):
    def __init__(self, config: NonLocalConfig, dims: HeadDims) -> None:
        super().__init__(config, dims)
        d = dims.embed_dim
        self.image_blocks = nn.ModuleList(NonLocalBlock(d, config.reduction) for _ in range(config.blocks))
        self.text_blocks = nn.ModuleList(ContextBlock(d, config.text_heads) for _ in range(config.blocks))

    def images(self, tokens: Tensor) -> ImageFeatures:
        for block in self.image_blocks:
            tokens = block(tokens)  # (B, N, D)
        return ImageFeatures(global_=l2_normalize(tokens.mean(dim=1)), local=tokens)

    def texts(self, tokens: Tensor, mask: Tensor) -> TextFeatures:
        mask = mask.bool()
        for block in self.text_blocks:
            tokens = block(tokens, mask)  # (B, L, D)
        return TextFeatures(global_=l2_normalize(masked_mean(tokens, mask, dim=1)), local=tokens, mask=mask)
