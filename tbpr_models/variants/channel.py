"""`channel`: squeeze-and-excitation channel attention that suppresses background channels.

A gate in (0, 1) per channel, computed from the pooled tokens (squeeze) by a bottleneck MLP
(excitation, Hu et al., CVPR 2018), rescales the image region tokens before mean pooling and the
pooled text vector, so channels that respond to background are damped (Yan et al., TNNLS 2023,
channel attention for text-based person re-identification).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from tbpr_models.attention import l2_normalize, masked_mean
from tbpr_models.config import VariantConfig
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.layers import SqueezeExcite
from tbpr_models.variant import HeadDims, VariantHead


@dataclass(frozen=True)
class ChannelConfig(VariantConfig):
    kind: Literal["channel"] = "channel"
    reduction: int = 4  # bottleneck width D // reduction


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
