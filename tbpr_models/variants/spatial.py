"""`spatial`: learned spatial attention over image regions and attention pooling over words.

Image: a small conv scorer over the feature-map grid gives one logit per region; the global is the
softmax(over N)-weighted sum of the regions, so background regions get little weight (Wang et al.,
"Text-based Person Search via Multi-Granularity Embedding Learning", IJCAI 2021; Liu et al.,
spatial attention for text-based person search, ICPR 2022). Text: additive attention pooling over
words (an MLP gives one logit per word, masked softmax over L).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from tbpr_models.attention import attention_pool, l2_normalize
from tbpr_models.config import VariantConfig
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.layers import RegionScorer, WordScorer
from tbpr_models.variant import HeadDims, VariantHead


@dataclass(frozen=True)
class SpatialConfig(VariantConfig):
    kind: Literal["spatial"] = "spatial"
    hidden: int = 128  # width of the scorers
    kernel_size: int = 3  # spatial context of the region scorer


class SpatialHead(VariantHead):
    def __init__(self, config: SpatialConfig, dims: HeadDims) -> None:
        super().__init__(config, dims)
        d = dims.embed_dim
        self.region_scorer = RegionScorer(d, config.hidden, dims.image_grid, config.kernel_size)
        self.word_scorer = WordScorer(d, config.hidden)

    def images(self, tokens: Tensor) -> ImageFeatures:
        pooled = attention_pool(tokens, self.region_scorer(tokens))  # (B, D)
        return ImageFeatures(global_=l2_normalize(pooled), local=tokens)

    def texts(self, tokens: Tensor, mask: Tensor) -> TextFeatures:
        mask = mask.bool()
        pooled = attention_pool(tokens, self.word_scorer(tokens), mask)  # (B, D)
        return TextFeatures(global_=l2_normalize(pooled), local=tokens, mask=mask)
