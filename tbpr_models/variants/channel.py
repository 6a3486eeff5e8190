"""`channel`: squeeze-and-excitation channel attention that suppresses background channels.

A gate in (0, 1) per channel, computed from the pooled tokens (squeeze) by a bottleneck MLP
(excitation, Hu et al., CVPR 2018), rescales the image region tokens before mean pooling and the
pooled text vector, so channels that respond to background are damped (Yan et al., TNNLS 2023,
channel attention for text-based person re-identification).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from tbpr_models.attention import l2_normalize, masked_mean
from tbpr_models.config import VariantConfig
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.registry import register_variant
from tbpr_models.variant import HeadDims, VariantHead


@dataclass(frozen=True)
class ChannelConfig(VariantConfig):
    kind: Literal["channel"] = "channel"
    reduction: int = 4  # bottleneck width D // reduction


class SqueezeExcite(nn.Module):
    """Channel gate (B, D) in (0, 1) from one or more pooled descriptors (B, D) through a shared MLP."""

    def __init__(self, dim: int, reduction: int) -> None:
        super().__init__()
        inner = max(dim // reduction, 1)
        self.mlp = nn.Sequential(nn.Linear(dim, inner), nn.ReLU(inplace=True), nn.Linear(inner, dim))

    def forward(self, *pooled: Tensor) -> Tensor:
        logits = sum((self.mlp(p) for p in pooled[1:]), self.mlp(pooled[0]))  # (B, D)
        return logits.sigmoid()


@register_variant(ChannelConfig)
class ChannelHead(VariantHead):
    def __init__(self, config: ChannelConfig, dims: HeadDims) -> None:
        super().__init__(config, dims)
        self.image_gate = SqueezeExcite(dims.embed_dim, config.reduction)
        self.text_gate = SqueezeExcite(dims.embed_dim, config.reduction)

    def images(self, tokens: Tensor) -> ImageFeatures:
        gate = self.image_gate(tokens.mean(dim=1))  # (B, D)
        refined = tokens * gate.unsqueeze(1)  # (B, N, D)
        return ImageFeatures(global_=l2_normalize(refined.mean(dim=1)), local=refined)

    def texts(self, tokens: Tensor, mask: Tensor) -> TextFeatures:
        mask = mask.bool()
        pooled = masked_mean(tokens, mask, dim=1)  # (B, D)
        gate = self.text_gate(pooled)  # (B, D)
        local = tokens * gate.unsqueeze(1)  # (B, L, D)
        return TextFeatures(global_=l2_normalize(pooled * gate), local=local, mask=mask)
