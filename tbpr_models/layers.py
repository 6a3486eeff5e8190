"""Layers that several variant heads use (spatial, channel, mixed): shared here, never borrowed
from a sibling variant file. Dimension letters: B batch, N regions, L words, D dim.
"""

from __future__ import annotations

from torch import Tensor, nn


class SqueezeExcite(nn.Module):
    """Channel gate (B, D) in (0, 1) from one or more pooled descriptors (B, D) through a shared MLP."""

    def __init__(self, dim: int, reduction: int) -> None:
        super().__init__()
        inner = max(dim // reduction, 1)
        self.mlp = nn.Sequential(nn.Linear(dim, inner), nn.ReLU(inplace=True), nn.Linear(inner, dim))

    def forward(self, *pooled: Tensor) -> Tensor:
        logits = sum((self.mlp(p) for p in pooled[1:]), self.mlp(pooled[0]))  # (B, D)
        return logits.sigmoid()


class RegionScorer(nn.Module):
    """One attention logit per region from a conv over the (h, w) grid of region tokens."""

    def __init__(self, dim: int, hidden: int, grid: tuple[int, int], kernel_size: int) -> None:
        super().__init__()
        self.grid = grid
        self.net = nn.Sequential(
            nn.Conv2d(dim, hidden, kernel_size, padding=kernel_size // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, tokens: Tensor) -> Tensor:
        b, n, d = tokens.shape
        h, w = self.grid
        fmap = tokens.transpose(1, 2).reshape(b, d, h, w)  # (B, D, h, w), N = h * w
        return self.net(fmap).reshape(b, n)  # (B, N)


class WordScorer(nn.Module):
    """Additive attention: one logit per word, tanh MLP."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.net(tokens).squeeze(-1)  # (B, L)
