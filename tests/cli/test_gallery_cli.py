"""`tbpr embed --images FOLDER`, its re-embed and `tbpr search` on the result, through the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tests.cli.conftest import Tbpr, TbprIO
from tests.embed.folder_images import BAD, GOOD, save, write_image_folder


def test_embed_an_image_folder_then_only_the_changes_then_search(
    tbpr_io: TbprIO, tiny_checkpoint: Callable[[str], Path], tmp_path: Path
) -> None:
    images, emb = write_image_folder(tmp_path / "images"), tmp_path / "emb"
    run = str(tiny_checkpoint("cross_scan"))
    code, out, err = tbpr_io(["embed", "--images", str(images), "--out", str(emb), "--run", run])
    assert code == 0, err
    assert f"│ {len(GOOD) + len(BAD)} │ 0 │ 0 │ 0 │ {len(BAD)} │ {len(GOOD)} │ {len(GOOD)} │" in _squeezed(
        out
    )
    assert "bad/bomb.png" in out and "decompression bomb" in out
    save(images, "new/g.png", "PNG", (50, 100), "pink")
    (images / "f.png").unlink()
    code, out, err = tbpr_io(["embed", "--images", str(images), "--out", str(emb), "--run", run])
    assert code == 0, err
    # added 1, changed 0, removed 1, unchanged 10, quarantined 5, encoded 1
    assert f"│ 1 │ 0 │ 1 │ {len(GOOD) + len(BAD) - 1} │ {len(BAD)} │ 1 │ {len(GOOD)} │" in _squeezed(out)
    code, out, err = tbpr_io(["search", str(emb), "a person in a pink coat", "--top-k", "3"])
    assert code == 0, err
    assert "┃ rank ┃ path ┃ score ┃" in _squeezed(out) and "person_id" not in out
    assert sum(f"│ {rank} │" in _squeezed(out) for rank in (1, 2, 3)) == 3
    with Image.open(emb / "search.png") as sheet:
        assert sheet.size == (5 * 96, 192 + 30)


def test_embed_without_a_model_or_a_source_is_an_error(
    tbpr: Tbpr, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TBPR_HOME", str(tmp_path / "home"))  # no MLflow store: no champion
    images = write_image_folder(tmp_path / "images")
    code, err = tbpr(["embed", "--out", str(tmp_path / "emb")])
    assert code == 2 and "pass either a DATA folder or --images" in err
    code, err = tbpr(["embed", "--images", str(images), "--out", str(tmp_path / "emb")])
    assert code == 2 and "no champion model is registered" in err and "--run" in err
    assert not (tmp_path / "home").exists()  # not created to find out
    code, err = tbpr(["embed", "--images", str(images), "--out", str(images / "emb"), "--run", "x"])
    assert code == 2 and "overlaps the image folder" in err


def _squeezed(text: str) -> str:
    """Table rows with runs of spaces collapsed, for matching cells."""
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def test_serve_refuses_a_missing_emb_and_a_bad_port(tbpr: Tbpr, tmp_path: Path) -> None:
    code, err = tbpr(["serve", str(tmp_path / "none")])
    assert code == 2 and "no embeddings folder at" in err and "--images FOLDER" in err
    code, err = tbpr(["serve", str(tmp_path / "none"), "--port", "70000"])
    assert code == 2 and "less than or equal to 65535" in err
