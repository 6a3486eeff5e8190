"""`EmbeddingStore` checks EMB's arrays against each other and embed.json when it opens the folder: a
damaged or mixed EMB is one TbprError naming the file, never an IndexError in a scorer."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tasks.core.errors import TbprError
from tasks.embed import layout
from tasks.embed.store import EmbeddingStore


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        (layout.TEXT_MASK, lambda a: a[: len(a) // 2]),  # fewer rows than captions
        (layout.TEXT_LOCAL, lambda a: a[:, : a.shape[1] // 2]),  # another dim than the globals
        (layout.TEXT_LOCAL, lambda a: a[: len(a) // 2]),  # fewer words than the mask places
        (layout.IMAGE_LOCAL, lambda a: a[:, :1]),  # fewer regions than embed.json records
        (layout.TEXT_MASK, lambda a: a.astype(np.float32)),  # not a mask
    ],
)
def test_arrays_that_disagree_are_one_error_naming_the_file(
    name: str, damage: Callable[[np.ndarray], np.ndarray], tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    emb = shutil.copytree(tiny_emb("cross_scan"), tmp_path / "emb")
    EmbeddingStore(emb)  # intact: opens
    np.save(emb / name, damage(np.load(emb / name)))
    with pytest.raises(TbprError, match=name):
        EmbeddingStore(emb)
