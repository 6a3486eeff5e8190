"""Every variant trains on both towers of a tiny random CLIP folder, and its checkpoint embeds, scores
(exhaustive and pruned) and searches: the whole pipeline with CLIP's tokenizer, regions and words."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tasks.data.reader import load_prepared
from tasks.embed.encode import embed_split
from tasks.score.layout import RANKINGS
from tasks.score.run import score
from tasks.score.search import search_text
from tasks.tracking.config import TrackingConfig
from tasks.train.config import TrainConfig, registered_variants
from tasks.train.loop import train_variant
from tbpr_models import load_checkpoint

TinyConfig = Callable[..., TrainConfig]


@pytest.fixture(scope="module")
def tracking(tracking_uri: tuple[str, str]) -> TrackingConfig:
    uri, artifacts = tracking_uri
    return TrackingConfig(tracking_uri=uri, artifact_root=artifacts)


@pytest.mark.parametrize("variant", registered_variants())
def test_variant_trains_on_clip_towers_then_embeds_scores_and_searches(
    variant: str,
    clip_model: dict[str, Any],
    tiny_data: Path,
    tiny_config: TinyConfig,
    tracking: TrackingConfig,
    tmp_path: Path,
) -> None:
    config = tiny_config(tmp_path / "train", variant=variant, model=clip_model, epochs=1, batch_size=8)
    result = train_variant(tiny_data, config, tracking=tracking, progress=False)
    assert result.epochs == 1 and 0 <= result.test_metrics["R1"] <= 100
    model = load_checkpoint(result.checkpoint_dir)
    assert (model.config.image.kind, model.config.text.kind) == ("clip", "clip")

    emb = tmp_path / "emb"
    embed_split(tiny_data, result.checkpoint_dir, emb, batch_size=4, indexes=("flat",))
    test = load_prepared(tiny_data).splits["test"]
    gallery = len(test.image_ids)
    exhaustive = score(emb, tmp_path / "exhaustive", mode="exhaustive", track=False)
    pruned = score(emb, tmp_path / "pruned", mode="pruned", top_k=gallery, track=False)
    assert exhaustive.pairs_scored == len(test.texts) * gallery
    assert pruned.metrics == pytest.approx(exhaustive.metrics, abs=1e-6)  # k = gallery: nothing pruned

    rankings = pq.read_table(tmp_path / "exhaustive" / RANKINGS).to_pandas()
    first_query = int(test.caption_ids[0])
    expected = rankings[rankings.query_id == first_query].sort_values("rank")
    hits = search_text(emb, test.texts[0], top_k=3, candidates=gallery)
    assert [h.image_id for h in hits] == expected.image_id.tolist()[:3]
    assert [h.score for h in hits] == pytest.approx(expected.score.tolist()[:3], abs=1e-4)
