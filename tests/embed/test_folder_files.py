"""Hostile entries of an image folder: only regular image files are opened, by bounded reads after the
name and `lstat` checks; links to folders and folders that cannot be listed are quarantined with a
reason, never skipped; features are reused only at the same precision and device."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.embed import layout
from tasks.embed.files import FolderFile, read_file, scan_folder
from tasks.embed.folder import embed_folder
from tasks.embed.store import read_embeddings
from tests.embed.folder_images import save

Checkpoint = Callable[[str], Path]


def _read_within(folder: Path, path: Path, seconds: float = 10.0, **kwargs: int) -> tuple[FolderFile, object]:
    """`read_file` in a thread: a read that blocks (a FIFO) fails the test instead of hanging it."""
    result: list[tuple[FolderFile, object]] = []
    thread = threading.Thread(target=lambda: result.append(read_file(folder, path, **kwargs)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"read_file({path}) still running after {seconds} s"
    return result[0]


def test_a_fifo_named_like_an_image_is_quarantined_without_being_opened(tmp_path: Path) -> None:
    (tmp_path / "cam1").mkdir()
    os.mkfifo(tmp_path / "cam1" / "stream.jpg")  # opening it for reading would block until a writer comes
    record, reason = _read_within(tmp_path, tmp_path / "cam1" / "stream.jpg")
    assert record.path == "cam1/stream.jpg" and record.sha256 == ""
    assert isinstance(reason, str) and reason.startswith("not a regular file (a FIFO")


def test_non_image_and_oversized_files_are_judged_before_any_read(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    with open(video, "wb") as handle:  # sparse: 64 MiB on paper, nothing on disk
        handle.truncate(64 * 2**20)
    record, reason = _read_within(tmp_path, video)
    assert record.sha256 == "" and record.size == 64 * 2**20  # never read: no hash of its bytes
    assert isinstance(reason, str) and reason.startswith("not an image file type (.mp4")
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(2000))
    record, reason = _read_within(tmp_path, big, max_bytes=1000)
    assert record.sha256 == "" and reason == "file too large (2,004 bytes > 1,000)"
    record, data = _read_within(tmp_path, big, max_bytes=4096)
    assert data == big.read_bytes() and record.size == 2004 and len(record.sha256) == 64


def _linked_and_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An image folder with `cam1/a.png`, `cam5` a link to a folder of images elsewhere, and `locked/`
    that `os.scandir` refuses (what a folder without r-x gives a user; the tests may run as root)."""
    folder, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    save(elsewhere, "x.png", "PNG", (20, 40), "red")
    save(folder, "cam1/a.png", "PNG", (20, 40), "blue")
    save(folder, "locked/b.png", "PNG", (20, 40), "green")
    (folder / "cam5").symlink_to(elsewhere, target_is_directory=True)
    scandir = os.scandir

    def refuse_locked(path: os.PathLike[str] | str = ".") -> object:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    return folder


def test_a_link_to_a_folder_and_an_unlisted_folder_are_entries_not_silence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _linked_and_locked(tmp_path, monkeypatch)
    scan = scan_folder(folder)
    assert [p.relative_to(folder).as_posix() for p in scan.entries] == ["cam1/a.png", "cam5"]
    assert [(p.name, why.split(":")[0]) for p, why in scan.unlisted] == [
        ("locked", "unreadable folder (Permission denied)")
    ]
    record, reason = read_file(folder, folder / "cam5")
    assert record.path == "cam5" and isinstance(reason, str) and reason.startswith("symbolic link")


def test_embed_lists_a_linked_and_an_unlisted_folder_in_the_quarantine(
    tmp_path: Path, tiny_checkpoint: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _linked_and_locked(tmp_path, monkeypatch)
    os.mkfifo(folder / "cam1" / "stream.jpg")
    summary = embed_folder(folder, tiny_checkpoint("global"), tmp_path / "emb", batch_size=4)
    quarantine = {
        r["path"]: r["reason"] for r in pq.read_table(tmp_path / "emb" / layout.FOLDER_QUARANTINE).to_pylist()
    }
    assert sorted(quarantine) == ["cam1/stream.jpg", "cam5", "locked/"]
    assert quarantine["cam5"].startswith("symbolic link") and quarantine["locked/"].startswith(
        "unreadable folder"
    )
    assert summary.counts["quarantined"] == 3 and summary.info.num_images == 1


def test_features_are_reused_only_at_the_same_precision(tmp_path: Path, tiny_checkpoint: Checkpoint) -> None:
    folder = tmp_path / "images"
    for i, colour in enumerate(("red", "blue", "green")):
        save(folder, f"p{i}.png", "PNG", (24, 48), colour)
    checkpoint = tiny_checkpoint("global")
    embed_folder(folder, checkpoint, tmp_path / "emb", batch_size=4, precision="fp32")
    save(folder, "p3.png", "PNG", (24, 48), "white")
    again = embed_folder(folder, checkpoint, tmp_path / "emb", batch_size=4, precision="bf16")
    assert again.counts["encoded"] == 4 and "precision fp32 -> bf16" in again.reembedded
    embed_folder(folder, checkpoint, tmp_path / "fresh", batch_size=4, precision="bf16")
    np.testing.assert_array_equal(
        read_embeddings(tmp_path / "emb" / layout.GALLERY),
        read_embeddings(tmp_path / "fresh" / layout.GALLERY),
    )
    same = embed_folder(folder, checkpoint, tmp_path / "emb", batch_size=4, precision="bf16")
    assert same.counts["encoded"] == 0 and same.reembedded == ""  # same precision and device: reused
