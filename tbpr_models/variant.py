"""The variant head base class: what every attention variant plugs into `RetrievalModel`.

A head receives projected tokens, image regions (B, N, D) and word tokens (B, L, D) with their mask,
and returns typed features; `similarity` scores texts x images (Q, G); `similarity_candidates` scores
each query against its own k gallery candidates (Q, k), the same numbers; `head_losses` adds its own
named losses. Single-stream heads (refiners) only pool/refine and score with the cosine of globals;
pairwise heads (`pairwise = True`) need the local features of both sides to score a pair.

Dimension letters: B batch, Q queries, G gallery, N image regions, L words, D embedding dim.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from tbpr_models.attention import l2_normalize, masked_mean
from tbpr_models.config import VariantConfig
from tbpr_models.features import Batch, ImageFeatures, TextFeatures
from tbpr_models.losses import ranking_loss

BASE_LOSSES = ("sdm", "id")  # the losses of every model (`RetrievalModel.losses`), beside its head's


@dataclass(frozen=True)
class HeadDims:
    """Sizes a head may need to build its layers."""

    embed_dim: int  # D
    image_grid: tuple[int, int]  # (h, w) of the image feature map, N = h * w
    max_length: int  # L
    vocab_size: int  # V of the WordPiece vocabulary
    label_words: int = 0  # > 0: a word-predicting head predicts among this many word pieces (of V)

    @property
    def num_regions(self) -> int:
        return self.image_grid[0] * self.image_grid[1]


@dataclass(frozen=True)
class LossContext:
    """What a head's losses may need beyond the features of the batch.

    `person_ids` go with the features `head_losses` receives (the global batch under data-parallel
    training); `image_tokens` and `encode_text_tokens` with `batch` (this process's share).
    """

    logit_scale: Tensor  # () multiplier of cosine similarities (1 / temperature)
    encode_text_tokens: Callable[[Tensor, Tensor], Tensor]  # (input_ids, mask) -> (B, L, D) projected
    image_tokens: Tensor  # (B, N, D) projected image regions of `batch`, before the head
    text_tokens: Tensor  # (B, L, D) projected word tokens of `batch`, before the head
    vocab_size: int
    mask_token_id: int
    person_ids: Tensor  # (B',) class index of each row of the features (B' = B unless data-parallel)


class VariantHead(nn.Module):
    """Base head: mean pooling, cosine of globals, no extra loss. Subclasses override what they change."""

    pairwise: ClassVar[bool] = False  # True: similarity needs the local features
    # How pruned scoring runs `similarity_candidates` on a CPU: True, chunks of queries on one
    # single-threaded worker per core (a kernel of many small ops, like SCAN's, that intra-op threads
    # barely speed up); False, one chunk at a time on every core (a few large batched matmuls).
    rerank_in_workers: ClassVar[bool] = True
    # True: a calibration control (e.g. `control_top_half`), not an attention variant; pipelines train
    # it only when asked (`train.control`)
    control: ClassVar[bool] = False
    # the names of the losses `head_losses` returns (config `loss_weights` keys beyond BASE_LOSSES)
    loss_names: ClassVar[tuple[str, ...]] = ()
    # True: a loss predicts word pieces; the trainer then restricts them to the training captions' own
    # (`ModelConfig.label_words`, `set_label_words`)
    predicts_words: ClassVar[bool] = False

    def __init__(self, config: VariantConfig, dims: HeadDims) -> None:
        super().__init__()
        self.config = config
        self.dims = dims

    def set_label_words(self, ids: Tensor) -> None:
        """The word pieces (sorted, unique) a word-predicting head predicts among."""
        raise TypeError(f"head {type(self).__name__} predicts no words")

    @property
    def mean_pooled(self) -> bool:
        """True when this head's training features are the base class's means of the tokens and its
        losses are the model's alone (nothing reads the local tokens): `RetrievalModel.losses` then
        projects the mean region and the mean word instead of every one (`global`: N times fewer
        projected image tokens, the same losses in exact arithmetic)."""
        cls = type(self)
        return (
            cls.images is VariantHead.images
            and cls.texts is VariantHead.texts
            and cls.head_losses is VariantHead.head_losses
        )

    def images(self, tokens: Tensor) -> ImageFeatures:
        """tokens (B, N, D) projected image regions -> features with an L2-normalised global."""
        return ImageFeatures(global_=l2_normalize(tokens.mean(dim=1)), local=tokens)

    def texts(self, tokens: Tensor, mask: Tensor) -> TextFeatures:
        """tokens (B, L, D) projected words, mask (B, L) bool -> features with an L2-normalised global."""
        mask = mask.bool()
        return TextFeatures(global_=l2_normalize(masked_mean(tokens, mask, dim=1)), local=tokens, mask=mask)

    def similarity(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        """(Q, G) scores; the default is the cosine of the (L2-normalised) globals."""
        return global_cosine(texts, images)

    def similarity_candidates(
        self,
        texts: TextFeatures,
        images: ImageFeatures,
        candidates: Tensor,
        *,
        memory_budget_mb: float = 256.0,
    ) -> Tensor:
        """(Q, k) scores of each query against its candidates (Q, k), long rows of the gallery `images`
        (G), -1 for none (scores -inf): `similarity(texts, images)` gathered at the candidates.

        The default: a batched dot product of the globals when `similarity` is the base cosine, else
        `similarity` on the union of the candidates of each block of queries (correct for any head).
        Pairwise heads override it with a batched scorer of exactly the k candidates.
        """
        if type(self).similarity is VariantHead.similarity:
            return global_cosine_candidates(texts, images, candidates)
        return _gathered_similarity(self.similarity, texts, images, candidates, memory_budget_mb)

    def head_losses(
        self, texts: TextFeatures, images: ImageFeatures, batch: Batch, ctx: LossContext
    ) -> dict[str, Tensor]:
        """Named, unweighted losses of this head beyond the model's `sdm` and `id`.

        `texts`, `images` and `ctx.person_ids` are the global batch (every data-parallel process's rows):
        losses comparing across the batch use them; per-sample losses use `batch` and `ctx.image_tokens`,
        this process's share."""
        return {}

    @property
    def scores_globals(self) -> bool:
        """True when `similarity` is the base cosine of the globals: scoring reads no local feature."""
        return type(self).similarity is VariantHead.similarity

    def compact_images(self, images: ImageFeatures) -> ImageFeatures:
        """The image features as scoring needs them (what EMB stores): a head whose pair score reads only
        some of the regions returns just those; `similarity` on compacted features must equal
        `similarity` on the full ones. The base keeps every region when `similarity` reads them, none
        (N = 0) when it scores the globals (heat maps re-encode the image through the model)."""
        if self.scores_globals:
            return dataclasses.replace(images, local=images.local[:, :0])
        return images

    def compact_texts(self, texts: TextFeatures) -> TextFeatures:
        """The caption features as scoring needs them (see `compact_images`): every word, or none (L = 0)
        when `similarity` scores the globals."""
        if self.scores_globals:
            return dataclasses.replace(texts, local=texts.local[:, :0], mask=texts.mask[:, :0])
        return texts

    def word_region_attention(self, texts: TextFeatures, images: ImageFeatures) -> Tensor | None:
        """(L, N) how much each word of one caption (texts of length 1) attends to each region of one
        image, for heat maps; None when the head has no word-over-region attention (no heat map)."""
        return None

    def score_bound(self, mask: Tensor) -> tuple[float, Tensor] | None:
        """(w, b (Q,)) such that every pair score of query q is at most w x (global cosine) + b[q], from
        the queries' word masks (Q, L); None when the head guarantees no such bound. Pruned scoring with a
        per-query k stops re-ranking a query once no unscored candidate can reach its top ranks."""
        if type(self).similarity is VariantHead.similarity:
            return 1.0, torch.zeros(mask.shape[0])  # the score is the cosine itself
        return None

    def pair_floats(self, words: int, regions: int) -> int:
        """Floats alive per (query, image) pair while `similarity` scores a block (memory planning)."""
        return 1

    def candidate_image_floats(self, regions: int, dim: int) -> int:
        """Floats held per candidate image while `similarity_candidates` re-ranks (memory planning)."""
        return regions * dim


@dataclass(frozen=True)
class PairScorerConfig(VariantConfig):
    """Shared by the pair scorers: how the attention score is combined and trained."""

    margin: float = 0.2  # of the hinge ranking loss `rank` over in-batch attention scores
    # The pair score is global_weight x cosine of the globals + the attention score: re-ranking adds
    # the attention's evidence to stage 1's instead of discarding it (0 = the attention score alone).
    global_weight: float = 1.0


class PairScorerHead(VariantHead, abc.ABC):
    """The pair-scorer role: text tokens x image tokens -> (Q, G) scores (cross-modal, hard attention).

    Subclasses give `attention_similarity` and `attention_candidates`; this base adds the global cosine
    and trains the attention score with the ranking loss.
    """

    pairwise = True
    loss_names = ("rank",)
    config: PairScorerConfig

    @abc.abstractmethod
    def attention_similarity(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        """(Q, G) the attention score alone."""

    @abc.abstractmethod
    def attention_candidates(
        self, texts: TextFeatures, images: ImageFeatures, candidates: Tensor, memory_budget_mb: float
    ) -> Tensor:
        """(Q, k) `attention_similarity` gathered at the candidates (Q, k); -inf where a candidate is -1."""

    def similarity(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        fused = self.config.global_weight * global_cosine(texts, images)  # (Q, G)
        return fused + self.attention_similarity(texts, images)

    def similarity_candidates(
        self,
        texts: TextFeatures,
        images: ImageFeatures,
        candidates: Tensor,
        *,
        memory_budget_mb: float = 256.0,
    ) -> Tensor:
        scores = self.attention_candidates(texts, images, candidates, memory_budget_mb)  # (Q, k)
        if self.config.global_weight != 0:  # a zero-weighted term is skipped: 0 x -inf would be NaN
            scores = scores + self.config.global_weight * global_cosine_candidates(texts, images, candidates)
        return scores.masked_fill(candidates < 0, -torch.inf)  # the contract, whatever the terms gave

    def head_losses(
        self, texts: TextFeatures, images: ImageFeatures, batch: Batch, ctx: LossContext
    ) -> dict[str, Tensor]:
        scores = self.attention_similarity(texts, images)  # (B, B) text x image
        return {"rank": ranking_loss(scores, ctx.person_ids, self.config.margin)}

    def pair_floats(self, words: int, regions: int) -> int:
        return PAIRWISE_TEMPORARIES * words * regions

    def attention_bound(self, mask: Tensor) -> Tensor | None:
        """(Q,) the most `attention_similarity` can give each query (word masks (Q, L)); None: unknown."""
        return None

    def score_bound(self, mask: Tensor) -> tuple[float, Tensor] | None:
        bound = self.attention_bound(mask)
        return None if bound is None else (self.config.global_weight, bound)


PAIRWISE_TEMPORARIES = 4  # (L, N) float tensors per pair alive at once in a pair scorer (estimate)


DENSE_GLOBAL_RATIO = 128  # G / k up to which global_cosine_candidates uses a dense matmul (measured)
DENSE_GLOBAL_ELEMENTS = 2**23  # (rows, G) scores per dense block (32 MiB of float32)
# Candidate features gathered per block of queries by the batched candidate scorers: 4 MiB stays in
# the cache (6,202 queries x k=4, 2 cores: the globals in 1.2 ms fp32 and 1.0 ms bf16, against 4.2
# and 2.0 gathering all at once; hard_topk's regions 1.1-1.4x faster than 1 or 16 MiB blocks)
GATHER_BLOCK_BYTES = 4 * 2**20


def global_cosine(texts: TextFeatures, images: ImageFeatures) -> Tensor:
    """(Q, G) cosine of the L2-normalised globals."""
    return texts.global_ @ images.global_.t()  # (Q, G)


def global_cosine_candidates(texts: TextFeatures, images: ImageFeatures, candidates: Tensor) -> Tensor:
    """(Q, k) cosine of the globals of each query and its candidates (Q, k); -inf where a candidate is -1.
    Scoring only: the blocks are written in place, so it does not carry gradients.

    When the images are few against k (a re-ranking chunk's union), a dense (Q, G) matmul gathered at
    the candidates is cheaper than gathering (Q, k, D) globals (measured at Q=1539, k=64, D=256, one
    thread: 0.04 s against 0.13 s at G=3,074; even at G=8,192; 3x slower at G=30,000)."""
    (num_images, dim), k = images.global_.shape, candidates.shape[1]
    picked = candidates.clamp(min=0)  # (Q, k)
    if num_images > DENSE_GLOBAL_RATIO * max(1, k) or len(picked) == 0:
        scores = texts.global_.new_empty(picked.shape)  # (Q, k)
        rows = max(1, GATHER_BLOCK_BYTES // (max(1, k) * dim * images.global_.element_size()))
        for q0 in range(0, len(picked), rows):
            block = picked[q0 : q0 + rows]  # (Qb, k)
            gathered = images.global_.index_select(0, block.reshape(-1)).view(len(block), k, dim)
            torch.linalg.vecdot(
                gathered, texts.global_[q0 : q0 + rows].unsqueeze(1), out=scores[q0 : q0 + rows]
            )
    else:
        rows = max(1, DENSE_GLOBAL_ELEMENTS // num_images)  # queries per (rows, G) block
        blocks = [
            (texts.global_[q0 : q0 + rows] @ images.global_.t()).gather(1, picked[q0 : q0 + rows])
            for q0 in range(0, len(picked), rows)
        ]  # (rows, k) each
        scores = torch.cat(blocks)
    return scores.masked_fill(candidates < 0, -torch.inf)


def _gathered_similarity(
    similarity: Callable[[TextFeatures, ImageFeatures], Tensor],
    texts: TextFeatures,
    images: ImageFeatures,
    candidates: Tensor,
    memory_budget_mb: float,
) -> Tensor:
    """(Q, k): `similarity` of each block of queries x the union of its candidates, gathered; -inf at -1."""
    num_texts, k = candidates.shape
    pair_bytes = 4 * PAIRWISE_TEMPORARIES * texts.local.shape[1] * images.local.shape[1]  # float32
    # a block of b queries scores b x (union <= b*k) pairs
    block = max(1, math.isqrt(int(memory_budget_mb * 2**20 // (pair_bytes * max(1, k)))))
    rows = []
    for q0 in range(0, num_texts, block):
        chunk = candidates[q0 : q0 + block]  # (Qb, k)
        valid = chunk >= 0
        union, column = torch.unique(chunk.clamp(min=0), return_inverse=True)  # (U,), (Qb, k)
        scores = similarity(texts.select(slice(q0, q0 + block)), images.select(union))  # (Qb, U)
        rows.append(scores.gather(1, column).masked_fill(~valid, -torch.inf))  # (Qb, k)
    return torch.cat(rows) if rows else candidates.new_empty((0, k), dtype=texts.local.dtype)
