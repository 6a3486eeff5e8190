"""A model trained on the feature cache is embedded from it: the same EMB as from pixels, within the
float16 rounding of the cached activations, without re-running the frozen encoders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tasks.cache.features import build_cache
from tasks.core.env import home
from tasks.data.reader import load_prepared
from tasks.embed import layout
from tasks.embed.encode import embed_split
from tbpr_models import build_model, build_tokenizer, model_config_from_dict, save_checkpoint


@pytest.fixture(autouse=True)
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TBPR_HOME", str(tmp_path / "home"))  # the feature cache lives under TBPR_HOME


def _embeddings(emb: Path, table: str) -> np.ndarray:
    return np.stack(pq.read_table(emb / table)["embedding"].to_numpy(zero_copy_only=False))


@pytest.mark.parametrize("variant", ["global", "cross_scan"])
def test_embedding_from_the_cache_matches_embedding_from_pixels(
    prepared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, variant: str
) -> None:
    torch.manual_seed(0)
    config = model_config_from_dict(
        {
            "embed_dim": 16,
            "num_classes": 0,
            "variant": {"kind": variant},
            "image": {"kind": "resnet_small", "height": 64, "width": 32, "widths": [8, 16], "freeze": True},
            "text": {"kind": "minilm", "max_length": 16, "freeze_layers": 6},
        }
    )
    model = build_model(config).eval()
    checkpoint = save_checkpoint(model, tmp_path / "ckpt", trained_only=True)
    data = load_prepared(prepared_data)
    build_cache(data, model, build_tokenizer(config.text), root=home().feature_cache, progress=False)
    with caplog.at_level(logging.INFO, logger="tasks.embed.encode"):
        cached = embed_split(prepared_data, checkpoint, tmp_path / "cached", indexes=("flat",)).out
    assert "from the feature cache" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tasks.embed.encode"):
        raw = embed_split(
            prepared_data, checkpoint, tmp_path / "raw", indexes=("flat",), from_cache=False
        ).out
    assert "from the feature cache" not in caplog.text
    for table in (layout.GALLERY, layout.QUERIES):
        np.testing.assert_allclose(_embeddings(cached, table), _embeddings(raw, table), atol=3e-3)
    for name in (layout.IMAGE_LOCAL, layout.TEXT_LOCAL, layout.TEXT_MASK):
        a, b = np.load(cached / name), np.load(raw / name)
        assert a.shape == b.shape
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=5e-3)


def test_a_model_whose_frozen_weights_differ_is_embedded_from_pixels(
    prepared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = {
        "embed_dim": 16,
        "num_classes": 0,
        "variant": {"kind": "global"},
        "image": {"kind": "resnet_small", "height": 64, "width": 32, "widths": [8, 16], "freeze": True},
        "text": {"kind": "minilm", "max_length": 16, "freeze_layers": 6},
    }
    torch.manual_seed(0)
    cached_model = build_model(model_config_from_dict(spec)).eval()
    build_cache(
        load_prepared(prepared_data), cached_model, build_tokenizer(cached_model.config.text),
        root=home().feature_cache, progress=False,
    )  # fmt: skip
    torch.manual_seed(1)  # other random frozen weights: the cache's key does not match
    other = build_model(model_config_from_dict(spec)).eval()
    checkpoint = save_checkpoint(other, tmp_path / "ckpt")
    with caplog.at_level(logging.INFO, logger="tasks.embed.encode"):
        embed_split(prepared_data, checkpoint, tmp_path / "emb", indexes=("flat",))
    assert "from the feature cache" not in caplog.text
