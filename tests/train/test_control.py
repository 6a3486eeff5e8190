"""The instrument is calibrated: the positive control `control_top_half` (`global` pooling only the top
half of each image) must come out significantly worse than `global` under the leaderboard's own
protocol: same data, same frozen features, same epochs, several seeds, exhaustive scoring, paired
bootstrap. If this comparison could not see a handicap that large, "no difference" would mean nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.data.prepare import prepare_dataset
from tasks.data.synth import generate
from tasks.embed.encode import embed_split
from tasks.report.stats import PerQueryRuns, compare, per_query_percent
from tasks.score.layout import PER_QUERY
from tasks.score.run import score
from tasks.tracking.config import TrackingConfig
from tasks.train.config import TrainConfig, control_variants, registered_variants
from tasks.train.loop import train_variant

SEEDS = (0, 1)
# the main job's encoders, frozen: ImageNet EfficientNet-Lite0 and MiniLM (installed from PyPI)
MODEL = {"image": {"freeze": True}, "text": {"freeze_layers": 6}}


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """260 synthetic identities: 200 train, 30 each in val and test (about 190 test captions)."""
    root = tmp_path_factory.mktemp("control")
    generate(root / "source", identities=260, seed=3, held_out=30, show_progress=False)
    return prepare_dataset(root / "source", "cuhk-pedes", root / "data", progress=False).out


def test_the_control_is_registered_but_not_a_default_variant() -> None:
    assert control_variants() == ["control_top_half"]
    assert "control_top_half" not in registered_variants() and "global" in registered_variants()


def test_the_positive_control_is_significantly_worse_than_global(
    synth_data: Path, tracking_uri: tuple[str, str], tmp_path: Path
) -> None:
    uri, artifacts = tracking_uri
    tracking = TrackingConfig(tracking_uri=uri, artifact_root=artifacts, experiment="control")
    per_query: dict[str, list[dict[str, np.ndarray]]] = {}
    for variant in ("global", "control_top_half"):
        for seed in SEEDS:
            name = f"{variant}-{seed}"
            config = TrainConfig.model_validate(
                {
                    "variant": variant,
                    "model": MODEL,
                    "epochs": 8,
                    "batch_size": 16,
                    "seed": seed,
                    "features": "cached",
                    "sampler": "identity",
                    "smooth": 3,
                    "device": "cpu",
                    "output_dir": tmp_path / name,
                }
            )
            trained = train_variant(synth_data, config, tracking=tracking, progress=False)
            assert trained.stop_reason == "epochs" and trained.epochs == 8
            emb = embed_split(synth_data, trained.checkpoint_dir, tmp_path / f"emb-{name}", indexes=("flat",))
            out = score(emb.out, tmp_path / f"score-{name}", mode="exhaustive", tracking=tracking).out
            table = pq.read_table(out / PER_QUERY).sort_by("query_id")
            per_query.setdefault(variant, []).append(
                per_query_percent(
                    table["first_match_rank"].to_numpy(), table["ap"].to_numpy(), table["inp"].to_numpy()
                )
            )
    runs = {
        v: PerQueryRuns({m: np.stack([s[m] for s in seeds]) for m in seeds[0]})
        for v, seeds in per_query.items()
    }
    rows = {row["variant"]: row for row in compare(runs)}
    control = rows["control_top_half"]
    # significantly worse: the whole paired 95% interval below zero
    assert control["delta_R1"] < 0 and control["delta_R1_high"] < 0, control
    assert control["delta_R1_mde"] > 0, control
    # the MDE is the bootstrap's: 2.8 standard errors of the paired difference, about the interval's
    # half-width (1.96 SE) times 2.8 / 1.96
    half_width = (control["delta_R1_high"] - control["delta_R1_low"]) / 2
    assert control["delta_R1_mde"] == pytest.approx(half_width * 2.801585 / 1.959964, rel=0.25)
