"""`EmbedInfo` names the folder it records by kind: `data_dir` (a split's DATA) or `image_folder`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.embed.layout import EMBED_JSON, SOURCE_FOLDER, EmbedInfo


def test_a_split_emb_records_its_data_dir_and_no_image_folder(
    tiny_emb: Callable[[str], Path], tiny_data: Path
) -> None:
    info = EmbedInfo.read(tiny_emb("global"))
    raw = json.loads((tiny_emb("global") / EMBED_JSON).read_text())
    assert "data" not in raw and raw["data_dir"] == str(tiny_data.resolve()) and raw["image_folder"] == ""
    assert info.image_source == tiny_data.resolve() == info.data_folder()


@pytest.mark.parametrize("source", ["split", SOURCE_FOLDER])
def test_an_older_embed_json_with_data_is_read_into_the_field_its_source_names(
    source: str, tiny_emb: Callable[[str], Path], tmp_path: Path
) -> None:
    raw = json.loads((tiny_emb("global") / EMBED_JSON).read_text())
    for key in ("data_dir", "image_folder"):
        del raw[key]
    (tmp_path / EMBED_JSON).write_text(json.dumps({**raw, "data": "/somewhere/old", "source": source}))
    info = EmbedInfo.read(tmp_path)
    want = ("", "/somewhere/old") if source == SOURCE_FOLDER else ("/somewhere/old", "")
    assert (info.data_dir, info.image_folder) == want
    assert info.image_source == Path("/somewhere/old")
