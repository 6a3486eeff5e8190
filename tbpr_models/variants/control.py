"""Calibration controls, not attention variants: `control_top_half` (positive) and `control_aa` (negative).

`global` handicapped on purpose: its image embedding pools only the top half of the feature map
(head and torso; legs and shoes are never seen), so every caption word about trousers or shoes is
useless to it. A comparison that cannot tell it from `global` cannot tell anything smaller either:
the pipeline trains it with `--control` (`train.control = true`) and the leaderboard must show it
significantly worse. Registered like every variant (its checkpoints load anywhere), it is left out of
the default set of variants a pipeline trains (`control = True`).

`control_aa` is the A/A (negative) control: `global` exactly, trained with other seeds
(`SEED_OFFSET` added to each of the pipeline's seeds). Its difference to `global` is seed noise and
nothing else, so the leaderboard must find it not significant; a verdict that calls it better or
worse is miscalibrated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor

from tbpr_models.attention import l2_normalize
from tbpr_models.config import VariantConfig
from tbpr_models.features import ImageFeatures
from tbpr_models.variant import VariantHead

# `control_aa` trains seed s + SEED_OFFSET where the other variants train seed s: other initialisations
# and batch orders than `global`'s, never one of them
SEED_OFFSET = 1000


@dataclass(frozen=True)
class ControlTopHalfConfig(VariantConfig):
    kind: Literal["control_top_half"] = "control_top_half"


class ControlTopHalfHead(VariantHead):
    """Mean pooling over the top half of the region rows only; texts and similarity as `global`."""

    control: ClassVar[bool] = True

    def images(self, tokens: Tensor) -> ImageFeatures:
        height, width = self.dims.image_grid
        top = tokens[:, : max(1, height // 2) * width]  # (B, N/2, D): regions are row-major (h, w)
        return ImageFeatures(global_=l2_normalize(top.mean(dim=1)), local=tokens)


@dataclass(frozen=True)
class ControlAAConfig(VariantConfig):
    kind: Literal["control_aa"] = "control_aa"


class ControlAAHead(VariantHead):
    """`global` itself (mean pooling, cosine of globals) under another name, trained with other seeds."""

    control: ClassVar[bool] = True
    seed_offset: ClassVar[int] = SEED_OFFSET
