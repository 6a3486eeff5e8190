"""Every reader of DATA checks the data hash an EMB recorded: a cascade's two EMBs embedded from DATA
re-prepared in between (same ids and captions, other pixels), and the external re-ranker on an EMB
whose DATA was re-prepared since, are TbprErrors naming both hashes."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.core.errors import TbprError
from tasks.data.check import content_hash
from tasks.embed.encode import embed_split
from tasks.embed.layout import EmbedInfo
from tasks.score.cascade import align
from tasks.score.external import gallery_images
from tests.data.test_content_hash import swap_first_images

Checkpoint = Callable[[str], Path]


@pytest.fixture(scope="module")
def reprepared(
    tiny_data: Path, tiny_checkpoint: Checkpoint, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, Path]:
    """(DATA, EMB of cross_scan before DATA was re-prepared, EMB of global after)."""
    root = tmp_path_factory.mktemp("reprepared")
    data = shutil.copytree(tiny_data, root / "data")
    before = embed_split(
        data, tiny_checkpoint("cross_scan"), root / "before", batch_size=8, indexes=("flat",)
    )
    swap_first_images(data)
    after = embed_split(data, tiny_checkpoint("global"), root / "after", batch_size=8, indexes=("flat",))
    return data, before.out, after.out


def test_a_cascade_over_two_embeds_of_different_data_is_refused_naming_both_hashes(
    reprepared: tuple[Path, Path, Path],
) -> None:
    _, before, after = reprepared
    old, new = EmbedInfo.read(before).data_hash, EmbedInfo.read(after).data_hash
    assert old and new and old != new
    with pytest.raises(TbprError, match="embedded from different DATA") as error:
        align(before, after)
    assert old in str(error.value) and new in str(error.value) and str(after) in str(error.value)
    align(after, after)  # the same DATA: aligned


def test_the_reranker_refuses_data_re_prepared_since_the_embed(reprepared: tuple[Path, Path, Path]) -> None:
    data, before, after = reprepared
    with pytest.raises(TbprError, match="changed since these embeddings were made") as error:
        gallery_images(before, data)
    assert EmbedInfo.read(before).data_hash in str(error.value) and content_hash(data) in str(error.value)
    assert len(gallery_images(after, data)) == EmbedInfo.read(after).num_images


def test_an_older_embed_json_with_the_sources_hash_still_opens_its_unchanged_data(
    tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    """Before DATA's own hash, embed.json recorded the manifest's (the source's): still accepted;
    any other recorded hash is DATA changed."""
    import dataclasses
    import json

    emb = shutil.copytree(tiny_emb("global"), tmp_path / "emb")
    info = EmbedInfo.read(emb)
    data = shutil.copytree(info.data_dir, tmp_path / "data")
    manifest = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps({**manifest, "content_hash": "sha256:" + "cd" * 32}))
    older = dataclasses.replace(info, data_dir=str(data), data_hash="sha256:" + "cd" * 32)
    assert older.data_folder() == data
    with pytest.raises(TbprError, match="changed since"):
        dataclasses.replace(older, data_hash="sha256:" + "ef" * 32).data_folder()
