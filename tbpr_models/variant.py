"""The variant head base class: what every attention variant plugs into `RetrievalModel`.

A head receives projected tokens, image regions (B, N, D) and word tokens (B, L, D) with their mask,
and returns typed features; `similarity` scores texts x images (Q, G); `head_losses` adds its own
named losses. Single-stream heads (refiners) only pool/refine and score with the cosine of globals;
pairwise heads (`pairwise = True`) need the local features of both sides to score a pair.

Dimension letters: B batch, Q queries, G gallery, N image regions, L words, D embedding dim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from tbpr_models.attention import l2_normalize, masked_mean
from tbpr_models.config import VariantConfig
from tbpr_models.features import Batch, ImageFeatures, TextFeatures


@dataclass(frozen=True)
class HeadDims:
    """Sizes a head may need to build its layers."""

    embed_dim: int  # D
    image_grid: tuple[int, int]  # (h, w) of the image feature map, N = h * w
    max_length: int  # L
    vocab_size: int  # V of the WordPiece vocabulary

    @property
    def num_regions(self) -> int:
        return self.image_grid[0] * self.image_grid[1]


@dataclass(frozen=True)
class LossContext:
    """What a head's losses may need beyond the features of the batch."""

    logit_scale: Tensor  # () multiplier of cosine similarities (1 / temperature)
    encode_text_tokens: Callable[[Tensor, Tensor], Tensor]  # (input_ids, mask) -> (B, L, D) projected
    image_tokens: Tensor  # (B, N, D) projected image regions, before the head
    vocab_size: int
    mask_token_id: int


class VariantHead(nn.Module):
    """Base head: mean pooling, cosine of globals, no extra loss. Subclasses override what they change."""

    pairwise: ClassVar[bool] = False  # True: similarity needs the local features

    def __init__(self, config: VariantConfig, dims: HeadDims) -> None:
        super().__init__()
        self.config = config
        self.dims = dims

    def images(self, tokens: Tensor) -> ImageFeatures:
        """tokens (B, N, D) projected image regions -> features with an L2-normalised global."""
        return ImageFeatures(global_=l2_normalize(tokens.mean(dim=1)), local=tokens)

    def texts(self, tokens: Tensor, mask: Tensor) -> TextFeatures:
        """tokens (B, L, D) projected words, mask (B, L) bool -> features with an L2-normalised global."""
        mask = mask.bool()
        return TextFeatures(global_=l2_normalize(masked_mean(tokens, mask, dim=1)), local=tokens, mask=mask)

    def similarity(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        """(Q, G) scores; the default is the cosine of the (L2-normalised) globals."""
        return texts.global_ @ images.global_.t()  # (Q, G)

    def head_losses(
        self, texts: TextFeatures, images: ImageFeatures, batch: Batch, ctx: LossContext
    ) -> dict[str, Tensor]:
        """Named, unweighted losses of this head beyond the model's `sdm` and `id`."""
        return {}
