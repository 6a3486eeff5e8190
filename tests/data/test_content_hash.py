"""`content_hash`: DATA's own Parquet bytes, not the source's recorded hash, so DATA re-prepared or
edited after `prepare` hashes differently; computed once per process for unchanged files, and an
in-place edit that keeps size and mtime is still seen."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.data import check
from tasks.data.check import HASH_MEMO, content_hash


def _independent(data: Path) -> str:
    return (
        "sha256:"
        + hashlib.sha256(
            (data / "images.parquet").read_bytes() + (data / "captions.parquet").read_bytes()
        ).hexdigest()
    )


def swap_first_images(data: Path) -> None:
    """Re-prepared DATA: the same ids, captions and manifest, the first two images' pixels swapped."""
    images = pq.read_table(data / "images.parquet")
    pixels = images.column("image").to_pylist()
    pixels[0], pixels[1] = pixels[1], pixels[0]
    column = images.schema.get_field_index("image")
    pq.write_table(
        images.set_column(column, images.schema.field(column), pa.array(pixels, pa.binary())),
        data / "images.parquet",
    )


def test_the_hash_is_of_datas_own_parquet_and_sees_an_edit_after_prepare(
    tiny_data: Path, tmp_path: Path
) -> None:
    data = shutil.copytree(tiny_data, tmp_path / "data")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["content_hash"] = "sha256:" + "ab" * 32  # what prepare records: the source's identity
    (data / "manifest.json").write_text(json.dumps(manifest))
    before = content_hash(data)
    assert before == _independent(data) and before != manifest["content_hash"]
    swap_first_images(data)  # the manifest is untouched
    after = content_hash(data)
    assert after == _independent(data) and after != before


def test_an_in_place_edit_keeping_size_and_mtime_is_not_hidden_by_the_memo(
    tiny_data: Path, tmp_path: Path
) -> None:
    data = shutil.copytree(tiny_data, tmp_path / "data")
    before = content_hash(data)  # memoised now
    path = data / "captions.parquet"
    stat = path.stat()
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    with open(path, "r+b") as handle:  # same inode, same size
        handle.write(raw)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime set back: only ctime moved
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert content_hash(data) == _independent(data) != before


def test_the_memo_in_data_serves_a_new_process_only_for_the_same_files(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = shutil.copytree(tiny_data, tmp_path / "data")
    real = content_hash(data)
    memo = json.loads((data / HASH_MEMO).read_text())
    assert memo["hash"] == real == _independent(data)
    (data / HASH_MEMO).write_text(json.dumps({**memo, "hash": "sha256:remembered"}))
    monkeypatch.setattr(check, "_HASHES", {})  # a new process
    assert content_hash(data) == "sha256:remembered"  # the files are unchanged: not read again
    monkeypatch.setattr(check, "_HASHES", {})
    os.utime(data / "images.parquet")  # touched: another identity, hashed again
    assert content_hash(data) == real
