"""Atomic writes: readers see the old file or the new one; a failed write leaves no trace."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.files import atomic_path, write_json_atomic, write_parquet_atomic, write_text_atomic


def test_writes_replace_the_target_and_leave_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    target.write_text("old")
    write_json_atomic(target, {"a": [1, 2]}, sort_keys=True)
    assert json.loads(target.read_text()) == {"a": [1, 2]}
    table = pa.table({"x": [1, 2, 3]})
    write_parquet_atomic(table, tmp_path / "t.parquet")
    assert pq.read_table(tmp_path / "t.parquet").equals(table)
    write_text_atomic(tmp_path / "t.txt", "é\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "é\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.json", "t.parquet", "t.txt"]


def test_a_failing_writer_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_parquet_floats_are_byte_stream_split_lossless_and_smaller_than_the_default(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    rows, dim = 500, 64
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    table = pa.table(
        {
            "id": pa.array(np.arange(rows)),
            "text": [f"caption {i % 7}" for i in range(rows)],
            "score": pa.array(rng.random(rows)),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        }
    )
    write_parquet_atomic(table, tmp_path / "tuned.parquet")
    pq.write_table(table, tmp_path / "default.parquet")
    assert pq.read_table(tmp_path / "tuned.parquet").equals(table)
    meta = pq.ParquetFile(tmp_path / "tuned.parquet").metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert "BYTE_STREAM_SPLIT" in encodings["embedding.list.element"]
    assert "BYTE_STREAM_SPLIT" in encodings["score"]
    assert "BYTE_STREAM_SPLIT" not in encodings["id"]
    assert "RLE_DICTIONARY" in encodings["text"]
    assert (tmp_path / "tuned.parquet").stat().st_size < 0.9 * (tmp_path / "default.parquet").stat().st_size
