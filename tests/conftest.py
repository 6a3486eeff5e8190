"""Shared fixtures: a tiny `tbpr synth` source and that source prepared, hand-built sources, and a
tiny DATA (pyarrow) with tiny random checkpoints and their EMB folders (embed, score, cli tests).

All are session-scoped (cached by variant): build them once, treat them as read-only.
`tests/train/conftest.py` overrides `tiny_data` and `tiny_config` with a learnable dataset.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

SYNTH_IDENTITIES = 16
SYNTH_SEED = 0

PngFactory = Callable[..., bytes]
SourceWriter = Callable[..., Path]


def png_bytes(seed: int = 0, size: tuple[int, int] = (32, 80)) -> bytes:
    """A small random RGB PNG (width x height = `size`), distinct per seed."""
    rng = random.Random(seed)
    pixels = bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def make_png() -> PngFactory:
    """`make_png(seed=0, size=(32, 80)) -> bytes`: a small random PNG."""
    return png_bytes


def write_source_layout(
    root: Path, records: list[Any], images: dict[str, bytes], annotation: str = "reid_raw.json"
) -> Path:
    """A dataset folder: `annotation` holding `records` as JSON, and `images` (relative path -> bytes) under imgs/."""
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    for rel, data in images.items():
        path = root / "imgs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / annotation).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def write_source() -> SourceWriter:
    """`write_source(root, records, images, annotation="reid_raw.json") -> root`."""
    return write_source_layout


@pytest.fixture(scope="session")
def synth_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tbpr synth` output (CUHK-PEDES layout, `reid_raw.json`) of 16 identities."""
    synth = pytest.importorskip("tasks.data.synth")
    if not hasattr(synth, "generate"):
        pytest.skip("tasks.data.synth.generate is not there yet")
    out = tmp_path_factory.mktemp("synth") / "source"
    synth.generate(out, identities=SYNTH_IDENTITIES, seed=SYNTH_SEED)
    return out


@pytest.fixture(scope="session")
def prepared_data(synth_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`synth_source` prepared by `prepare_dataset`: the DATA folder (images/captions/quarantine Parquet)."""
    from tasks.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "data"
    prepare_dataset(synth_source, "cuhk-pedes", out, progress=False)
    return out


PERSONS = 8
IMAGES_PER_PERSON = 2
CAPTIONS_PER_IMAGE = 2
COLOURS = ("red", "blue", "green", "black", "white", "grey", "yellow", "brown")
GARMENTS = ("jacket", "coat", "shirt", "dress", "sweater", "hoodie")


def write_tiny_data(root: Path, seed: int = 0) -> Path:
    """DATA/{images,captions}.parquet + manifest.json: PERSONS identities, all in the test split."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    images: dict[str, list[object]] = {
        k: [] for k in ("image_id", "person_id", "split", "file_path", "image")
    }
    captions: dict[str, list[object]] = {
        k: [] for k in ("caption_id", "image_id", "person_id", "split", "text")
    }
    for person in range(PERSONS):
        for view in range(IMAGES_PER_PERSON):
            image_id = 100 + person * IMAGES_PER_PERSON + view
            for key, value in zip(
                images,
                (image_id, 1000 + person, "test", f"p{person}/v{view}.png", png_bytes(image_id, (16, 40))),
                strict=True,
            ):
                images[key].append(value)
            for index in range(CAPTIONS_PER_IMAGE):
                text = f"a person in a {rng.choice(COLOURS)} {rng.choice(GARMENTS)} with {rng.choice(COLOURS)} shoes"
                caption = (5000 + image_id * 10 + index, image_id, 1000 + person, "test", text)
                for key, value in zip(captions, caption, strict=True):
                    captions[key].append(value)
    sizes = {"height": [40] * len(images["image_id"]), "width": [16] * len(images["image_id"])}
    pq.write_table(
        pa.table(
            {
                **images,
                "height": pa.array(sizes["height"], pa.int32()),
                "width": pa.array(sizes["width"], pa.int32()),
            }
        ),
        root / "images.parquet",
    )
    pq.write_table(pa.table(captions), root / "captions.parquet")
    (root / "manifest.json").write_text(json.dumps({"dataset": "tiny", "splits": {}}))
    return root


def tiny_config(variant: str) -> object:
    from tbpr_models import ImageEncoderConfig, ModelConfig, TextEncoderConfig, variant_config

    return ModelConfig(
        variant=variant_config(variant),
        image=ImageEncoderConfig(kind="resnet_small", height=32, width=16, widths=(8, 16)),
        text=TextEncoderConfig(kind="small", max_length=16, hidden=16, layers=1, heads=2),
        embed_dim=16,
    )


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("scoring") / "data")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`tiny_checkpoint(variant) -> checkpoint folder` of a random tiny model (seeded, cached)."""
    from tbpr_models import build_model, save_checkpoint

    cache: dict[str, Path] = {}

    def make(variant: str) -> Path:
        if variant not in cache:
            torch.manual_seed(0)
            model = build_model(tiny_config(variant), load_pretrained=False).eval()  # type: ignore[arg-type]
            cache[variant] = save_checkpoint(model, tmp_path_factory.mktemp(f"ckpt-{variant}"))
        return cache[variant]

    return make


@pytest.fixture(scope="session")
def tiny_emb(
    tiny_data: Path, tiny_checkpoint: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """`tiny_emb(variant) -> EMB folder` of `tiny_data`'s test split embedded with that checkpoint."""
    from tasks.embed.encode import embed_split

    cache: dict[str, Path] = {}

    def make(variant: str) -> Path:
        if variant not in cache:
            out = tmp_path_factory.mktemp(f"emb-{variant}") / "emb"
            embed_split(tiny_data, tiny_checkpoint(variant), out, batch_size=5, model_ref=f"tiny-{variant}")
            cache[variant] = out
        return cache[variant]

    return make


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(SQLite tracking URI, artifact root URI) shared by the session: creating the schema takes seconds."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP folder (2 layers per tower, width 32, patch 8, projection 16; model and
    tokenizer written by `save_pretrained`); treat it as read-only."""
    from tbpr_models.encoders.hf import save_random_clip

    return save_random_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="session")
def clip_model(tiny_clip: Path) -> dict[str, Any]:
    """`TrainConfig.model` settings for both towers of `tiny_clip`, images 64 x 32 (8 x 4 patches),
    embed_dim = CLIP's projection dim (the projections start from CLIP's). Copy before changing."""
    return {
        "embed_dim": 16,
        "image": {"kind": "clip", "path": str(tiny_clip), "height": 64, "width": 32},
        "text": {"kind": "clip", "path": str(tiny_clip), "max_length": 24, "freeze_layers": 0},
    }
