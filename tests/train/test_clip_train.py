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
from tasks.tracking.models import resolve_checkpoint
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
    registered, _ = resolve_checkpoint(result.run_id, tracking)  # the MLflow artifact, self-contained
    model = load_checkpoint(registered)
    assert (model.config.image.kind, model.config.text.kind) == ("clip", "clip")
    assert Path(model.config.image.path or "").is_relative_to(registered.resolve())

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


def test_irra_preset_trains_through_the_cli_with_a_clip_folder(
    tiny_clip: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """`tbpr train --profile irra`: the preset's settings (cross_fusion, SDM + ID + MLM, both CLIP towers)
    with the folder and the sizes of the tiny CLIP set on the command line."""
    import json
    import os
    import subprocess
    import sys

    from mlflow import MlflowClient

    settings = {
        "model.image.path": str(tiny_clip), "model.text.path": str(tiny_clip), "model.image.height": 64,
        "model.image.width": 32, "model.text.max_length": 24, "model.embed_dim": 16,
        "model.variant.heads": 2, "model.variant.layers": 1, "batch_size": 8, "num_workers": 0,
        "eval_batch_size": 8, "warmup_epochs": 0,
    }  # fmt: skip
    sets = [f"--set={key}={json.dumps(value)}" for key, value in settings.items()]
    done = subprocess.run(
        [sys.executable, "-m", "tbpr", "train", str(tiny_data), "--variant", "cross_fusion", "--profile",
         "irra", "--epochs", "1", "--device", "cpu", "--no-progress", *sets],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TBPR_HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(done.stdout.strip().splitlines()[-1])
    params, metrics = run.data.params, run.data.metrics
    assert params["model.image.kind"] == params["model.text.kind"] == "clip"
    assert params["model.text.mask_token_id"] == str(int(params["model.text.vocab_size"]) - 3)
    assert (params["train.lr"], params["train.weight_decay"], params["model.loss_weights.mlm"]) == (
        "5e-05",
        "4e-05",
        "1.0",
    )
    assert {"train/loss_sdm", "train/loss_id", "train/loss_mlm"} <= metrics.keys()
