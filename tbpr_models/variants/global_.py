"""`global`: the baseline without attention.

Mean over image regions and masked mean over words, L2-normalised; similarity is the cosine of the
globals. This is the global-embedding baseline of text-based person search trained with IRRA's SDM
loss (Jiang and Ye, "Cross-Modal Implicit Relation Reasoning and Aligning for Text-to-Image Person
Retrieval", CVPR 2023) without its implicit-relation branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tbpr_models.config import VariantConfig
from tbpr_models.variant import VariantHead


@dataclass(frozen=True)
class GlobalConfig(VariantConfig):
    kind: Literal["global"] = "global"


class GlobalHead(VariantHead):
    """Pooling only: the base class's mean pooling and cosine similarity."""
