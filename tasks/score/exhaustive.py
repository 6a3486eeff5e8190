"""Exhaustive scoring: the model's pair scorer over every (query, image) pair of an EMB folder, in the
memory-bounded blocks of `tbpr_models.scoring` (shared with training evaluation), with a progress bar.
Dimension letters: Q queries, G gallery.
"""

from __future__ import annotations

import numpy as np
import torch
from rich.progress import Progress

from tbpr_models.scoring import BlockPlan, FeatureSource, Scorer, similarity_in_blocks


def exhaustive_similarity(
    scorer: Scorer,
    source: FeatureSource,
    plan: BlockPlan,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    queries: slice | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """(Q, G) float32 scores of every query (or the `queries` slice) against every gallery image."""
    rows = range(source.num_texts)[queries or slice(None)]
    blocks = plan.blocks(len(rows), source.num_images)
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("exhaustive scoring", total=blocks)
        return similarity_in_blocks(
            scorer,
            source,
            plan,
            device=device,
            dtype=dtype,
            queries=queries,
            on_block=lambda: progress.advance(task),
        )
