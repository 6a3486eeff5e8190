"""A pipeline run's EMB retention: each variant's best val seed stays, the others go, nothing else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.core.errors import TbprError
from tasks.embed.layout import EMBED_JSON
from tasks.embed.retention import best_val_models, remove_embs


def test_the_best_val_seed_of_each_variant_is_kept_the_first_on_ties() -> None:
    models = {
        "global-seed0": ("global", 12.0),
        "global-seed1": ("global", 14.5),
        "global-seed2": ("global", 14.5),  # a tie: the earlier seed stays
        "spatial-seed0": ("spatial", 9.0),
        "spatial-seed1": ("spatial", 8.0),
        "gpo-seed3": ("gpo", 1.0),  # a variant with one seed keeps it
    }
    assert best_val_models(models) == {"global-seed1", "spatial-seed0", "gpo-seed3"}


def _emb(folder: Path, payload: int) -> Path:
    folder.mkdir(parents=True)
    (folder / EMBED_JSON).write_text("{}")
    (folder / "image_local.npy").write_bytes(b"x" * payload)
    (folder / "shards").mkdir()
    (folder / "shards" / "index_flat_0-4.faiss").write_bytes(b"y" * 7)
    return folder


def _du(folder: Path) -> int:
    return sum(os.path.getsize(Path(root) / n) for root, _, names in os.walk(folder) for n in names)


def test_only_the_others_are_removed_and_their_bytes_counted(tmp_path: Path) -> None:
    embs = {
        name: _emb(tmp_path / name, size)
        for name, size in (("a-seed0", 100), ("a-seed1", 30), ("b-seed0", 5))
    }
    expected = _du(embs["a-seed0"]) + _du(embs["b-seed0"])
    removed = remove_embs(embs, keep={"a-seed1"})
    assert sorted(removed.folders) == sorted([embs["a-seed0"], embs["b-seed0"]])
    assert removed.bytes == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-seed1"]
    assert (embs["a-seed1"] / "image_local.npy").read_bytes() == b"x" * 30
    again = remove_embs(embs, keep={"a-seed1"})  # already gone: nothing to do
    assert again.folders == () and again.bytes == 0


def test_a_folder_that_is_not_an_emb_stops_it_before_anything_is_removed(tmp_path: Path) -> None:
    emb = _emb(tmp_path / "a-seed0", 10)
    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "mine.txt").write_text("keep me")
    with pytest.raises(TbprError, match="not an EMB folder"):
        remove_embs({"a-seed0": emb, "b-seed0": stranger}, keep=set())
    assert (emb / EMBED_JSON).is_file() and (stranger / "mine.txt").read_text() == "keep me"
