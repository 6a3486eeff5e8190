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
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.registry import register_variant
from tbpr_models.variant import PairScorerConfig, PairScorerHead


@dataclass(frozen=True)
class CrossScanConfig(PairScorerConfig):
    kind: Literal["cross_scan"] = "cross_scan"
    lambda_softmax: float = 9.0  # inverse temperature of the attention over regions
    lambda_lse: float = 6.0  # LogSumExp pooling over words
    block_words: int = 512  # words scored at once
    block_images: int = 32  # images scored at once


BLOCK_CAP_MB = 32.0  # measured: bigger candidate blocks are slower (fresh allocations page-fault)


def region_gram(regions: Tensor) -> Tensor:
    """(G, N, N) region Gram matrices of unit regions (G, N, D), in their dtype."""
    return regions @ regions.transpose(1, 2)  # (G, N, N)


def _relevance_exp(scaled: Tensor, gram: Tensor, lambda_softmax: float, lambda_lse: float) -> Tensor:
    """exp(lambda_lse * r) of W words against each of I images: the one SCAN kernel of both scorers.

    scaled (I, N, W) = lambda_softmax * cos(region n of image i, word w), gram (I, N, N) of the unit
    regions -> (I, W). The relevance and its exponential are in float32 at least (float64 stays)."""
    weights = torch.exp(scaled)  # (I, N, W) unnormalised attention
    dot = torch.linalg.vecdot(weights, scaled, dim=-2) / lambda_softmax  # (I, W): w · attended, times Z
    quadratic = torch.linalg.vecdot(torch.bmm(gram, weights), weights, dim=-2)  # (I, W): ||attended||^2 Z^2
    tiny = torch.finfo(quadratic.dtype).tiny
    precise = torch.promote_types(dot.dtype, torch.float32)
    relevance = dot.to(precise) * quadratic.to(precise).clamp(min=tiny).rsqrt()  # (I, W) cosine
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
    for float64 inputs). A caption with no real word scores -inf.
    """
    block_words, block_images = block
    words_all = l2_normalize(text_local[text_mask.bool()])  # (W, D), the real words of all captions
    owner = text_mask.bool().nonzero()[:, 0]  # (W,) caption index of each word
    regions_all = l2_normalize(image_local)  # (G, N, D)
    num_texts, (num_images, num_regions, dim) = text_local.shape[0], image_local.shape
    precise = torch.promote_types(text_local.dtype, torch.float32)
    columns = []
    for g0 in range(0, num_images, block_images):
        regions = regions_all[g0 : g0 + block_images]  # (Gb, N, D)
        gram = region_gram(regions)  # (Gb, N, N)
        flat_regions = regions.reshape(-1, dim) * lambda_softmax  # (Gb*N, D)
        sums = torch.zeros(num_texts, regions.shape[0], device=text_local.device, dtype=precise)
        for w0 in range(0, words_all.shape[0], block_words):
            words = words_all[w0 : w0 + block_words]  # (Wb, D)
            scaled = (flat_regions @ words.t()).view(-1, num_regions, words.shape[0])  # (Gb, N, Wb)
            relevance_exp = _relevance_exp(scaled, gram, lambda_softmax, lambda_lse)  # (Gb, Wb)
            sums.index_add_(0, owner[w0 : w0 + block_words], relevance_exp.t())
        columns.append(sums)
    return torch.log(torch.cat(columns, dim=1)) / lambda_lse  # (Q, G)


def scan_similarity_candidates(
    text_local: Tensor,
    text_mask: Tensor,
    image_local: Tensor,
    candidates: Tensor,
    lambda_softmax: float = 9.0,
    lambda_lse: float = 6.0,
    memory_budget_mb: float = 256.0,
) -> Tensor:
    """`scan_similarity` (Q, G) gathered at candidates (Q, k) of gallery rows, -1 = none (scores -inf).

    text_local (Q, L, D), text_mask (Q, L), image_local (G, N, D). Image-major, like the exhaustive
    scorer: each candidate image takes the real words of every query that has it as a candidate, so a
    block of images is one (N, D) x (D, words) matmul per image and the shared kernel `_relevance_exp`
    (no per-pair small matmuls); images are sorted by their word count and blocked to the memory
    budget, padded to the block's longest list. Returns float32 (float64 for float64 inputs).
    """
    mask = text_mask.bool()
    num_texts, k = candidates.shape
    num_regions, dim = image_local.shape[1:]
    precise = torch.promote_types(text_local.dtype, torch.float32)
    out = torch.full((num_texts, k), -torch.inf, device=text_local.device, dtype=precise)  # (Q, k)
    words_all = l2_normalize(text_local[mask])  # (W, D) the real words of all captions
    lengths = mask.sum(dim=1)  # (Q,)
    first_word = torch.cumsum(lengths, 0) - lengths  # (Q,) row of each caption's first word
    query, slot = (candidates >= 0).nonzero(as_tuple=True)  # (P,) the pairs to score
    used, image = torch.unique(candidates[query, slot], return_inverse=True)  # (U,), (P,) row in `used`
    per_image = torch.zeros(len(used), dtype=torch.long, device=candidates.device)
    per_image.index_add_(0, image, lengths[query])  # (U,) words to score against each image
    rank = torch.empty_like(per_image)
    image_order = torch.argsort(per_image, descending=True, stable=True)  # (U,) most words first
    rank[image_order] = torch.arange(len(used), device=candidates.device)
    by_rank = torch.argsort(rank[image], stable=True)  # (P,) pairs grouped by image, in image order
    query, slot, pair_rank = query[by_rank], slot[by_rank], rank[image[by_rank]]
    counts = per_image[image_order]  # (U,) words per image, descending
    sums = torch.zeros(len(query), device=text_local.device, dtype=precise)  # (P,) sum_l exp(lse r)
    item = max(text_local.element_size(), 4)
    i0 = 0
    while i0 < len(used):
        widest = max(1, int(counts[i0].item()))  # the block's longest word list
        budget = min(memory_budget_mb, BLOCK_CAP_MB) * 2**20
        block = max(1, int(budget // (6 * item * widest * (num_regions + dim))))
        i1 = min(i0 + block, len(used))
        p0, p1 = torch.searchsorted(pair_rank, torch.tensor([i0, i1], device=pair_rank.device)).tolist()
        pair_len = lengths[query[p0:p1]]  # (Pb,)
        entry_pair = torch.repeat_interleave(torch.arange(p0, p1, device=sums.device), pair_len)  # (E,)
        pair_start = torch.cumsum(pair_len, 0) - pair_len  # (Pb,) entry of each pair's first word
        offset = torch.arange(len(entry_pair), device=sums.device) - pair_start[entry_pair - p0]  # (E,)
        word = first_word[query[entry_pair]] + offset  # (E,) row in words_all
        entry_image = pair_rank[entry_pair] - i0  # (E,) image within the block
        image_start = torch.cumsum(counts[i0:i1], 0) - counts[i0:i1]  # (Ib,) entry of its first word
        position = torch.arange(len(entry_pair), device=sums.device) - image_start[entry_image]  # (E,)
        padded = words_all.new_zeros(i1 - i0, widest, dim)  # (Ib, Wb, D), zero words are never read
        padded[entry_image, position] = words_all[word]
        regions = l2_normalize(image_local[used[image_order[i0:i1]]])  # (Ib, N, D)
        scaled = torch.bmm(regions * lambda_softmax, padded.transpose(1, 2))  # (Ib, N, Wb)
        relevance_exp = _relevance_exp(scaled, region_gram(regions), lambda_softmax, lambda_lse)  # (Ib, Wb)
        sums.index_add_(0, entry_pair, relevance_exp[entry_image, position])
        i0 = i1
    out[query, slot] = torch.log(sums) / lambda_lse
    return out


def scan_word_attention(
    text_local: Tensor, text_mask: Tensor, image_local: Tensor, lambda_softmax: float = 9.0
) -> Tensor:
    """Attention (L, N) of one caption's words (L, D), mask (L,), over one image's regions (N, D).

    Rows of padding words are zero; each real word's row sums to 1 (for heat maps).
    """
    cosine = l2_normalize(text_local) @ l2_normalize(image_local).t()  # (L, N)
    return masked_softmax(cosine * lambda_softmax, text_mask.bool().unsqueeze(-1), dim=-1)


@register_variant(CrossScanConfig)
class CrossScanHead(PairScorerHead):
    """Mean-pooled globals (for candidates and the base losses) + SCAN pair scorer; no parameters."""

    config: CrossScanConfig

    def attention_similarity(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        return scan_similarity(
            texts.local,
            texts.mask,
            images.local,
            lambda_softmax=self.config.lambda_softmax,
            lambda_lse=self.config.lambda_lse,
            block=(self.config.block_words, self.config.block_images),
        )

    def attention_candidates(
        self, texts: TextFeatures, images: ImageFeatures, candidates: Tensor, memory_budget_mb: float
    ) -> Tensor:
        return scan_similarity_candidates(
            texts.local,
            texts.mask,
            images.local,
            candidates,
            lambda_softmax=self.config.lambda_softmax,
            lambda_lse=self.config.lambda_lse,
            memory_budget_mb=memory_budget_mb,
        )
