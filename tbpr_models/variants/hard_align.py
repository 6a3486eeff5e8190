"""`hard_align`: similarity-based hard attention, each word aligned to its single most similar region
(CHAN, Pan et al., CVPR 2023, "Fine-Grained Image-Text Matching by Cross-Modal Hard Aligning Network";
the survey's CAN [88] and IMG-Net's hard region attention [86] select the same way).

For word w_l and regions v_n (both L2-normalised), s_l = max_n cos(w_l, v_n): the word attends to one
region, chosen by similarity (no learned selector, unlike `hard_topk`), and the pair score pools the
caption's real words. CHAN's published setting (its scripts: `coding_type=VHACoding`,
`pooling_type=LSEPooling`, temperature 0.1) pools by LogSumExp; here in cosine units,
S = tau * log(sum_l exp(s_l / tau)) (CHAN's score divided by 1/tau, so the ranking loss's margin and
`global_weight` read as for the other heads); `pooling = "mean"` gives CHAN's MeanPooling,
S = mean_l s_l. Only the word -> region direction is scored, as in CHAN's published runs (its
region -> word coding, THACoding, is not what it reports). No parameters: the ranking loss trains the
projections through the arg-max's cosine.

Dimension letters: Q captions, G images, N regions, L words, W real words of many captions, D dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from tbpr_models.attention import l2_normalize
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.variant import GATHER_BLOCK_BYTES, PairScorerConfig, PairScorerHead

Pooling = Literal["lse", "mean"]
# exp((s - 1) / tau) of a cosine s >= -1 stays a normal float32 down to this temperature
MIN_TAU = 0.025


@dataclass(frozen=True)
class HardAlignConfig(PairScorerConfig):
    kind: Literal["hard_align"] = "hard_align"
    pooling: Pooling = "lse"  # over the words of a caption: CHAN's LSEPooling, or its MeanPooling
    tau: float = 0.1  # LogSumExp temperature (CHAN's belta)
    block_words: int = 512  # real words scored at once by the exhaustive scorer
    block_images: int = 16  # images scored at once by the exhaustive scorer

    def __post_init__(self) -> None:
        if self.tau < MIN_TAU:
            raise ValueError(f"variant.tau must be at least {MIN_TAU}, got {self.tau!r}")


def pool_words(best: Tensor, mask: Tensor, pooling: Pooling, tau: float) -> Tensor:
    """best (B, L, I) each word's best-region cosine against I images, mask (B, L) -> (B, I) float32+:
    tau * LogSumExp(best / tau) or the mean over the real words; a caption without words scores -inf."""
    precise = best.to(torch.promote_types(best.dtype, torch.float32))
    real = mask.bool().unsqueeze(-1)  # (B, L, 1)
    if pooling == "mean":
        count = real.sum(dim=1).to(precise.dtype)  # (B, 1)
        score = (precise * real).sum(dim=1) / count.clamp(min=1)  # (B, I)
        return score.masked_fill(count == 0, -torch.inf)
    return tau * torch.logsumexp((precise / tau).masked_fill(~real, -torch.inf), dim=1)  # (B, I)


def hard_align_similarity(
    text_local: Tensor,
    text_mask: Tensor,
    image_local: Tensor,
    pooling: Pooling = "lse",
    tau: float = 0.1,
    block: tuple[int, int] = (512, 16),
) -> Tensor:
    """(Q, G) of captions text_local (Q, L, D) with mask (Q, L) x images image_local (G, N, D): each word's
    best cosine over the image's regions, pooled over the caption's words (as `pool_words`). Only the
    real words are scored, `block` = (words, images) at once: a (Wb, Gb*N) matmul, a max over regions,
    and each word's term added to its caption's sum (float32 at least)."""
    block_words, block_images = block
    real = text_mask.bool()
    words_all = l2_normalize(text_local[real])  # (W, D) the real words of all captions
    owner = real.nonzero()[:, 0]  # (W,) caption of each word
    regions_all = l2_normalize(image_local)  # (G, N, D)
    (num_images, num_regions, dim), num_texts = image_local.shape, text_local.shape[0]
    precise = torch.promote_types(text_local.dtype, torch.float32)
    count = real.sum(dim=1, keepdim=True).to(precise)  # (Q, 1)
    columns = [text_local.new_empty((num_texts, 0), dtype=precise)]
    for g0 in range(0, num_images, block_images):
        regions = regions_all[g0 : g0 + block_images].reshape(-1, dim)  # (Gb*N, D)
        sums = text_local.new_zeros((num_texts, len(regions) // num_regions), dtype=precise)  # (Q, Gb)
        for w0 in range(0, len(words_all), block_words):
            words = words_all[w0 : w0 + block_words]  # (Wb, D)
            best = (words @ regions.t()).view(len(words), -1, num_regions).amax(dim=-1)  # (Wb, Gb)
            # cosines are <= 1: exp((s - 1) / tau) cannot overflow (and tau >= MIN_TAU keeps it normal)
            term = best.to(precise) if pooling == "mean" else torch.exp((best.to(precise) - 1.0) / tau)
            sums = sums.index_add(0, owner[w0 : w0 + block_words], term)
        columns.append(sums / count if pooling == "mean" else 1.0 + tau * torch.log(sums))
    scores = torch.cat(columns, dim=1)  # (Q, G)
    return scores.masked_fill(count == 0, -torch.inf)


def hard_align_candidates(
    text_local: Tensor,
    text_mask: Tensor,
    image_local: Tensor,
    candidates: Tensor,
    pooling: Pooling = "lse",
    tau: float = 0.1,
    block_bytes: float = GATHER_BLOCK_BYTES,
) -> Tensor:
    """`hard_align_similarity` (Q, G) gathered at candidates (Q, k) of gallery rows, -1 = none (-inf).

    Per block of queries: one gather of the candidates' unit regions (~`block_bytes`), one bmm with the
    queries' unit words, a max over regions and the pooling over words."""
    num_texts, k = candidates.shape
    (num_regions, dim), item = image_local.shape[1:], image_local.element_size()
    precise = torch.promote_types(text_local.dtype, torch.float32)
    out = torch.full((num_texts, k), -torch.inf, dtype=precise, device=text_local.device)  # (Q, k)
    if num_texts == 0 or k == 0:
        return out
    words = l2_normalize(text_local)  # (Q, L, D)
    regions = l2_normalize(image_local)  # (G, N, D)
    block = max(1, int(block_bytes // max(1, k * num_regions * dim * item)))
    for q0 in range(0, num_texts, block):
        picked = candidates[q0 : q0 + block].clamp(min=0)  # (Qb, k)
        gathered = regions.index_select(0, picked.reshape(-1)).view(len(picked), k * num_regions, dim)
        cosine = torch.bmm(words[q0 : q0 + block], gathered.transpose(1, 2))  # (Qb, L, k*N)
        best = cosine.view(len(picked), -1, k, num_regions).amax(dim=-1)  # (Qb, L, k)
        out[q0 : q0 + block] = pool_words(best, text_mask[q0 : q0 + block], pooling, tau)
    return out.masked_fill(candidates < 0, -torch.inf)


class HardAlignHead(PairScorerHead):
    """Mean-pooled globals (for candidates and the base losses) + CHAN's hard-aligned pair scorer; no
    parameters of its own."""

    config: HardAlignConfig
    rerank_in_workers = False  # one gather and one batched matmul per block: intra-op threads do better

    def attention_similarity(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        """(Q, G) pooled over words of each word's best cosine over the regions."""
        config = self.config
        return hard_align_similarity(
            texts.local,
            texts.mask,
            images.local,
            config.pooling,
            config.tau,
            (config.block_words, config.block_images),
        )

    def attention_candidates(
        self, texts: TextFeatures, images: ImageFeatures, candidates: Tensor, memory_budget_mb: float
    ) -> Tensor:
        block_bytes = min(GATHER_BLOCK_BYTES, memory_budget_mb * 2**20)
        return hard_align_candidates(
            texts.local,
            texts.mask,
            images.local,
            candidates,
            self.config.pooling,
            self.config.tau,
            block_bytes,
        )

    def attention_bound(self, mask: Tensor) -> Tensor:
        """Pooled cosines (<= 1): the mean is at most 1, tau * LogSumExp at most 1 + tau * log(words)."""
        words = mask.bool().sum(dim=1).clamp(min=1).to(torch.float64)  # (Q,)
        if self.config.pooling == "mean":
            return torch.ones_like(words)
        return 1.0 + self.config.tau * torch.log(words)

    def word_region_attention(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        """(L, N) one-hot: each real word -> 1 at its most similar region (padding rows 0)."""
        cosine = l2_normalize(texts.local[0]) @ l2_normalize(images.local[0]).t()  # (L, N)
        hot = nn.functional.one_hot(cosine.argmax(dim=1), cosine.shape[1]).to(cosine.dtype)  # (L, N)
        return hot * texts.mask[0].to(cosine.dtype).unsqueeze(1)

    def candidate_image_floats(self, regions: int, dim: int) -> int:
        """The chunk's candidate regions and their normalised copy."""
        return 2 * regions * dim
