"""`cross_fusion`: IRRA's cross-modal fusion encoder with masked-word prediction (Jiang and Ye,
"Cross-Modal Implicit Relation Reasoning and Aligning for Text-to-Image Person Retrieval", CVPR 2023).

Training only: about 15% of the caption's ordinary tokens are masked (BERT's 80/10/10 rule), the
masked caption is re-encoded (`mask_level = "tokens"`, IRRA's way), its word tokens attend to the image tokens (one cross-attention layer,
no residual, as IRRA), then pass through a few transformer layers and a linear vocabulary head that
predicts the masked words (`mlm`). With a frozen text encoder on the feature cache, re-encoding every
masked caption through it costs 6x the rest of the step; `mask_level = "features"` instead replaces
the chosen words' projected tokens by a learned mask vector (the fusion encoder then predicts them
from the other words and the image; the other words' frozen states still carry some context of the
hidden word, so this objective is easier than IRRA's). Retrieval uses the global embeddings (`pairwise = False`), as in
IRRA, where the fusion encoder is discarded at inference.

The vocabulary head predicts among the word pieces of the training captions (`label_words`, set by the
trainer from the data: the only labels the loss can ever see), not all 30,522 of MiniLM's: IRRA's
cross-entropy restricted to its support, which drops a softmax term over words no caption holds, a
quarter of the head's work per step and three quarters of its parameters. A model built with
`label_words = 0` predicts over the whole vocabulary, as IRRA does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from tbpr_models.config import VariantConfig
from tbpr_models.features import Batch, ImageFeatures, TextFeatures
from tbpr_models.losses import mlm_loss
from tbpr_models.tokenizer import ordinary_tokens
from tbpr_models.variant import HeadDims, LossContext, VariantHead

IGNORE = -100


@dataclass(frozen=True)
class CrossFusionConfig(VariantConfig):
    kind: Literal["cross_fusion"] = "cross_fusion"
    heads: int = 4
    layers: int = 2  # transformer layers after the cross attention
    mask_prob: float = 0.15
    mask_level: Literal["tokens", "features"] = "tokens"  # re-encode masked ids, or mask projected tokens


def mask_tokens(
    input_ids: Tensor, attention_mask: Tensor, mask_token_id: int, vocab_size: int, mask_prob: float
) -> tuple[Tensor, Tensor]:
    """BERT masking of input_ids (B, L): returns (masked ids, labels with -100 where not predicted).

    Ordinary tokens are the real ones except the first ([CLS]) and the last real one ([SEP]) of each
    caption. Each is chosen with probability `mask_prob` (at least one per batch when any exists);
    a chosen token becomes [MASK] 80% of the time, a random token 10%, itself 10%.
    """
    ordinary = ordinary_tokens(input_ids, attention_mask)
    chosen = ordinary & (torch.rand(input_ids.shape, device=input_ids.device) < mask_prob)
    if not bool(chosen.any()) and bool(ordinary.any()):
        candidates = ordinary.reshape(-1).nonzero().reshape(-1)
        pick = candidates[torch.randint(candidates.numel(), (1,), device=input_ids.device)]
        chosen = chosen.reshape(-1).index_fill(0, pick, True).view_as(chosen)
    labels = input_ids.masked_fill(~chosen, IGNORE)
    draw = torch.rand(input_ids.shape, device=input_ids.device)
    random_ids = torch.randint_like(input_ids, vocab_size)
    masked = input_ids.masked_fill(chosen & (draw < 0.8), mask_token_id)
    masked = torch.where(chosen & (draw >= 0.8) & (draw < 0.9), random_ids, masked)
    return masked, labels


class FusionEncoder(nn.Module):
    """Words (B, L, D) attend to image tokens (B, N, D), then `layers` self-attention layers."""

    def __init__(self, dim: int, heads: int, layers: int) -> None:
        super().__init__()
        self.norm_text = nn.LayerNorm(dim)
        self.norm_image = nn.LayerNorm(dim)
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        layer = nn.TransformerEncoderLayer(
            dim,
            heads,
            dim_feedforward=4 * dim,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, words: Tensor, text_mask: Tensor, image_tokens: Tensor) -> Tensor:
        # on a CPU, PyTorch's fused (flash) attention kernel is ~2x slower than the plain matmul-softmax
        # path for these short bf16 sequences (L ~ 40, N = 48); the same maths either way
        backends = [SDPBackend.MATH] if words.device.type == "cpu" else list(SDPBackend)
        with sdpa_kernel(backends):
            image = self.norm_image(image_tokens)  # (B, N, D)
            fused, _ = self.cross(self.norm_text(words), image, image, need_weights=False)  # (B, L, D)
            fused = self.blocks(fused, src_key_padding_mask=~text_mask.bool())  # (B, L, D)
        return self.norm_out(fused)


class MaskedWordHead(nn.Module):
    """IRRA's MLM head: dense, GELU, LayerNorm, vocabulary projection."""

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.decoder = nn.Linear(dim, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.decoder(self.transform(tokens))


class CrossFusionHead(VariantHead):
    """Mean-pooled globals for retrieval; the fusion encoder adds the training-time `mlm` loss."""

    pairwise = False
    loss_names = ("mlm",)
    predicts_words = True
    label_words: Tensor | None  # decoder row r predicts word piece label_words[r]; None: row r is word r

    def __init__(self, config: CrossFusionConfig, dims: HeadDims) -> None:
        super().__init__(config, dims)
        self.fusion_config = config
        self.fusion = FusionEncoder(dims.embed_dim, config.heads, config.layers)
        self.mlm_head = MaskedWordHead(dims.embed_dim, dims.label_words or dims.vocab_size)
        if config.mask_level == "features":
            self.mask_vector = nn.Parameter(0.02 * torch.randn(dims.embed_dim))
        if dims.label_words:  # (V',) in the state dict: a checkpoint knows its words
            self.register_buffer("label_words", torch.zeros(dims.label_words, dtype=torch.long))
        else:
            self.label_words = None

    def set_label_words(self, ids: Tensor) -> None:
        """The decoder's word pieces: `dims.label_words` of them, sorted, unique, within the vocabulary."""
        if self.label_words is None or ids.shape != self.label_words.shape:
            raise ValueError(
                f"{tuple(ids.shape)} label words for a head built for {self.dims.label_words} (0: the whole vocabulary)"
            )
        if ids.numel() and (
            bool((ids[1:] <= ids[:-1]).any()) or ids[0] < 0 or ids[-1] >= self.dims.vocab_size
        ):
            raise ValueError(f"label words must be sorted, unique word pieces in [0, {self.dims.vocab_size})")
        self.label_words.copy_(ids)

    def _decoder_rows(self, labels: Tensor) -> Tensor:
        """Word-piece labels (B, L) -> decoder rows (B, L); a word outside `label_words` is not predicted."""
        if self.label_words is None:
            return labels
        words = self.label_words
        rows = torch.searchsorted(words, labels.clamp(min=0)).clamp(max=words.numel() - 1)  # (B, L)
        return torch.where((labels != IGNORE) & (words[rows] == labels), rows, IGNORE)

    def head_losses(
        self, texts: TextFeatures, images: ImageFeatures, batch: Batch, ctx: LossContext
    ) -> dict[str, Tensor]:
        masked_ids, labels = mask_tokens(
            batch.input_ids,
            batch.attention_mask,
            ctx.mask_token_id,
            ctx.vocab_size,
            self.fusion_config.mask_prob,
        )
        # columns after the batch's last real word carry nothing: the fusion encoder skips them
        used = int(batch.attention_mask.bool().any(dim=0).nonzero().max().item()) + 1
        mask, labels, masked_ids = batch.attention_mask[:, :used], labels[:, :used], masked_ids[:, :used]
        if self.fusion_config.mask_level == "features":
            hidden = labels != IGNORE  # (B, L') every chosen word is hidden, none kept or swapped
            tokens = ctx.text_tokens[:, :used]  # (B, L', D)
            words = torch.where(hidden.unsqueeze(-1), self.mask_vector.to(tokens.dtype), tokens)
        else:
            words = ctx.encode_text_tokens(masked_ids, mask)  # (B, L', D)
        fused = self.fusion(words, mask, ctx.image_tokens)  # (B, L', D)
        labels = self._decoder_rows(labels)  # (B, L')
        predicted = labels != IGNORE  # (B, L')
        logits = self.mlm_head(fused[predicted])  # (M, V'): only the masked positions
        return {"mlm": mlm_loss(logits.unsqueeze(0), labels[predicted].unsqueeze(0))}
