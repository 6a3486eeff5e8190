"""Variant heads; importing this package registers all of them in `tbpr_models.registry.VARIANTS`.

Refiners (single-stream): global, spatial, channel, mixed, nonlocal. Pairwise or fused:
cross_scan, cross_fusion, hard_topk.
"""

from tbpr_models.variants import (
    channel,
    cross_fusion,
    cross_scan,
    global_,
    hard_topk,
    mixed,
    nonlocal_,
    spatial,
)

__all__ = ["channel", "cross_fusion", "cross_scan", "global_", "hard_topk", "mixed", "nonlocal_", "spatial"]
