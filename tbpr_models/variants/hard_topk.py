"""`hard_topk`: Gumbel top-k hard selection of regions and words (Zheng et al., ACM MM 2020,
"Hierarchical Gumbel Attention Network for Text-based Person Search").

A linear scorer gives each region and each word a selection logit. The scorers are *unconditioned*
(each token is scored from its own features, not conditioned on the other modality's global vector as
in the paper), so each image and caption is selected once, independently of the pair, which keeps
exhaustive scoring a matmul over the selected tokens. `gumbel_topk` selects k regions and k words:
a straight-through k-hot with Gumbel noise while training, the plain top-k at inference. The pair
score is the mean over the selected words of the best cosine over the selected regions; the selection
weights (1 in the forward pass) multiply each word's term, so the ranking loss reaches the scorers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from tbpr_models.attention import gumbel_topk, l2_normalize, topk_mask
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.variant import GATHER_BLOCK_BYTES, HeadDims, PairScorerConfig, PairScorerHead


@dataclass(frozen=True)
class HardTopkConfig(PairScorerConfig):
    kind: Literal["hard_topk"] = "hard_topk"
    k_regions: int = 8
    k_words: int = 8
    tau: float = 1.0  # temperature of the relaxed top-k (backward pass only)
    block_texts: int = 64  # captions scored at once


@dataclass(frozen=True)
class Selection:
    """k selected tokens per item: tokens (B, k, D) unit, weight (B, k) straight-through 1/0, valid (B, k)."""

    tokens: Tensor
    weight: Tensor
    valid: Tensor


def select_tokens(
    tokens: Tensor, logits: Tensor, k: int, tau: float, training: bool, mask: Tensor | None = None
) -> Selection:
    """Gumbel top-k selection of k of the M tokens (B, M, D) by their logits (B, M)."""
    hot = gumbel_topk(logits, k, tau=tau, training=training, mask=mask)  # (B, M) k-hot
    index = hot.detach().topk(min(k, hot.shape[-1]), dim=-1).indices  # (B, k), the selected come first
    weight = hot.gather(1, index)  # (B, k) 1 for a selected token (0 if the item had fewer than k)
    picked = tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))  # (B, k, D)
    return Selection(tokens=l2_normalize(picked), weight=weight, valid=weight.detach() > 0.5)


def all_tokens(tokens: Tensor, mask: Tensor | None = None, unit: bool = False) -> Selection:
    """Every (valid) token of (B, M, D) selected, as inference selects when M <= k (e.g. features that
    `compact_*` already reduced to their selection): no scorer, top-k or gather; scores do not depend
    on the order of the selected tokens. `unit`: the tokens are unit already (not normalised again)."""
    valid = tokens.new_ones(tokens.shape[:2], dtype=torch.bool) if mask is None else mask.bool()
    return Selection(tokens=tokens if unit else l2_normalize(tokens), weight=valid.float(), valid=valid)


def _match_scores(cosine: Tensor, words: Selection, region_valid: Tensor, region_weight: Tensor) -> Tensor:
    """The one pair kernel of both scorers: cosine (B, kw, I, kr) of B captions' selected words against
    the selected regions of I images each (region_valid, region_weight broadcastable to it) -> (B, I)
    mean over the words (of `words`, B captions) of the best region's cosine times both weights."""
    lowest = torch.finfo(cosine.dtype).min  # matmul under autocast may return bf16
    count = words.valid.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
    if not (words.weight.requires_grad or region_weight.requires_grad):
        # inference: every weight is its token's 0/1 validity, so a word's term is its best valid
        # region's cosine (0 for an image without one); no arg-max gather
        if bool(region_valid.all()):
            best = cosine.amax(dim=-1)  # (B, kw, I)
        else:
            best = cosine.masked_fill(~region_valid, lowest).amax(dim=-1)  # (B, kw, I)
            best = best.masked_fill(~region_valid.any(dim=-1), 0.0)  # (B, kw, I)
        return (best * words.weight.unsqueeze(-1)).sum(dim=1) / count  # (B, I)
    best, arg = cosine.masked_fill(~region_valid, lowest).max(dim=-1)  # (B, kw, I)
    weight = region_weight.expand_as(cosine).gather(-1, arg.unsqueeze(-1)).squeeze(-1)  # (B, kw, I)
    terms = best * weight * words.weight.unsqueeze(-1)  # (B, kw, I); unselected words have weight 0
    return terms.sum(dim=1) / count  # (B, I)


def topk_match_similarity(words: Selection, regions: Selection, block_texts: int = 64) -> Tensor:
    """(Q, G): mean over each caption's selected words of the best cosine over the image's selected regions.

    Each word's term is multiplied by its own and its best region's selection weight (straight-through).
    """
    num_images, k_regions, dim = regions.tokens.shape
    flat_regions = regions.tokens.reshape(num_images * k_regions, dim)  # (G*kr, D)
    region_valid = regions.valid.reshape(1, 1, num_images, k_regions)
    region_weight = regions.weight.reshape(1, 1, num_images, k_regions)
    rows = []
    for q0 in range(0, words.tokens.shape[0], block_texts):
        chunk = _slice(words, slice(q0, q0 + block_texts))
        cosine = (chunk.tokens @ flat_regions.t()).view(
            chunk.tokens.shape[0], chunk.tokens.shape[1], num_images, k_regions
        )  # (Qb, kw, G, kr)
        rows.append(_match_scores(cosine, chunk, region_valid, region_weight))  # (Qb, G)
    return torch.cat(rows)


def topk_match_candidates(
    words: Selection, regions: Selection, candidates: Tensor, block_texts: int = 64
) -> Tensor:
    """`topk_match_similarity` (Q, G) gathered at candidates (Q, k) of gallery rows, -1 = none (-inf)."""
    num_texts, k = candidates.shape
    if num_texts == 0 or k == 0:
        return torch.empty(candidates.shape, dtype=torch.float32, device=regions.tokens.device)
    if not (words.weight.requires_grad or regions.weight.requires_grad) and bool(regions.valid.all()):
        scores = _inference_candidates(words, regions.tokens, candidates, block_texts)
    else:
        rows = []
        for q0 in range(0, num_texts, block_texts):
            picked = candidates[q0 : q0 + block_texts].clamp(min=0)  # (Qb, k)
            chunk = _slice(words, slice(q0, q0 + block_texts))
            cosine = _candidate_cosine(chunk.tokens, regions.tokens, picked)  # (Qb, kw, k, kr)
            region_valid = regions.valid[picked].unsqueeze(1)  # (Qb, 1, k, kr)
            region_weight = regions.weight[picked].unsqueeze(1)  # (Qb, 1, k, kr)
            rows.append(_match_scores(cosine, chunk, region_valid, region_weight))  # (Qb, k)
        scores = torch.cat(rows)
    return scores.masked_fill(candidates < 0, -torch.inf)


def _inference_candidates(words: Selection, regions: Tensor, candidates: Tensor, block: int) -> Tensor:
    """The candidate kernel at inference with every region valid (all weights 0/1, the usual case): per
    block of queries one gather, one bmm, a max over regions and a float32 weighted sum over words,
    written in place: (Q, k)."""
    count = words.valid.sum(dim=1, keepdim=True).clamp(min=1)  # (Q, 1)
    weight = (words.weight.float() / count).unsqueeze(-1)  # (Q, kw, 1)
    out = torch.empty(candidates.shape, dtype=torch.float32, device=regions.device)  # (Q, k)
    for q0 in range(0, len(candidates), block):
        picked = candidates[q0 : q0 + block].clamp(min=0)  # (Qb, k)
        best = _candidate_cosine(words.tokens[q0 : q0 + block], regions, picked).amax(dim=-1)  # (Qb, kw, k)
        torch.sum(best * weight[q0 : q0 + block], dim=1, out=out[q0 : q0 + block])  # float32 terms
    return out


def _candidate_cosine(words: Tensor, regions: Tensor, picked: Tensor) -> Tensor:
    """words (Qb, kw, D) of a block of queries against the regions (G, kr, D) of their candidates
    `picked` (Qb, k) gallery rows: one gather, one bmm -> (Qb, kw, k, kr)."""
    (num, k), (k_regions, dim) = picked.shape, regions.shape[1:]
    cand = regions.index_select(0, picked.reshape(-1)).view(num, k * k_regions, dim)  # (Qb, k*kr, D)
    return torch.bmm(words, cand.transpose(1, 2)).view(num, words.shape[1], k, k_regions)


def _slice(selection: Selection, rows: slice) -> Selection:
    return Selection(selection.tokens[rows], selection.weight[rows], selection.valid[rows])


class HardTopkHead(PairScorerHead):
    """Mean-pooled globals (for candidates and the base losses) + Gumbel top-k pair scorer."""

    config: HardTopkConfig
    rerank_in_workers = False  # one batched matmul per block: intra-op threads do better

    def __init__(self, config: HardTopkConfig, dims: HeadDims) -> None:
        super().__init__(config, dims)
        self.region_scorer = nn.Linear(dims.embed_dim, 1)
        self.word_scorer = nn.Linear(dims.embed_dim, 1)

    def select_regions(self, images: ImageFeatures) -> Selection:
        return self._select(images.local, self.region_scorer, self.config.k_regions, None, images.unit_local)

    def select_words(self, texts: TextFeatures) -> Selection:
        return self._select(texts.local, self.word_scorer, self.config.k_words, texts.mask, texts.unit_local)

    def _select(
        self, tokens: Tensor, scorer: nn.Linear, k: int, mask: Tensor | None, unit: bool
    ) -> Selection:
        if not self.training and tokens.shape[1] <= k:
            return all_tokens(tokens, mask, unit)
        logits = scorer(tokens.to(scorer.weight.dtype)).squeeze(-1)  # (B, M)
        return select_tokens(tokens, logits, k, self.config.tau, self.training, mask)

    def attention_similarity(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        """(Q, G) mean over selected words of the best cosine over selected regions."""
        return topk_match_similarity(
            self.select_words(texts), self.select_regions(images), self.config.block_texts
        )

    def attention_candidates(
        self, texts: TextFeatures, images: ImageFeatures, candidates: Tensor, memory_budget_mb: float
    ) -> Tensor:
        # a block's gathered candidate regions fit the cache (and the budget), so bmm reads them there
        item = texts.local.element_size()
        per_query = candidates.shape[1] * self.config.k_regions * texts.local.shape[-1] * item  # bytes
        block_bytes = min(GATHER_BLOCK_BYTES, memory_budget_mb * 2**20)
        block = max(1, int(block_bytes // max(1, per_query)))
        return topk_match_candidates(self.select_words(texts), self.select_regions(images), candidates, block)

    def compact_images(self, images: ImageFeatures) -> ImageFeatures:
        """Only the k selected regions (unit; a missing one is zero): selecting k of k gives them back, so
        scores are unchanged and EMB holds k_regions instead of N region tokens per image."""
        picked = self.select_regions(images)
        local = picked.tokens * picked.valid.unsqueeze(-1)
        return ImageFeatures(global_=images.global_, local=local, unit_local=True)

    def compact_texts(self, texts: TextFeatures) -> TextFeatures:
        """Only the k selected words (unit), masked where a caption has fewer."""
        picked = self.select_words(texts)
        return TextFeatures(global_=texts.global_, local=picked.tokens, mask=picked.valid, unit_local=True)

    def candidate_image_floats(self, regions: int, dim: int) -> int:
        """The chunk's candidate regions and their normalised copy (`all_tokens`)."""
        return 2 * regions * dim

    def attention_bound(self, mask: Tensor) -> Tensor:
        """A mean over words of cosines: at most 1 (tokens stored unit in float16 are unit to ~1e-3, so a
        cosine may pass 1 by that much: `BOUND_MARGIN` of pruned scoring covers it)."""
        return torch.ones(mask.shape[0], dtype=torch.float64)

    def word_region_attention(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        """(L, N) the hard alignment at inference: each selected word -> 1 at its best selected region."""
        words = topk_mask(self.word_scorer(texts.local).squeeze(-1), self.config.k_words, texts.mask)[
            0
        ]  # (L,)
        regions = topk_mask(self.region_scorer(images.local).squeeze(-1), self.config.k_regions)[0]  # (N,)
        cosine = l2_normalize(texts.local[0]) @ l2_normalize(images.local[0]).t()  # (L, N)
        best = cosine.masked_fill(regions.unsqueeze(0) == 0, -torch.inf).argmax(dim=1)  # (L,)
        return nn.functional.one_hot(best, cosine.shape[1]).to(cosine.dtype) * words.unsqueeze(1)  # (L, N)
