"""A tiny prepared DATA folder built with pyarrow, a tiny model config and a tracking store per session.

12 identities (6 train, 3 val, 3 test) x 2 images (64x32 PNG, noise around an identity colour) x 2
captions naming the colour, so a model can learn something in a few steps.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

COLOURS = {
    "red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 50, 220), "yellow": (230, 220, 40),
    "black": (15, 15, 15), "white": (240, 240, 240), "orange": (240, 140, 20), "purple": (130, 40, 160),
    "pink": (240, 150, 190), "grey": (128, 128, 128), "brown": (110, 70, 30), "cyan": (40, 220, 220),
}  # fmt: skip
SPLITS = ["train"] * 6 + ["val"] * 3 + ["test"] * 3
TINY_MODEL: dict[str, Any] = {
    "embed_dim": 32,
    "image": {"kind": "resnet_small", "height": 64, "width": 32, "widths": [8, 16]},
    "text": {"kind": "small", "hidden": 32, "layers": 1, "heads": 2, "max_length": 16},
}


def identity_png(colour: tuple[int, int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, size=(64, 32, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_tiny_data(out: Path, dataset: str = "tiny") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, list[Any]] = {k: [] for k in ("image_id", "person_id", "split", "file_path", "image")}
    captions: dict[str, list[Any]] = {k: [] for k in ("caption_id", "image_id", "person_id", "split", "text")}
    for pid, ((name, rgb), split) in enumerate(zip(COLOURS.items(), SPLITS, strict=True)):
        for shot in range(2):
            image_id = 100 + 2 * pid + shot
            row = (image_id, 1000 + pid, split, f"p{pid}/{shot}.png", identity_png(rgb, image_id))
            for key, value in zip(images, row, strict=True):
                images[key].append(value)
            for text in (f"a person wearing a {name} coat", f"someone dressed all in {name}"):
                values = (len(captions["text"]), image_id, 1000 + pid, split, text)
                for key, value in zip(captions, values, strict=True):
                    captions[key].append(value)
    n = len(images["image_id"])
    image_table = pa.table(
        {**images, "height": pa.array([64] * n, pa.int32()), "width": pa.array([32] * n, pa.int32())}
    )
    pq.write_table(image_table, out / "images.parquet")
    pq.write_table(pa.table(captions), out / "captions.parquet")
    (out / "manifest.json").write_text(json.dumps({"dataset": dataset, "format": "cuhk-pedes"}))
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only tiny DATA folder."""
    return write_tiny_data(tmp_path_factory.mktemp("tiny") / "data")


TinyConfig = Callable[..., Any]


@pytest.fixture(scope="session")
def tiny_config() -> TinyConfig:
    """`tiny_config(out, **changes) -> TrainConfig`: the tiny model, 2 epochs, batch 4, checkpoints in `out`."""
    from tasks.train.config import TrainConfig

    def make(out: Path, **changes: Any) -> TrainConfig:
        settings: dict[str, Any] = {
            "variant": "global", "model": TINY_MODEL, "epochs": 2, "batch_size": 4, "device": "cpu",
            "eval_query_block": 5, "eval_gallery_block": 4, "output_dir": out, "warmup_epochs": 0.5,
        }  # fmt: skip
        return TrainConfig.model_validate(settings | changes)

    return make
