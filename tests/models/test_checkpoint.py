"""save_checkpoint -> load_checkpoint restores the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tbpr_models import (
    ImageEncoderConfig,
    ModelConfig,
    TextEncoderConfig,
    build_model,
    load_checkpoint,
    save_checkpoint,
    variant_config,
)
from tbpr_models.checkpoint import read_checkpoint_config


@pytest.mark.parametrize("variant", ["mixed", "nonlocal"])
def test_save_then_load_gives_identical_outputs(tmp_path: Path, variant: str) -> None:
    torch.manual_seed(0)
    config = ModelConfig(
        variant=variant_config(variant),
        image=ImageEncoderConfig(kind="resnet_small", height=64, width=32, widths=(8, 16, 16, 32)),
        text=TextEncoderConfig(kind="small", hidden=16, layers=1, heads=2, max_length=8),
        embed_dim=16,
        num_classes=3,
    )
    model = build_model(config)
    model.train()
    model.image_encoder(torch.randn(4, 3, 64, 32))  # move the BatchNorm running statistics off their init
    model.eval()
    out = save_checkpoint(model, tmp_path / "ckpt", extra={"epoch": 3, "val/R1": 12.5})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    payload = json.loads((out / "config.json").read_text())
    assert payload["extra"] == {"epoch": 3, "val/R1": 12.5} and payload["variant"]["kind"] == variant

    loaded = load_checkpoint(out, device="cpu")
    assert loaded.config == config and not loaded.training
    assert read_checkpoint_config(out)[1]["epoch"] == 3
    pixels = torch.randn(2, 3, 64, 32)
    ids = torch.tensor([[101, 2000, 2001, 102, 0, 0, 0, 0], [101, 2002, 102, 0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        scores = model.similarity(model.encode_texts(ids, mask), model.encode_images(pixels))
        again = loaded.similarity(loaded.encode_texts(ids, mask), loaded.encode_images(pixels))
        local = model.encode_images(pixels).local
        local_again = loaded.encode_images(pixels).local
    assert torch.equal(scores, again) and torch.equal(local, local_again)
    state, state_again = model.state_dict(), loaded.state_dict()
    assert state.keys() == state_again.keys()
    assert all(torch.equal(state[k], state_again[k]) for k in state)


def test_loading_a_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="save_checkpoint"):
        load_checkpoint(tmp_path / "nothing")
