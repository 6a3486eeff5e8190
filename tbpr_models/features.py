"""Typed outputs of the encoders and the training batch, and their gathering across processes.

Dimension letters: B batch, Q queries, G gallery, N image regions, L words, D embedding dim.
Under data-parallel training (`torch.distributed` initialised, e.g. by torchrun) `gathered()` returns
the features of every process's share of the batch, in rank order, so that losses comparing across
the batch see the whole global batch; gradients flow back to each process's own rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


def distributed_world() -> int:
    """The number of data-parallel processes (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherRows(torch.autograd.Function):
    """All processes' (B, ...) rows -> (world * B, ...); backward sums every process's gradient of the
    gathered rows (each process's loss may depend on every row) and returns this process's rows."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, rows: Tensor) -> Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.span = (rank * rows.shape[0], (rank + 1) * rows.shape[0])  # type: ignore[attr-defined]
        out = rows.new_empty((world * rows.shape[0], *rows.shape[1:]))
        dist.all_gather_single(out, rows.contiguous())
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # sum over processes
        start, stop = ctx.span  # type: ignore[attr-defined]
        return grad[start:stop]


def gather_rows(rows: Tensor) -> Tensor:
    """(B, ...) -> (world * B, ...) the rows of every process in rank order (differentiable); `rows`
    itself when not distributed. Every process must pass the same shape."""
    if distributed_world() == 1:
        return rows
    if rows.dtype == torch.bool:
        return _GatherRows.apply(rows.to(torch.uint8)).bool()  # type: ignore[no-any-return]
    return _GatherRows.apply(rows)  # type: ignore[no-any-return]


def _widest(length: int, device: torch.device) -> int:
    """The largest `length` over the processes."""
    if distributed_world() == 1:
        return length
    value = torch.tensor([length], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item())


# `unit_local` on both feature types: True when every local token is already L2-normalised (or zero),
# as a head's `compact_*` may leave them and EMB then stores them; a head may skip normalising them again.


@dataclass(frozen=True)
class ImageFeatures:
    global_: Tensor  # (B, D), L2-normalised
    local: Tensor  # (B, N, D)
    unit_local: bool = False

    def __len__(self) -> int:
        return self.global_.shape[0]

    def select(self, index: Tensor | slice) -> ImageFeatures:
        return dataclasses.replace(self, global_=self.global_[index], local=self.local[index])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ImageFeatures:
        return dataclasses.replace(
            self, global_=self.global_.to(device, dtype), local=self.local.to(device, dtype)
        )

    def gathered(self) -> ImageFeatures:
        """The features of the whole global batch (every process's rows, in rank order)."""
        return dataclasses.replace(self, global_=gather_rows(self.global_), local=gather_rows(self.local))


@dataclass(frozen=True)
class TextFeatures:
    global_: Tensor  # (B, D), L2-normalised
    local: Tensor  # (B, L, D)
    mask: Tensor  # (B, L) bool, True where a real token is
    unit_local: bool = False

    def __len__(self) -> int:
        return self.global_.shape[0]

    def select(self, index: Tensor | slice) -> TextFeatures:
        return dataclasses.replace(
            self, global_=self.global_[index], local=self.local[index], mask=self.mask[index]
        )

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextFeatures:
        return dataclasses.replace(
            self,
            global_=self.global_.to(device, dtype),
            local=self.local.to(device, dtype),
            mask=self.mask.to(device),
        )

    def gathered(self) -> TextFeatures:
        """The features of the whole global batch (every process's rows, in rank order); the word axis
        padded (masked out) to the longest process's."""
        length = _widest(self.local.shape[1], self.local.device)
        pad = length - self.local.shape[1]
        local = torch.nn.functional.pad(self.local, (0, 0, 0, pad))
        mask = torch.nn.functional.pad(self.mask, (0, pad))
        return dataclasses.replace(
            self, global_=gather_rows(self.global_), local=gather_rows(local), mask=gather_rows(mask)
        )


@dataclass(frozen=True)
class Batch:
    """One training batch: image i and caption i show the same person.

    From the feature cache, `pixels` holds the input of image encoder stage `image_stage` and
    `text_hidden` the text encoder's hidden states after its lowest `text_stage` stages.
    """

    pixels: Tensor  # (B, 3, H, W) float, normalised; or a cached activation when image_stage > 0
    input_ids: Tensor  # (B, L) long
    attention_mask: Tensor  # (B, L) long or bool
    person_ids: Tensor  # (B,) long, class index in [0, num_classes) of the training identities
    image_stage: int = 0
    text_hidden: Tensor | None = None  # (B, L, C) cached hidden states
    text_stage: int = 0

    def to(self, device: torch.device | str) -> Batch:
        hidden = self.text_hidden
        return dataclasses.replace(
            self,
            pixels=self.pixels.to(device, non_blocking=True),
            input_ids=self.input_ids.to(device, non_blocking=True),
            attention_mask=self.attention_mask.to(device, non_blocking=True),
            person_ids=self.person_ids.to(device, non_blocking=True),
            text_hidden=None if hidden is None else hidden.to(device, non_blocking=True),
        )
