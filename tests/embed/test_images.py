"""The one image-encoding loop (`tasks.embed.images`) against a plain forward pass of each image alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.embed.images import encode_images
from tbpr_models import build_model
from tests.conftest import tiny_config

CPU = torch.device("cpu")


def _model(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(tiny_config(variant), load_pretrained=False).eval()  # type: ignore[arg-type]


def _alone(model: torch.nn.Module, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
    """Each image through the encoder and `compact_images` by itself: globals (G, D), locals (G, N, D)."""
    globals_, locals_, unit = [], [], []
    with torch.no_grad():
        for image in pixels:
            feats = model.head.compact_images(model.encode_images(image[None]))  # type: ignore[operator]
            globals_.append(feats.global_[0].numpy())
            locals_.append(feats.local[0].numpy())
            unit.append(feats.unit_local)
    return np.stack(globals_), np.stack(locals_), all(unit)


@pytest.mark.parametrize("variant", ["global", "hard_topk"])
def test_batches_written_by_rows_equal_each_image_encoded_alone(variant: str, tmp_path: Path) -> None:
    model = _model(variant)
    pixels = torch.rand(7, 3, 32, 16, generator=torch.Generator().manual_seed(1))  # (G, 3, H, W)
    want_global, want_local, want_unit = _alone(model, pixels)
    batches = [(pixels[a : a + 3], model.encode_images) for a in range(0, 7, 3)]  # 3 + 3 + 1
    encoded = encode_images(model, batches, tmp_path / "local.npy", capacity=7, device=CPU, precision="fp32")
    local = np.load(tmp_path / "local.npy")
    assert encoded.rows == 7 and encoded.unit_local is want_unit
    assert encoded.unit_local is (variant == "hard_topk")  # hard_topk stores its selected regions unit
    assert encoded.global_.dtype == np.float32 and local.dtype == np.float16
    np.testing.assert_allclose(encoded.global_, want_global, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(local, want_local.astype(np.float16), rtol=1e-3, atol=1e-3)


def test_a_shard_writes_only_its_rows_of_an_existing_file(tmp_path: Path) -> None:
    model = _model("global")
    pixels = torch.rand(5, 3, 32, 16, generator=torch.Generator().manual_seed(2))
    want_global, want_local, _ = _alone(model, pixels)
    path = tmp_path / "local.npy"
    np.lib.format.open_memmap(path, "w+", np.float16, (9, *want_local.shape[1:])).flush()
    encoded = encode_images(
        model,
        [(pixels[:4], model.encode_images), (pixels[4:], model.encode_images)],
        path,
        capacity=7,
        device=CPU,
        precision="fp32",
        start=2,
        create=False,
    )
    local = np.load(path)
    assert encoded.rows == 5 and encoded.global_.shape == want_global.shape
    np.testing.assert_allclose(encoded.global_, want_global, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(local[2:7], want_local.astype(np.float16), rtol=1e-3, atol=1e-3)
    assert not local[:2].any() and not local[7:].any()  # the other shards' rows untouched
    nothing = encode_images(model, [], path, capacity=9, device=CPU, precision="fp32", start=9, create=False)
    assert nothing.rows == 0 and nothing.global_.shape == (0, want_global.shape[1])
