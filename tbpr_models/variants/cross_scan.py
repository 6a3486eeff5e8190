"""`cross_scan`: stacked cross attention, text-to-image (SCAN, Lee et al., ECCV 2018).

Each word attends over the image regions: a_ln = softmax_n(lambda_softmax * cos(w_l, v_n)). This is
the *plain* variant of SCAN's t-i attention: the softmax acts on the cosines directly, without SCAN's
clipped-l2 normalisation over words. Relevance r_l = cos(w_l, sum_n a_ln v_n) with L2-normalised
regions v_n, pooled over the caption's real words by LogSumExp: S = log(sum_l exp(lambda_lse r_l)) /
lambda_lse. Pairwise: the score needs both sides' local features.

Efficiency (the exhaustive scorer runs over every caption x image): never materialise the
(Q, G, L, N, D) attended vectors. With unit vectors, w·(sum_n a_n v_n) = sum_n a_n cos(w, v_n) reuses
the word-region cosine matrix, and ||sum_n a_n v_n||^2 = a^T (V V^T) a needs only each image's (N, N)
region Gram matrix; the softmax normaliser cancels in the ratio, so r_l = sum_n e_n c_n /
sqrt(e^T Gram e) with e_n = exp(lambda_softmax c_n) (cosines are <= 1, so no max-subtraction is
needed). Everything is a (words, G·N) matmul, a batched (N, N) matmul and element-wise work, in
blocks of words x images, in the dtype of the inputs (bf16 allowed); the padding words are dropped
before scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from tbpr_models.attention import l2_normalize, masked_softmax
from tbpr_models.config import VariantConfig
from tbpr_models.features import Batch, ImageFeatures, TextFeatures
from tbpr_models.losses import ranking_loss
from tbpr_models.registry import register_variant
from tbpr_models.variant import HeadDims, LossContext, VariantHead


@dataclass(frozen=True)
class CrossScanConfig(VariantConfig):
    kind: Literal["cross_scan"] = "cross_scan"
    lambda_softmax: float = 9.0  # inverse temperature of the attention over regions
    lambda_lse: float = 6.0  # LogSumExp pooling over words
    margin: float = 0.2  # of the hinge ranking loss `rank`
    block_words: int = 512  # words scored at once
    block_images: int = 32  # images scored at once


def _word_relevance_exp(
    words: Tensor, regions: Tensor, gram: Tensor, lambda_softmax: float, lambda_lse: float
) -> Tensor:
    """exp(lambda_lse * r) for every word x image: words (W, D), regions (G, N, D) unit -> (W, G).

    The relevance and its exponential are in float32 at least (float64 inputs stay float64)."""
    num_images, num_regions, dim = regions.shape
    flat_regions = regions.reshape(num_images * num_regions, dim)  # (G*N, D)
    scaled = (words * lambda_softmax) @ flat_regions.t()  # (W, G*N) lambda_softmax * cosine
    scaled = scaled.view(-1, num_images, num_regions)  # (W, G, N)
    weights = torch.exp(scaled)  # (W, G, N) unnormalised attention
    dot = torch.linalg.vecdot(weights, scaled) / lambda_softmax  # (W, G): w · attended, times the normaliser
    by_image = weights.transpose(0, 1)  # (G, W, N)
    quadratic = torch.linalg.vecdot(torch.bmm(by_image, gram), by_image).t()  # (W, G): ||attended||^2 * Z^2
    tiny = torch.finfo(quadratic.dtype).tiny
    precise = torch.promote_types(dot.dtype, torch.float32)
    relevance = dot.to(precise) * quadratic.to(precise).clamp(min=tiny).rsqrt()  # (W, G) cosine
    return relevance.mul_(lambda_lse).exp_()


def scan_similarity(
    text_local: Tensor,
    text_mask: Tensor,
    image_local: Tensor,
    lambda_softmax: float = 9.0,
    lambda_lse: float = 6.0,
    block: tuple[int, int] = (512, 32),
) -> Tensor:
    """SCAN text-to-image similarity (Q, G) of text_local (Q, L, D) with mask (Q, L) x image_local (G, N, D).

    `block` = (words, images) scored at once. Computes in the inputs' dtype and returns float32 (float64
    for float64 inputs). A caption
    with no real word scores -inf.
    """
    block_words, block_images = block
    words_all = l2_normalize(text_local[text_mask.bool()])  # (W, D), the real words of all captions
    owner = text_mask.bool().nonzero()[:, 0]  # (W,) caption index of each word
    regions_all = l2_normalize(image_local)  # (G, N, D)
    num_texts, num_images = text_local.shape[0], image_local.shape[0]
    precise = torch.promote_types(text_local.dtype, torch.float32)
    columns = []
    for g0 in range(0, num_images, block_images):
        regions = regions_all[g0 : g0 + block_images]  # (Gb, N, D)
        gram = regions @ regions.transpose(1, 2)  # (Gb, N, N)
        sums = torch.zeros(num_texts, regions.shape[0], device=text_local.device, dtype=precise)
        for w0 in range(0, words_all.shape[0], block_words):
            relevance_exp = _word_relevance_exp(
                words_all[w0 : w0 + block_words], regions, gram, lambda_softmax, lambda_lse
            )
            index = owner[w0 : w0 + block_words]
            sums.index_add_(0, index, relevance_exp)
        columns.append(sums)
    return torch.log(torch.cat(columns, dim=1)) / lambda_lse  # (Q, G)


def scan_word_attention(
    text_local: Tensor, text_mask: Tensor, image_local: Tensor, lambda_softmax: float = 9.0
) -> Tensor:
    """Attention (L, N) of one caption's words (L, D), mask (L,), over one image's regions (N, D).

    Rows of padding words are zero; each real word's row sums to 1 (for heat maps).
    """
    cosine = l2_normalize(text_local) @ l2_normalize(image_local).t()  # (L, N)
    return masked_softmax(cosine * lambda_softmax, text_mask.bool().unsqueeze(-1), dim=-1)


@register_variant(CrossScanConfig)
class CrossScanHead(VariantHead):
    """Mean-pooled globals (for candidates and the base losses) + SCAN pair scorer; no parameters."""

    pairwise = True

    def __init__(self, config: CrossScanConfig, dims: HeadDims) -> None:
        super().__init__(config, dims)
        self.scan = config

    def similarity(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        return scan_similarity(
            texts.local,
            texts.mask,
            images.local,
            lambda_softmax=self.scan.lambda_softmax,
            lambda_lse=self.scan.lambda_lse,
            block=(self.scan.block_words, self.scan.block_images),
        )

    def head_losses(
        self, texts: TextFeatures, images: ImageFeatures, batch: Batch, ctx: LossContext
    ) -> dict[str, Tensor]:
        scores = self.similarity(texts, images)  # (B, B) text x image
        return {"rank": ranking_loss(scores, batch.person_ids, self.scan.margin)}
