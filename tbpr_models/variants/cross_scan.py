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
from tbpr_models.variant import PairScorerConfig, PairScorerHead


@dataclass(frozen=True)
class CrossScanConfig(PairScorerConfig):
    kind: Literal["cross_scan"] = "cross_scan"
    lambda_softmax: float = 9.0  # inverse temperature of the attention over regions
    lambda_lse: float = 6.0  # LogSumExp pooling over words
    block_words: int = 512  # words scored at once
    block_images: int = 16  # images scored at once (measured: 16 is 15-25% faster than 32, 1-2 threads)


CANDIDATE_BLOCK_MB = 2.0  # gathered words per candidate block: measured fastest (bigger leaves the cache)
# bf16 matmuls go through oneDNN, which builds a kernel per shape: widths rounded up to a multiple of this
# repeat shapes (without it, bf16 re-ranking was no faster than float32)
LOW_PRECISION_WIDTH_STEP = 64
TABLE_BYTES_PER_SLOT = 64  # index tables and their temporaries, per padded word slot


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
    block: tuple[int, int] = (512, 16),
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
    block_mb: float = CANDIDATE_BLOCK_MB,
) -> Tensor:
    """`scan_similarity` (Q, G) gathered at candidates (Q, k) of gallery rows, -1 = none (scores -inf).

    text_local (Q, L, D), text_mask (Q, L), image_local (G, N, D). Image-major, like the exhaustive
    scorer: each candidate image takes the real words of every query that has it as a candidate.
    Images are sorted by that word count and cut into blocks of ~`block_mb` of words, each padded to
    its first (longest) list (rounded up to `LOW_PRECISION_WIDTH_STEP` below float32); one
    `index_select` gathers a block's words through a precomputed table, one bmm and the shared kernel
    `_relevance_exp` score it, and one `index_add_` sums each pair's words. The tables, unit regions and
    Gram matrices are built for groups of blocks that fit `memory_budget_mb`. Returns float32 (float64
    for float64 inputs).
    """
    mask = text_mask.bool()
    num_texts, k = candidates.shape
    num_regions, dim = image_local.shape[1:]
    precise = torch.promote_types(text_local.dtype, torch.float32)
    out = torch.full((num_texts, k), -torch.inf, device=text_local.device, dtype=precise)  # (Q, k)
    query, slot = (candidates >= 0).nonzero(as_tuple=True)  # (P,) the pairs to score
    if len(query) == 0:
        return out
    scaled_words = l2_normalize(text_local[mask]) * lambda_softmax  # (W, D) the real words of all captions
    words = torch.cat([scaled_words, scaled_words.new_zeros(1, dim)])  # (W + 1, D): row W pads
    lengths = mask.sum(dim=1)  # (Q,)
    first_word = torch.cumsum(lengths, 0) - lengths  # (Q,) row of each caption's first word
    pairs = _image_major(candidates[query, slot], lengths[query])
    query, slot = query[pairs.order], slot[pairs.order]  # (P,) grouped by image, most words first
    item = max(text_local.element_size(), 4)
    step = LOW_PRECISION_WIDTH_STEP if text_local.element_size() < 4 else 1
    blocks = _candidate_blocks(pairs.counts.tolist(), int(block_mb * 2**20) // (dim * item), step)
    image_bytes = item * num_regions * (dim + num_regions)  # unit regions and their Gram matrix
    for group in _groups(blocks, int(memory_budget_mb * 2**20), TABLE_BYTES_PER_SLOT, image_bytes):
        i0, i1 = group[0].start, group[-1].stop
        p0, p1 = torch.searchsorted(pairs.image, torch.tensor([i0, i1], device=query.device)).tolist()
        group_query = query[p0:p1]  # (Pg,)
        word_at, pair_at = _gather_tables(
            group, pairs.image[p0:p1] - i0, lengths[group_query], first_word[group_query], pad=len(words) - 1
        )
        regions = l2_normalize(image_local[pairs.used[i0:i1]])  # (Ig, N, D)
        grams = region_gram(regions)  # (Ig, N, N)
        sums = torch.zeros(p1 - p0 + 1, device=text_local.device, dtype=precise)  # (Pg + 1,), last pads
        s0 = 0
        for block in group:
            s1, b0, b1 = s0 + len(block) * block.width, block.start - i0, block.stop - i0
            padded = words.index_select(0, word_at[s0:s1]).view(len(block), block.width, dim)  # (Ib, Wb, D)
            scaled = torch.bmm(regions[b0:b1], padded.transpose(1, 2))  # (Ib, N, Wb)
            relevance_exp = _relevance_exp(scaled, grams[b0:b1], lambda_softmax, lambda_lse)  # (Ib, Wb)
            sums.index_add_(0, pair_at[s0:s1], relevance_exp.reshape(-1))
            s0 = s1
        out[group_query, slot[p0:p1]] = torch.log(sums[:-1]) / lambda_lse
    return out


@dataclass(frozen=True)
class _ImageMajor:
    """Candidate pairs grouped by image, images by descending word count."""

    used: Tensor  # (U,) gallery rows, most words first
    counts: Tensor  # (U,) words to score against each used image
    order: Tensor  # (P,) pairs in image order
    image: Tensor  # (P,) rank in `used` of each ordered pair's image (ascending)


def _image_major(pair_images: Tensor, pair_words: Tensor) -> _ImageMajor:
    used, image = torch.unique(pair_images, return_inverse=True)  # (U,), (P,) row in `used`
    per_image = torch.zeros(len(used), dtype=torch.long, device=used.device).index_add_(0, image, pair_words)
    image_order = torch.argsort(per_image, descending=True, stable=True)  # (U,) most words first
    rank = torch.empty_like(image_order)
    rank[image_order] = torch.arange(len(used), device=used.device)
    order = torch.argsort(rank[image], stable=True)  # (P,)
    return _ImageMajor(used[image_order], per_image[image_order], order, rank[image[order]])


@dataclass(frozen=True)
class _Block:
    """Images start..stop (ranks) padded to `width` words; `counts` their real word counts."""

    start: int
    stop: int
    width: int
    counts: list[int]

    def __len__(self) -> int:
        return self.stop - self.start


def _candidate_blocks(counts: list[int], max_words: int, step: int = 1) -> list[_Block]:
    """Consecutive images (by descending word count) in blocks of about `max_words` padded words (at
    least one image each), each padded to its longest list rounded up to a multiple of `step`."""
    blocks, start = [], 0
    while start < len(counts):
        width = -(-max(1, counts[start]) // step) * step
        stop = min(len(counts), start + max(1, max_words // width))
        blocks.append(_Block(start, stop, width, counts[start:stop]))
        start = stop
    return blocks


def _groups(blocks: list[_Block], budget: int, slot_bytes: int, image_bytes: int) -> list[list[_Block]]:
    """Consecutive blocks whose tables (`slot_bytes` per padded slot) and images (`image_bytes` each)
    fit `budget` bytes (at least one block each)."""
    groups: list[list[_Block]] = []
    used = 0
    for block in blocks:
        size = len(block) * (block.width * slot_bytes + image_bytes)
        if not groups or used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(block)
        used += size
    return groups


def _gather_tables(
    group: list[_Block], pair_image: Tensor, pair_len: Tensor, pair_first_word: Tensor, pad: int
) -> tuple[Tensor, Tensor]:
    """(word_at, pair_at), each (S,) over the group's padded slots: the word row to gather (`pad` for
    padding) and the pair (within the group, ascending) each slot adds to (Pg for padding).

    pair_image (Pg,) image of each pair within the group (ascending), pair_len (Pg,) its word count,
    pair_first_word (Pg,) the row of its first word."""
    device = pair_image.device
    widths = torch.tensor([b.width for b in group for _ in range(len(b))], device=device)  # (Ig,)
    counts = torch.tensor([c for b in group for c in b.counts], device=device)  # (Ig,)
    image_slot = torch.cumsum(widths, 0) - widths  # (Ig,) first padded slot of each image
    image_entry = torch.cumsum(counts, 0) - counts  # (Ig,) first entry of each image
    entry_pair = torch.repeat_interleave(torch.arange(len(pair_len), device=device), pair_len)  # (E,)
    entry = torch.arange(len(entry_pair), device=device)  # (E,) words in pair order = image order
    within_pair = entry - (torch.cumsum(pair_len, 0) - pair_len)[entry_pair]  # (E,)
    image = pair_image[entry_pair]  # (E,)
    slot = image_slot[image] + entry - image_entry[image]  # (E,) padded slot of each entry
    total = int(widths.sum())
    word_at = torch.full((total,), pad, device=device, dtype=torch.long)
    word_at[slot] = pair_first_word[entry_pair] + within_pair
    pair_at = torch.full((total,), len(pair_len), device=device, dtype=torch.long)
    pair_at[slot] = entry_pair
    return word_at, pair_at


def scan_word_attention(
    text_local: Tensor, text_mask: Tensor, image_local: Tensor, lambda_softmax: float = 9.0
) -> Tensor:
    """Attention (L, N) of one caption's words (L, D), mask (L,), over one image's regions (N, D).

    Rows of padding words are zero; each real word's row sums to 1 (for heat maps).
    """
    cosine = l2_normalize(text_local) @ l2_normalize(image_local).t()  # (L, N)
    return masked_softmax(cosine * lambda_softmax, text_mask.bool().unsqueeze(-1), dim=-1)


class CrossScanHead(PairScorerHead):
    """Mean-pooled globals (for candidates and the base losses) + SCAN pair scorer; no parameters."""

    config: CrossScanConfig
    # the image-major kernel is a few large bmm per block, and workers would repeat each chunk's image
    # work: one chunk on every thread re-ranks faster (README, "What pruning costs and saves")
    rerank_in_workers = False

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

    def attention_bound(self, mask: Tensor) -> Tensor:
        """LogSumExp over the caption's words of relevances that are cosines (<= 1):
        S <= 1 + log(words) / lambda_lse."""
        words = mask.bool().sum(dim=1).clamp(min=1).to(torch.float64)  # (Q,)
        return 1.0 + torch.log(words) / self.config.lambda_lse

    def word_region_attention(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        """(L, N) SCAN's softmax over regions of each word's scaled cosines (the attention it scores)."""
        return scan_word_attention(texts.local[0], texts.mask[0], images.local[0], self.config.lambda_softmax)

    def candidate_image_floats(self, regions: int, dim: int) -> int:
        return regions * (dim + regions)  # unit regions and their (N, N) Gram matrix
