"""Config round trips, registry, tokenizer and transforms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tbpr_models import (
    VARIANTS,
    ImageEncoderConfig,
    ImageTransform,
    ModelConfig,
    TextEncoderConfig,
    build_model,
    build_tokenizer,
    model_config_from_dict,
    variant_config,
)
from tbpr_models.transforms import IMAGENET_MEAN, IMAGENET_STD
from tbpr_models.variants.mixed import MixedConfig

REFINERS = ["global", "spatial", "channel", "mixed", "nonlocal"]


def test_registry_has_the_refiners_with_matching_kinds() -> None:
    for name in REFINERS:
        spec = VARIANTS[name]
        assert type(variant_config(name)) is spec.config_cls and variant_config(name).kind == name
        assert not spec.head_cls.pairwise


@pytest.mark.parametrize("variant", REFINERS)
def test_model_config_json_round_trip(variant: str) -> None:
    config = ModelConfig(
        variant=variant_config(variant),
        image=ImageEncoderConfig(kind="efficientnet_lite0", height=96, width=48, widths=(4, 8), path="/x"),
        text=TextEncoderConfig(kind="small", max_length=20, freeze_layers=3),
        embed_dim=64,
        num_classes=7,
        loss_weights={"sdm": 1.0, "id": 0.5},
        init_temperature=0.05,
    )
    restored = model_config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.image.widths, tuple)
    assert restored.weight("id") == 0.5 and restored.weight("part") == 1.0


def test_variant_config_overrides_and_round_trips_them() -> None:
    config = ModelConfig(variant=variant_config("mixed", num_parts=6, part_loss="itc"))
    assert config.variant == MixedConfig(num_parts=6, part_loss="itc")
    assert model_config_from_dict(json.loads(json.dumps(config.to_dict()))).variant == config.variant


def test_unknown_variant_and_fields_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown variant 'nope'.*global"):
        variant_config("nope")
    with pytest.raises(ValueError, match=r"no field.*'heads'"):
        variant_config("channel", heads=3)
    data = ModelConfig(variant=variant_config("global")).to_dict()
    data["text"]["layerz"] = 3
    with pytest.raises(ValueError, match="layerz"):
        model_config_from_dict(data)


def test_tokenizer_pads_and_truncates_to_max_length() -> None:
    config = TextEncoderConfig(max_length=10)
    tokenizer = build_tokenizer(config)
    short, long = "a man in a red jacket", " ".join(["woman"] * 30)
    ids, mask = tokenizer([short, long])
    assert ids.shape == mask.shape == (2, 10) and ids.dtype == mask.dtype == torch.long
    unpadded = tokenizer.backend(short)["input_ids"]  # [CLS] ... [SEP], no padding
    n = len(unpadded)
    assert ids[0, :n].tolist() == unpadded and mask[0].tolist() == [1] * n + [0] * (10 - n)
    assert ids[0, n:].eq(config.pad_token_id).all()
    assert mask[1].all() and ids[1, -1].item() == tokenizer.backend.sep_token_id
    assert tokenizer.decode(ids[:1]) == [short]
    assert (tokenizer.vocab_size, tokenizer.mask_token_id) == (config.vocab_size, config.mask_token_id)


def _denormalise(pixels: torch.Tensor) -> torch.Tensor:
    return pixels * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)


def test_eval_transform_resizes_and_normalises() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(50, 20, 3), dtype=np.uint8)
    image = Image.fromarray(array)
    pixels = ImageTransform(height=64, width=32, train=False)(image)
    assert pixels.shape == (3, 64, 32) and pixels.dtype == torch.float32
    resized = np.asarray(image.resize((32, 64), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    expected = (
        torch.from_numpy(resized).permute(2, 0, 1) - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    ) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(pixels, expected)


def test_train_transform_augments_reproducibly_without_hue_shift() -> None:
    grey = Image.new("RGB", (30, 70), (90, 90, 90))
    a = [ImageTransform(64, 32, train=True, seed=3)(grey) for _ in range(2)]
    torch.testing.assert_close(a[0], a[1])
    transform = ImageTransform(64, 32, train=True, seed=4)
    outputs = [transform(grey) for _ in range(8)]
    assert all(o.shape == (3, 64, 32) for o in outputs)
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])
    for out in outputs:  # brightness/contrast/saturation jitter keeps a grey image grey
        rgb = _denormalise(out)
        torch.testing.assert_close(rgb[0], rgb[1], atol=1e-5, rtol=0)
        torch.testing.assert_close(rgb[1], rgb[2], atol=1e-5, rtol=0)
    red = Image.new("RGB", (32, 64), (200, 30, 30))
    for _ in range(8):
        rgb = _denormalise(transform(red))
        centre = rgb[:, 16:48, 8:24]
        assert (centre[0] > centre[1] + 0.2).all()  # red stays red: no hue shift


def test_a_seed_draws_the_same_model_but_the_head_for_every_variant() -> None:
    """What the leaderboard pairs by seed: encoders, projections, temperature and classifier are the
    same draw for every variant at one seed; only the head differs (and another seed draws anew)."""

    def built(variant: str, seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        config = ModelConfig(
            variant=variant_config(variant),
            image=ImageEncoderConfig(kind="resnet_small", height=64, width=32, widths=(8, 16)),
            text=TextEncoderConfig(kind="small", hidden=32, layers=1, heads=2, max_length=8),
            embed_dim=32,
            num_classes=5,
        )
        return build_model(config, load_pretrained=False).state_dict()

    reference = built("global", 3)
    for variant in sorted(VARIANTS):
        state = built(variant, 3)
        shared = {k for k in state if not k.startswith("head.")}
        assert shared == set(reference) and "classifier.weight" in shared
        assert all(torch.equal(state[k], reference[k]) for k in shared), variant
    other = built("global", 4)
    assert not torch.equal(other["classifier.weight"], reference["classifier.weight"])
