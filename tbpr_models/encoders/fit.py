"""Settings that depend on the chosen encoder, checked against it when a config is built (not when the
model is): the text layers to freeze and the text length against the encoder's depth and positions, the
CLIP image size against its patch size. An error names the setting to change and its allowed range."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tbpr_models.config import ImageEncoderConfig, TextEncoderConfig
from tbpr_models.encoders.hf import clip_folder


def check_fits(image: ImageEncoderConfig, text: TextEncoderConfig) -> None:
    """ValueError when `text` or `image` asks for more than its encoder has."""
    layers, positions = _text_limits(text)
    if layers is not None and text.freeze_layers > layers:
        raise ValueError(
            f"text.freeze_layers={text.freeze_layers} but the {text.kind} text encoder has {layers} layers; "
            f"set text.freeze_layers to at most {layers} (the default 3 is MiniLM's)"
        )
    if positions is not None and text.max_length > positions:
        raise ValueError(
            f"text.max_length={text.max_length} exceeds the {text.kind} text encoder's {positions} "
            f"positions; set text.max_length to at most {positions}"
        )
    if image.freeze_stages and image.kind in ("resnet_small", "efficientnet_lite0"):
        stages = _image_stages(image)
        if image.freeze_stages > stages:
            raise ValueError(
                f"image.freeze_stages={image.freeze_stages} but the {image.kind} image encoder has {stages} "
                f"stages; set image.freeze_stages to at most {stages} (or image.freeze = true for all)"
            )
    if image.kind == "clip":
        patch = int(_clip_tower(image.path, "vision_config").get("patch_size", 32))
        if image.height % patch or image.width % patch:
            raise ValueError(
                f"image.height x image.width {image.height}x{image.width} is not a multiple of the CLIP "
                f"patch size {patch}; set both to multiples of {patch}"
            )


def _image_stages(image: ImageEncoderConfig) -> int:
    """Stages of a built-in CNN, counted on a weightless copy (the meta device: no memory, no weights)."""
    import dataclasses

    import torch

    from tbpr_models.encoders.image import build_image_encoder

    with torch.device("meta"):
        plain = dataclasses.replace(image, freeze=False, freeze_stages=0)
        return build_image_encoder(plain, load_pretrained=False).num_stages


def _text_limits(text: TextEncoderConfig) -> tuple[int | None, int | None]:
    """(layers that can be frozen, positions) of the text encoder `text` chooses; None: no limit (the
    small encoder trains from scratch, nothing frozen, its positions sized by max_length)."""
    if text.kind == "small":
        return None, None
    if text.kind == "clip":
        tower = _clip_tower(text.path, "text_config")
        return int(tower.get("num_hidden_layers", 12)), int(tower.get("max_position_embeddings", 77))
    from tbpr_models.encoders.text import minilm_path

    config = json.loads((Path(minilm_path()) / "config.json").read_text())
    return int(config["num_hidden_layers"]), int(config["max_position_embeddings"])


def _clip_tower(path: str | None, tower: str) -> dict[str, Any]:
    """A tower's settings in a CLIP folder's config.json (transformers' defaults fill what is absent)."""
    config = json.loads((clip_folder(path, weights=False) / "config.json").read_text())
    settings = config.get(tower)
    return settings if isinstance(settings, dict) else {}
