"""Variant heads, one module each: a frozen config (`kind: Literal["<name>"]`) and a head class.

Refiners (single-stream): global, spatial, channel, mixed, nonlocal. Pairwise or fused:
cross_scan, cross_fusion, hard_topk. A variant module imports the base (`tbpr_models.variant`) and
the shared layers only, never a sibling and never the registry; `tbpr_models.registry` lists them.
"""
