"""CLIP towers from a local folder (a tiny random CLIP written by `save_pretrained` in the session):
the same numbers as transformers' own CLIP, stages that resume where they stopped, CLIP's tokenizer
and projections, activation checkpointing, and clear errors for folders that are not usable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import CLIPModel

from tbpr_models import (
    Batch,
    build_model,
    build_tokenizer,
    load_checkpoint,
    model_config_from_dict,
    save_checkpoint,
)
from tbpr_models.encoders.image import ClipVision
from tbpr_models.encoders.text import ClipText

CAPTIONS = ["a woman in the red coat", "the man", "an old man in a long grey coat and black shoes"]


def config(clip_model: dict[str, Any], variant: str = "global", **changes: Any) -> Any:
    return model_config_from_dict({**clip_model, **changes, "variant": {"kind": variant}})


@pytest.fixture(scope="module")
def reference(tiny_clip: Path) -> CLIPModel:
    return CLIPModel.from_pretrained(tiny_clip, local_files_only=True).eval()


def test_text_tower_gives_transformers_clip_token_states(
    clip_model: dict[str, Any], reference: CLIPModel
) -> None:
    model = build_model(config(clip_model)).eval()
    assert isinstance(model.text_encoder, ClipText)
    ids, mask = build_tokenizer(model.config.text)(CAPTIONS)
    with torch.no_grad():
        ours = model.text_encoder(ids, mask)  # (B, L, C)
        theirs = reference.text_model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=1e-5, atol=1e-5)


def test_vision_tower_gives_transformers_clip_patch_states(
    clip_model: dict[str, Any], reference: CLIPModel
) -> None:
    model = build_model(config(clip_model)).eval()
    assert isinstance(model.image_encoder, ClipVision) and model.image_encoder.grid == (8, 4)
    pixels = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        ours = model.image_encoder(pixels)  # (B, 32, C)
        states = reference.vision_model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
        theirs = reference.vision_model.post_layernorm(states)[:, 1:]  # every patch token, after ln_post
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_stages_resume_where_they_stopped(clip_model: dict[str, Any]) -> None:
    model = build_model(config(clip_model)).eval()
    ids, mask = build_tokenizer(model.config.text)(CAPTIONS)
    pixels = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        for cut in range(1, model.text_encoder.num_stages):
            lower = model.text_encoder.hidden(ids, mask, cut)
            torch.testing.assert_close(
                model.text_encoder(ids, mask, lower, cut), model.text_encoder(ids, mask), rtol=1e-5, atol=1e-5
            )
        for cut in range(1, model.image_encoder.num_stages):
            lower = model.image_encoder.run(pixels, 0, cut)
            torch.testing.assert_close(
                model.image_encoder(lower, cut), model.image_encoder(pixels), rtol=1e-5, atol=1e-5
            )


def test_tokenizer_comes_from_the_folder_with_irra_mask_convention(
    clip_model: dict[str, Any], tiny_clip: Path
) -> None:
    mc = config(clip_model)
    backend = json.loads((tiny_clip / "tokenizer.json").read_text())
    specials = {t["content"]: t["id"] for t in backend["added_tokens"]}
    tokenizer = build_tokenizer(mc.text)
    assert mc.text.vocab_size == len(backend["model"]["vocab"]) == tokenizer.vocab_size
    assert mc.text.pad_token_id == specials["<|endoftext|>"]
    assert mc.text.mask_token_id == specials["<|startoftext|>"] - 1  # IRRA gives up the last BPE entry
    ids, mask = tokenizer(["the man"])
    assert ids[0, 0] == specials["<|startoftext|>"]
    assert ids[0, int(mask.sum()) - 1] == specials["<|endoftext|>"]
    assert tokenizer.decode(ids) == ["the man"]


def test_projections_start_from_clips_when_dimensions_allow(
    clip_model: dict[str, Any], reference: CLIPModel
) -> None:
    same = build_model(config(clip_model))  # embed_dim 16 = CLIP's projection_dim
    torch.testing.assert_close(same.image_proj.weight, reference.visual_projection.weight)
    torch.testing.assert_close(same.text_proj.weight, reference.text_projection.weight)
    assert not same.image_proj.bias.any()
    other = build_model(config(clip_model, embed_dim=24))
    assert other.image_proj.weight.shape == (24, 32)


def test_checkpoint_keeps_the_scores_without_the_clip_folder(
    clip_model: dict[str, Any], tiny_clip: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "clip"
    shutil.copytree(tiny_clip, folder)
    settings = {
        **clip_model,
        "image": {**clip_model["image"], "path": str(folder)},
        "text": {**clip_model["text"], "path": str(folder)},
    }
    model = build_model(config(settings, "cross_scan")).eval()
    checkpoint = save_checkpoint(model, tmp_path / "ckpt")
    shutil.rmtree(folder)  # the checkpoint holds CLIP's config and tokenizer, the weights are its own
    assert not list((checkpoint / "encoders").rglob("*.safetensors"))
    restored = load_checkpoint(checkpoint).eval()
    assert Path(restored.config.text.path or "").is_relative_to(checkpoint.resolve())
    ids, mask = build_tokenizer(restored.config.text)(CAPTIONS)
    pixels = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        a = model.similarity(model.encode_texts(ids, mask), model.encode_images(pixels))
        b = restored.similarity(restored.encode_texts(ids, mask), restored.encode_images(pixels))
    torch.testing.assert_close(a, b)
    again = save_checkpoint(restored, tmp_path / "again")  # a restored model saves like any other
    torch.testing.assert_close(load_checkpoint(again).image_proj.weight, model.image_proj.weight)


def test_activation_checkpointing_gives_the_same_gradients(clip_model: dict[str, Any]) -> None:
    model = build_model(config(clip_model, "cross_fusion"))
    ids, mask = build_tokenizer(model.config.text)(CAPTIONS[:2])
    batch = Batch(
        pixels=torch.randn(2, 3, 64, 32), input_ids=ids, attention_mask=mask, person_ids=torch.tensor([0, 1])
    )
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        model.set_activation_checkpointing(enabled)
        model.train()
        torch.manual_seed(0)  # the same words masked for mlm
        sum(model.losses(batch).values()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_frozen_lower_layers_do_not_train(clip_model: dict[str, Any]) -> None:
    settings = {**clip_model, "text": {**clip_model["text"], "freeze_layers": 1, "freeze_embeddings": True}}
    model = build_model(config(settings))
    text = model.text_encoder
    assert text.frozen_stages == 2
    assert not any(p.requires_grad for m in text.stage_modules()[:2] for p in m.parameters())
    assert all(p.requires_grad for p in text.stage_modules()[2].parameters())


def write_not_clip(folder: Path) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))


@pytest.mark.parametrize(
    ("break_folder", "message"),
    [
        (lambda f: shutil.rmtree(f), "does not exist"),
        (lambda f: (f / "model.safetensors").unlink(), "has no weights"),
        (lambda f: (f / "tokenizer.json").unlink(), "has no tokenizer"),
        (lambda f: (f / "config.json").write_text(json.dumps({"model_type": "bert"})), "not a CLIP model"),
        (lambda f: (f / "config.json").write_text("{not json"), "not readable JSON"),
    ],
    ids=["missing", "no-weights", "no-tokenizer", "not-clip", "bad-config"],
)
def test_unusable_folders_are_clear_errors(
    clip_model: dict[str, Any], tiny_clip: Path, tmp_path: Path, break_folder: Any, message: str
) -> None:
    folder = tmp_path / "clip"
    shutil.copytree(tiny_clip, folder)
    break_folder(folder)
    settings = {
        **clip_model,
        "image": {**clip_model["image"], "path": str(folder)},
        "text": {**clip_model["text"], "path": str(folder)},
    }
    with pytest.raises(FileNotFoundError, match=message):
        build_model(config(settings))


def test_clip_kinds_need_a_path(clip_model: dict[str, Any]) -> None:
    for tower in ("image", "text"):
        settings = {**clip_model, tower: {k: v for k, v in clip_model[tower].items() if k != "path"}}
        with pytest.raises(ValueError, match=f"{tower}.kind 'clip' needs {tower}.path"):
            config(settings)


def test_clip_images_are_normalised_with_clips_mean_and_std(clip_model: dict[str, Any]) -> None:
    from PIL import Image

    from tbpr_models import image_transform

    grey = Image.new("RGB", (32, 64), (128, 64, 200))
    pixels = image_transform(config(clip_model).image)(grey)  # (3, 64, 32)
    expected = [(v / 255 - m) / s for v, m, s in zip((128, 64, 200), CLIP_MEAN, CLIP_STD, strict=True)]
    torch.testing.assert_close(pixels[:, 10, 10], torch.tensor(expected))
    imagenet = image_transform(
        config(clip_model, image={"kind": "resnet_small", "height": 64, "width": 32}).image
    )
    assert not torch.allclose(imagenet(grey)[:, 10, 10], torch.tensor(expected))


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # openai/clip-vit-base-patch16's preprocessor_config.json
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
