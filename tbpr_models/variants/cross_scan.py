"""`cross_scan`: stacked cross attention, text-to-image (SCAN, Lee et al., ECCV 2018).

Each word attends over the image regions: a_ln = softmax_n(lambda_softmax * s_ln). With
`attention_norm = "clipped_l2norm"` (SCAN's published setting, `raw_feature_norm` in its model.py and
every command of its README) s_ln = LeakyReLU_0.1(c_ln) / ||LeakyReLU_0.1(c_n.)||, the clipped cosine
c_ln = cos(w_l, v_n) L2-normalised over the caption's real words for each region; with "no_norm" s = c
(SCAN's plain variant). Relevance r_l = cos(w_l, sum_n a_ln v_n) with L2-normalised
regions v_n, pooled over the caption's real words by LogSumExp: S = log(sum_l exp(lambda_lse r_l)) /
lambda_lse. Pairwise: the score needs both sides' local features.

Efficiency (the exhaustive scorer runs over every caption x image): never materialise the
(Q, G, L, N, D) attended vectors. With unit vectors, w·(sum_n a_n v_n) = sum_n a_n cos(w, v_n) reuses
the word-region cosine matrix, and ||sum_n a_n v_n||^2 = a^T (V V^T) a needs only each image's (N, N)
region Gram matrix; the softmax normaliser cancels in the ratio, so r_l = sum_n e_n c_n /
sqrt(e^T Gram e) with e_n = exp(lambda_softmax s_n) (|s| <= 1 either way, so no max-subtraction is
needed). The clipped norm sums over the words of one caption against one image: the exhaustive
scorer cuts its word blocks at caption boundaries, the candidate scorer sums each pair's slots. Everything is a (words, G·N) matmul, a batched (N, N) matmul and element-wise work, in
blocks of words x images, in the dtype of the inputs (bf16 allowed); the padding words are dropped
before scoring.

Why this file is over ~400 lines: a variant is one module (the `variants` import contract), and SCAN
is scored three ways without the (Q, G, L, N, D) tensor (the exhaustive kernel in word x image blocks
cut at caption boundaries, the batched candidate kernel with its gather tables, the heat map), each
with both attention norms; they share the formulas above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor
from torch.nn import functional

from tbpr_models.attention import l2_normalize, masked_softmax
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.variant import PAIRWISE_TEMPORARIES, PairScorerConfig, PairScorerHead

AttentionNorm = Literal["clipped_l2norm", "no_norm"]
ATTENTION_NORMS: tuple[str, ...] = get_args(AttentionNorm)
LEAKY_SLOPE = 0.1  # SCAN's clipped_l2norm: LeakyReLU(0.1) before the norm over words
NORM_EPS = 1e-8  # SCAN's l2norm adds it to the norm


@dataclass(frozen=True)
class CrossScanConfig(PairScorerConfig):
    kind: Literal["cross_scan"] = "cross_scan"
    # SCAN's published attention normalisation (its default); "no_norm": softmax of the raw cosines
    attention_norm: AttentionNorm = "clipped_l2norm"
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


def clipped_l2norm(scaled: Tensor, segment: Tensor, segments: int, lambda_softmax: float) -> Tensor:
    """SCAN's `clipped_l2norm` attention logits (I, N, W): lambda_softmax * LeakyReLU_0.1(c) divided by
    (its L2 norm over the words of the same segment, for each region, + NORM_EPS).

    scaled (I, N, W) = lambda_softmax * cosines; segment (I, W) or (1, W) the segment of each word column
    against each image (ids 0..segments-1: a caption, or a candidate pair): the norm sums only a
    caption's words against one image. A zero column (a padding slot) adds nothing to its segment."""
    clipped = functional.leaky_relu(scaled / lambda_softmax, LEAKY_SLOPE)  # (I, N, W)
    index = segment.unsqueeze(1).expand_as(clipped)  # (I, N, W)
    sums = clipped.new_zeros((*clipped.shape[:2], segments)).scatter_add(
        2, index, clipped * clipped
    )  # (I, N, S)
    norm = sums.sqrt().gather(2, index)  # (I, N, W) each word's segment norm
    return clipped * (lambda_softmax / (norm + NORM_EPS))


def _relevance_exp(
    scaled: Tensor, gram: Tensor, lambda_softmax: float, lambda_lse: float, logits: Tensor | None = None
) -> Tensor:
    """exp(lambda_lse * r) of W words against each of I images: the one SCAN kernel of both scorers.

    scaled (I, N, W) = lambda_softmax * cos(region n of image i, word w), gram (I, N, N) of the unit
    regions, logits (I, N, W) the attention logits (None: `scaled` itself, SCAN's no_norm) -> (I, W).
    The relevance and its exponential are in float32 at least (float64 stays)."""
    weights = torch.exp(scaled if logits is None else logits)  # (I, N, W) unnormalised attention
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
    attention_norm: AttentionNorm = "clipped_l2norm",
) -> Tensor:
    """SCAN text-to-image similarity (Q, G) of text_local (Q, L, D) with mask (Q, L) x image_local (G, N, D).

    `block` = (words, images) scored at once; with the clipped norm a word block holds whole captions
    (at least one). Computes in the inputs' dtype and returns float32 (float64 for float64 inputs). A
    caption with no real word scores -inf.
    """
    _check_norm(attention_norm)
    clipped = attention_norm == "clipped_l2norm"
    block_images = block[1]
    words_all = l2_normalize(text_local[text_mask.bool()])  # (W, D), the real words of all captions
    owner = text_mask.bool().nonzero()[:, 0]  # (W,) caption index of each word
    word_blocks = _word_blocks(owner, block[0], whole_captions=clipped)
    regions_all = l2_normalize(image_local)  # (G, N, D)
    num_texts, (num_images, num_regions, dim) = text_local.shape[0], image_local.shape
    precise = torch.promote_types(text_local.dtype, torch.float32)
    columns = []
    for g0 in range(0, num_images, block_images):
        regions = regions_all[g0 : g0 + block_images]  # (Gb, N, D)
        gram = region_gram(regions)  # (Gb, N, N)
        flat_regions = regions.reshape(-1, dim) * lambda_softmax  # (Gb*N, D)
        sums = torch.zeros(num_texts, regions.shape[0], device=text_local.device, dtype=precise)
        for w0, w1 in word_blocks:
            words = words_all[w0:w1]  # (Wb, D)
            scaled = (flat_regions @ words.t()).view(-1, num_regions, words.shape[0])  # (Gb, N, Wb)
            logits = None
            if clipped:
                local = owner[w0:w1] - owner[w0]  # (Wb,) caption within the block: whole captions
                logits = clipped_l2norm(scaled, local.unsqueeze(0), int(local[-1]) + 1, lambda_softmax)
            relevance_exp = _relevance_exp(scaled, gram, lambda_softmax, lambda_lse, logits)  # (Gb, Wb)
            sums.index_add_(0, owner[w0:w1], relevance_exp.t())
        columns.append(sums)
    return torch.log(torch.cat(columns, dim=1)) / lambda_lse  # (Q, G)


def _check_norm(attention_norm: str) -> None:
    if attention_norm not in ATTENTION_NORMS:
        raise ValueError(f"unknown attention_norm {attention_norm!r}; choose one of {ATTENTION_NORMS}")


def _word_blocks(owner: Tensor, block_words: int, whole_captions: bool) -> list[tuple[int, int]]:
    """(start, stop) rows of the words (W,) owned by captions `owner` (ascending), about `block_words`
    each; `whole_captions`: cut only between captions (a longer caption is a block of its own)."""
    total = len(owner)
    if not whole_captions:
        return [(w0, min(total, w0 + block_words)) for w0 in range(0, total, block_words)]
    starts = torch.ones(total, dtype=torch.bool, device=owner.device)
    starts[1:] = owner[1:] != owner[:-1]
    ends = [*starts.nonzero()[1:, 0].tolist(), total]  # the stop of each caption's words
    blocks, w0, previous = [], 0, 0
    for stop in ends:
        if stop - w0 > block_words and previous > w0:  # this caption would overflow: close before it
            blocks.append((w0, previous))
            w0 = previous
        previous = stop
    return [*blocks, (w0, total)] if total else blocks


def scan_similarity_candidates(
    text_local: Tensor,
    text_mask: Tensor,
    image_local: Tensor,
    candidates: Tensor,
    lambda_softmax: float = 9.0,
    lambda_lse: float = 6.0,
    memory_budget_mb: float = 256.0,
    block_mb: float = CANDIDATE_BLOCK_MB,
    attention_norm: AttentionNorm = "clipped_l2norm",
) -> Tensor:
    """`scan_similarity` (Q, G) gathered at candidates (Q, k) of gallery rows, -1 = none (scores -inf).

    text_local (Q, L, D), text_mask (Q, L), image_local (G, N, D). Image-major, like the exhaustive
    scorer: each candidate image takes the real words of every query that has it as a candidate.
    Images are sorted by that word count and cut into blocks of ~`block_mb` of words, each padded to
    its first (longest) list (rounded up to `LOW_PRECISION_WIDTH_STEP` below float32); one
    `index_select` gathers a block's words through a precomputed table, one bmm and the shared kernel
    `_relevance_exp` score it, and one `index_add_` sums each pair's words. The tables, unit regions and
    Gram matrices are built for groups of blocks that fit `memory_budget_mb`; the clipped norm sums
    each pair's slots (a pair's words are consecutive slots of its image). Returns float32 (float64 for
    float64 inputs).
    """
    _check_norm(attention_norm)
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
            logits = None
            if attention_norm == "clipped_l2norm":
                segment, segments = _pair_segments(pair_at[s0:s1].view(len(block), -1), pad=p1 - p0)
                logits = clipped_l2norm(scaled, segment, segments, lambda_softmax)  # (Ib, N, Wb)
            relevance_exp = _relevance_exp(scaled, grams[b0:b1], lambda_softmax, lambda_lse, logits)
            sums.index_add_(0, pair_at[s0:s1], relevance_exp.reshape(-1))
            s0 = s1
        out[group_query, slot[p0:p1]] = torch.log(sums[:-1]) / lambda_lse
    return out


def _pair_segments(pair_at: Tensor, pad: int) -> tuple[Tensor, int]:
    """(segment (Ib, Wb), segments): each padded slot's pair, numbered from 0 within its image (a pair's
    slots are consecutive in one image). Padding slots (id `pad`, above every pair's) join segment 0:
    their words are zero, so they add nothing to its norm and get logits 0."""
    first = pair_at.amin(dim=1, keepdim=True)  # (Ib, 1) an image's first pair (every image has one)
    local = torch.where(pair_at == pad, 0, pair_at - first)  # (Ib, Wb)
    return local, int(local.max()) + 1


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
    text_local: Tensor,
    text_mask: Tensor,
    image_local: Tensor,
    lambda_softmax: float = 9.0,
    attention_norm: AttentionNorm = "clipped_l2norm",
) -> Tensor:
    """Attention (L, N) of one caption's words (L, D), mask (L,), over one image's regions (N, D).

    Rows of padding words are zero; each real word's row sums to 1 (for heat maps).
    """
    _check_norm(attention_norm)
    real = text_mask.bool()
    cosine = l2_normalize(text_local) @ l2_normalize(image_local).t()  # (L, N)
    if attention_norm == "clipped_l2norm":
        clipped = functional.leaky_relu(cosine, LEAKY_SLOPE) * real.unsqueeze(-1)  # (L, N), padding 0
        cosine = clipped / (clipped.norm(dim=0, keepdim=True) + NORM_EPS)  # (L, N) over words per region
    return masked_softmax(cosine * lambda_softmax, real.unsqueeze(-1), dim=-1)


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
            attention_norm=self.config.attention_norm,
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
            attention_norm=self.config.attention_norm,
        )

    def attention_bound(self, mask: Tensor) -> Tensor:
        """LogSumExp over the caption's words of relevances that are cosines (<= 1):
        S <= 1 + log(words) / lambda_lse."""
        words = mask.bool().sum(dim=1).clamp(min=1).to(torch.float64)  # (Q,)
        return 1.0 + torch.log(words) / self.config.lambda_lse

    def word_region_attention(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        """(L, N) SCAN's softmax over regions of each word's logits (the attention it scores)."""
        return scan_word_attention(
            texts.local[0],
            texts.mask[0],
            images.local[0],
            self.config.lambda_softmax,
            self.config.attention_norm,
        )

    def pair_floats(self, words: int, regions: int) -> int:
        """The clipped norm adds its clipped cosines and logits to the kernel's (L, N) temporaries."""
        extra = 2 if self.config.attention_norm == "clipped_l2norm" else 0
        return (PAIRWISE_TEMPORARIES + extra) * words * regions

    def candidate_image_floats(self, regions: int, dim: int) -> int:
        return regions * (dim + regions)  # unit regions and their (N, N) Gram matrix
