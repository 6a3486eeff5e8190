"""`gpo`: learned pooling without content attention, the capacity-matched baseline of the attention heads.

VSE∞'s Generalized Pooling Operator (Chen et al., "Learning the Best Pooling Strategy for Visual
Semantic Embedding", CVPR 2021) on both towers: each of the D dimensions sorts its values over the
N regions (or the L real words) in descending order, and the sorted values are pooled with weights
that depend only on the *rank position* and on how many elements there are, never on content. The
weights come from a sinusoidal encoding of each position, a bidirectional GRU over the positions
(its two directions averaged), a linear score per position and a softmax over positions at
temperature 0.1. Mean, max and k-max pooling are special cases. VSE∞ uses 32-wide encodings and
GRUs; `hidden` is wider here so that the head has about as many trainable parameters as the
single-stream attention heads it is compared with (README "Does attention help?").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from tbpr_models.attention import l2_normalize
from tbpr_models.config import VariantConfig
from tbpr_models.features import ImageFeatures, TextFeatures
from tbpr_models.variant import HeadDims, VariantHead

TEMPERATURE = 0.1  # of the softmax over positions (VSE∞)


@dataclass(frozen=True)
class GpoConfig(VariantConfig):
    kind: Literal["gpo"] = "gpo"
    positional_dim: int = 32  # width of the sinusoidal encoding of a rank position (VSE∞: 32)
    # GRU width: 160 gives 372,800 parameters on both towers, between spatial's 328,194 and nonlocal's
    # 395,904 (embed_dim 256); VSE∞'s 32 would give 25,024
    hidden: int = 160

    def __post_init__(self) -> None:
        if self.positional_dim < 2 or self.positional_dim % 2:
            raise ValueError(
                f"variant.positional_dim must be an even integer >= 2, got {self.positional_dim}"
            )
        if self.hidden < 1:
            raise ValueError(f"variant.hidden must be an integer >= 1, got {self.hidden}")


def positional_encoding(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """(length, dim) sinusoids of positions 0..length-1: sin on even columns, cos on odd ones."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)  # (length, 1)
    frequency = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )  # (dim / 2,)
    encoding = torch.zeros(length, dim, device=device)
    encoding[:, 0::2] = torch.sin(position * frequency)
    encoding[:, 1::2] = torch.cos(position * frequency)
    return encoding


class GeneralizedPooling(nn.Module):
    """Pools (B, M, D) tokens with `lengths` (B,) real ones at the front of each row's sorted order."""

    def __init__(self, positional_dim: int, hidden: int) -> None:
        super().__init__()
        self.positional_dim = positional_dim
        self.gru = nn.GRU(positional_dim, hidden, num_layers=1, batch_first=True, bidirectional=True)
        self.score = nn.Linear(hidden, 1, bias=False)

    def weights(self, lengths: Tensor, positions: int) -> Tensor:
        """(B, positions) pooling weight of each rank position for sets of `lengths` elements (B,):
        one GRU pass per distinct length, zero past each length, each row summing to one. In float32
        outside autocast: the GRU's many small per-position steps cost 1.6x more under bf16 autocast
        (its casts), for a (U, M) result that is tiny next to the pooled tokens."""
        with torch.autocast(lengths.device.type, enabled=False):
            return self._weights(lengths, positions)

    def _weights(self, lengths: Tensor, positions: int) -> Tensor:
        distinct, inverse = torch.unique(lengths.clamp(min=1), return_inverse=True)  # (U,), (B,)
        valid = torch.arange(positions, device=lengths.device) < distinct.unsqueeze(1)  # (U, M)
        dtype = self.score.weight.dtype  # the GRU's (float64 in tests)
        encoding = positional_encoding(positions, self.positional_dim, lengths.device).to(dtype)  # (M, P)
        encoding = encoding.unsqueeze(0) * valid.unsqueeze(-1)  # (U, M, P), zero past each length
        packed = pack_padded_sequence(encoding, distinct.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=positions)
        forward, backward = out.chunk(2, dim=-1)  # (U, M, H) each
        logits = self.score((forward + backward) / 2).squeeze(-1).float()  # (U, M)
        logits = logits.masked_fill(~valid, -torch.inf)
        return torch.softmax(logits / TEMPERATURE, dim=1)[inverse]  # (B, M)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """tokens (B, M, D), mask (B, M) bool (None: all real) -> pooled (B, D)."""
        b, m, _ = tokens.shape
        if mask is None:
            mask = torch.ones(b, m, dtype=torch.bool, device=tokens.device)
        lengths = mask.sum(dim=1)  # (B,)
        low = torch.finfo(tokens.dtype).min
        ranked = tokens.masked_fill(~mask.unsqueeze(-1), low).sort(dim=1, descending=True).values  # (B, M, D)
        real = torch.arange(m, device=tokens.device) < lengths.unsqueeze(1)  # (B, M): the first `length`
        ranked = ranked.masked_fill(~real.unsqueeze(-1), 0.0)
        weights = self.weights(lengths, m).to(tokens.dtype)  # (B, M)
        return torch.einsum("bm,bmd->bd", weights, ranked)  # (B, D)


class GpoHead(VariantHead):
    """One generalized pooling per tower; similarity is the cosine of the pooled globals."""

    def __init__(self, config: GpoConfig, dims: HeadDims) -> None:
        super().__init__(config, dims)
        self.image_pool = GeneralizedPooling(config.positional_dim, config.hidden)
        self.text_pool = GeneralizedPooling(config.positional_dim, config.hidden)

    def images(self, tokens: Tensor) -> ImageFeatures:
        return ImageFeatures(global_=l2_normalize(self.image_pool(tokens)), local=tokens)

    def texts(self, tokens: Tensor, mask: Tensor) -> TextFeatures:
        mask = mask.bool()
        pooled = self.text_pool(tokens, mask)  # (B, D)
        return TextFeatures(global_=l2_normalize(pooled), local=tokens, mask=mask)
