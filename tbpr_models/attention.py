"""Shared attention plumbing: masking, normalisation, Gumbel top-k selection, attention pooling.

Dimension letters: B batch, L words, N image regions, M items to select from, D embedding dim.
Masks are bool, True where a real element is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _expand_mask(mask: Tensor, like: Tensor) -> Tensor:
    """Append trailing singleton dimensions so that `mask` broadcasts against `like`."""
    while mask.ndim < like.ndim:
        mask = mask.unsqueeze(-1)
    return mask.bool()


def masked_softmax(x: Tensor, mask: Tensor | None, dim: int = -1) -> Tensor:
    """Softmax of `x` over `dim` ignoring masked-out entries (weight 0).

    `mask` broadcasts against `x` (trailing singleton dimensions are added if it has fewer). A slice
    with no valid entry gets all-zero weights rather than NaN.
    """
    if mask is None:
        return F.softmax(x, dim=dim)
    valid = _expand_mask(mask, x)
    weights = F.softmax(x.masked_fill(~valid, torch.finfo(x.dtype).min), dim=dim)
    return weights * valid


def masked_mean(x: Tensor, mask: Tensor | None, dim: int) -> Tensor:
    """Mean of `x` over `dim` counting only valid entries; 0 for a slice with none.

    `mask` has the leading dimensions of `x`, e.g. x (B, L, D) and mask (B, L) with dim=1.
    """
    if mask is None:
        return x.mean(dim=dim)
    valid = _expand_mask(mask, x).to(x.dtype)
    total = (x * valid).sum(dim=dim)
    count = valid.sum(dim=dim).clamp(min=1)
    return total / count


def l2_normalize(x: Tensor, dim: int = -1, eps: float = 1e-8) -> Tensor:
    """x / max(||x||, eps) along `dim`."""
    return F.normalize(x, p=2.0, dim=dim, eps=eps)


def gumbel_noise(like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel noise -log(-log U) with the shape, device and dtype of `like`."""
    uniform = torch.rand(like.shape, generator=generator, device=like.device, dtype=torch.float32)
    tiny = torch.finfo(torch.float32).tiny
    return (-torch.log((-torch.log(uniform.clamp(min=tiny))).clamp(min=tiny))).to(like.dtype)


def topk_mask(scores: Tensor, k: int, mask: Tensor | None = None) -> Tensor:
    """k-hot (same shape and dtype as `scores`) of the k largest entries along the last dim.

    Masked-out entries are never selected, so a row with fewer than k valid entries selects them all.
    """
    if mask is not None:
        scores = scores.masked_fill(~mask.bool(), torch.finfo(scores.dtype).min)
    k = min(k, scores.shape[-1])
    index = scores.topk(k, dim=-1).indices  # (..., k)
    hot = torch.zeros_like(scores).scatter_(-1, index, 1.0)
    return hot if mask is None else hot * mask.to(hot.dtype)


def gumbel_topk(
    logits: Tensor,
    k: int,
    tau: float = 1.0,
    training: bool = True,
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Select k of the last dimension's entries: a k-hot tensor shaped like `logits`.

    Training: Gumbel-perturbed logits, the hard top-k in the forward pass and, in the backward pass,
    the gradient of the continuous relaxation of Xie and Ermon (IJCAI 2019): k successive softmaxes
    at temperature `tau`, each one damping what the previous ones took (straight-through estimator).
    Inference: the plain top-k of `logits`, no noise. Masked-out entries are never selected.
    """
    if not training:
        return topk_mask(logits.detach(), k, mask)
    valid = torch.ones_like(logits, dtype=torch.bool) if mask is None else mask.bool().expand_as(logits)
    perturbed = logits + gumbel_noise(logits, generator)
    scores = perturbed
    soft = torch.zeros_like(logits)
    onehot = torch.zeros_like(logits)
    eps = torch.finfo(logits.dtype).eps
    for _ in range(min(k, logits.shape[-1])):
        scores = scores + torch.log((1.0 - onehot).clamp(min=eps))
        onehot = masked_softmax(scores / tau, valid, dim=-1)
        soft = soft + onehot
    hard = topk_mask(perturbed.detach(), k, valid)
    return hard - soft.detach() + soft


def attention_pool(tokens: Tensor, logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Weighted sum of tokens (B, M, D) with weights masked_softmax(logits (B, M)): (B, D)."""
    weights = masked_softmax(logits, mask, dim=-1)  # (B, M)
    return torch.einsum("bm,bmd->bd", weights, tokens)  # (B, D)
