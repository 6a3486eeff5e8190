"""Shared fixtures: a tiny `tbpr synth` source and that source prepared, plus hand-built sources.

`synth_source` and `prepared_data` are session-scoped: build them once, treat them as read-only.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
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
    synth = pytest.importorskip("tasks.synth")
    if not hasattr(synth, "generate"):
        pytest.skip("tasks.synth.generate is not there yet")
    out = tmp_path_factory.mktemp("synth") / "source"
    synth.generate(out, identities=SYNTH_IDENTITIES, seed=SYNTH_SEED)
    return out


@pytest.fixture(scope="session")
def prepared_data(synth_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`synth_source` prepared by `prepare_dataset`: the DATA folder (images/captions/quarantine Parquet)."""
    from tasks.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "data"
    prepare_dataset(synth_source, "cuhk-pedes", out, progress=False)
    return out
