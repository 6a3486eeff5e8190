"""Typed outputs of the encoders and the training batch.

Dimension letters: B batch, Q queries, G gallery, N image regions, L words, D embedding dim.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ImageFeatures:
    global_: Tensor  # (B, D), L2-normalised
    local: Tensor  # (B, N, D)

    def __len__(self) -> int:
        return self.global_.shape[0]

    def select(self, index: Tensor | slice) -> ImageFeatures:
        return ImageFeatures(global_=self.global_[index], local=self.local[index])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ImageFeatures:
        return ImageFeatures(global_=self.global_.to(device, dtype), local=self.local.to(device, dtype))


@dataclass(frozen=True)
class TextFeatures:
    global_: Tensor  # (B, D), L2-normalised
    local: Tensor  # (B, L, D)
    mask: Tensor  # (B, L) bool, True where a real token is

    def __len__(self) -> int:
        return self.global_.shape[0]

    def select(self, index: Tensor | slice) -> TextFeatures:
        return TextFeatures(global_=self.global_[index], local=self.local[index], mask=self.mask[index])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextFeatures:
        return TextFeatures(
            global_=self.global_.to(device, dtype),
            local=self.local.to(device, dtype),
            mask=self.mask.to(device),
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
