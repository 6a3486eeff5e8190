"""README "Adding an attention variant": one module's worth of code and one registration, nothing else.

A toy pair scorer (late interaction: each word's best region, averaged) is defined and registered
here, then trained, embedded, scored exhaustively and pruned, and synced into the warehouse by the
same library functions the pipeline uses, with no other change to tbpr.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pytest
import torch
from torch import Tensor

from tasks.embed.encode import embed_split
from tasks.report.warehouse import sync
from tasks.score.layout import rankings_glob
from tasks.score.run import score
from tasks.tracking.config import TrackingConfig
from tasks.train.config import registered_variants
from tasks.train.loop import train_variant
from tbpr_models import (
    VARIANTS,
    ImageFeatures,
    PairScorerConfig,
    PairScorerHead,
    TextFeatures,
    register_variant,
)
from tbpr_models.attention import l2_normalize


@dataclass(frozen=True)
class MaxSimConfig(PairScorerConfig):
    kind: Literal["toy_maxsim"] = "toy_maxsim"


class MaxSimHead(PairScorerHead):
    """Attention score: the mean over real words of the word's best cosine over the image regions."""

    def attention_similarity(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        cosine = torch.einsum("qld,gnd->qgln", l2_normalize(texts.local), l2_normalize(images.local))
        mask = texts.mask[:, None, :].to(cosine.dtype)  # (Q, 1, L)
        return (cosine.amax(dim=-1) * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (Q, G)

    def attention_candidates(
        self, texts: TextFeatures, images: ImageFeatures, candidates: Tensor, memory_budget_mb: float
    ) -> Tensor:
        scores = self.attention_similarity(texts, images)  # (Q, G): a toy may be simple
        return scores.gather(1, candidates.clamp(min=0)).masked_fill(candidates < 0, -torch.inf)

    def word_region_attention(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        return (l2_normalize(texts.local[0]) @ l2_normalize(images.local[0]).t()).softmax(dim=-1)


@pytest.fixture
def toy_variant() -> Iterator[str]:
    register_variant(MaxSimConfig, MaxSimHead)  # the one registration
    try:
        yield "toy_maxsim"
    finally:
        VARIANTS.pop("toy_maxsim")


def test_a_registered_toy_variant_runs_train_embed_score_and_warehouse(
    toy_variant: str, tiny_data: Path, tiny_config: Any, tracking_uri: tuple[str, str], tmp_path: Path
) -> None:
    assert toy_variant in registered_variants()  # presets default to every registered variant
    uri, artifacts = tracking_uri
    tracking = TrackingConfig(tracking_uri=uri, artifact_root=artifacts, experiment="toy")
    trained = train_variant(
        tiny_data, tiny_config(tmp_path / "train", variant=toy_variant), tracking=tracking, progress=False
    )
    emb = embed_split(tiny_data, trained.checkpoint_dir, tmp_path / "emb", indexes=("flat",))
    assert emb.info.variant == toy_variant and emb.info.pairwise
    out = tmp_path / "runs"
    exhaustive = score(emb.out, out / "exhaustive", mode="exhaustive", tracking=tracking)
    pruned = score(emb.out, out / "pruned", mode="pruned", top_k=emb.info.num_images, tracking=tracking)
    # k = the whole gallery: re-ranking scores every pair, so the rankings must agree exactly
    for name in ("R1", "R5", "mAP"):
        assert pruned.metrics[name] == pytest.approx(exhaustive.metrics[name], abs=1e-6)
    db = tracking.sqlite_file()
    assert db is not None
    warehouse = sync(db, tmp_path / "warehouse.duckdb", rankings_glob(out), [tiny_data]).warehouse
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.sql(
            "SELECT mode, R1 FROM scoring_jobs WHERE variant = ? ORDER BY mode", params=[toy_variant]
        ).fetchall()
    assert [mode for mode, _ in rows] == ["exhaustive", "pruned"]
    assert np.allclose([r1 for _, r1 in rows], [exhaustive.metrics["R1"], pruned.metrics["R1"]])
