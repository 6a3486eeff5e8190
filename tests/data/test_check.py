"""DATA is checked when opened (`tasks.data.check` through `load_prepared`): a wrong column type, a
manifest of the wrong shape, or files that contradict each other are one TbprError naming the file and
the column or row."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tasks.core.errors import TbprError
from tasks.data.check import check_tables
from tasks.data.reader import load_prepared


def _edit(path: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def _set(table: pa.Table, column: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, values)


def _shift(table: pa.Table, column: str, row: int, by: int) -> pa.Table:
    values = table[column].to_numpy().copy()
    values[row] += by
    return _set(table, column, pa.array(values, pa.int64()))


DAMAGE: dict[str, tuple[str, Callable[[pa.Table], pa.Table] | str, list[str]]] = {
    "text-of-integers": (
        "captions.parquet",
        lambda t: _set(t, "text", pa.array(range(t.num_rows), pa.int64())),
        ["captions.parquet", "'text'", "int64", "string"],
    ),
    "ids-as-strings": (
        "images.parquet",
        lambda t: _set(t, "image_id", pc.cast(t["image_id"], pa.string())),
        ["images.parquet", "'image_id'"],
    ),
    "missing-column": ("images.parquet", lambda t: t.drop_columns(["height"]), ["'height'"]),
    "null-text": (
        "captions.parquet",
        lambda t: _set(t, "text", pa.array([None, *t["text"].to_pylist()[1:]], pa.string())),
        ["'text'", "null", "row 0"],
    ),
    "person-differs": ("captions.parquet", lambda t: _shift(t, "person_id", 3, 7), ["row 3", "person_id"]),
    "orphan-caption": ("captions.parquet", lambda t: _shift(t, "image_id", 2, 10**6), ["row 2", "lacks"]),
    "split-differs": (
        "captions.parquet",
        lambda t: _set(t, "split", pa.array(["val", *t["split"].to_pylist()[1:]])),
        ["row 0", "split"],
    ),
    "unknown-split": (
        "images.parquet",
        lambda t: _set(t, "split", pa.array(["dev", *t["split"].to_pylist()[1:]])),
        ["row 0", "'dev'"],
    ),
    "duplicate-caption-id": (
        "captions.parquet",
        lambda t: _shift(t, "caption_id", 1, -1),
        ["caption_id", "unique"],
    ),
    "manifest-a-list": ("manifest.json", "[1, 2]", ["manifest.json", "list", "object"]),
    "manifest-dataset-a-number": ("manifest.json", '{"dataset": 5}', ["manifest.json", "'dataset'"]),
    "manifest-source-a-string": (
        "manifest.json",
        '{"dataset": "x", "source": "here"}',
        ["manifest.json", "'source'"],
    ),
    "quarantine-wrong-type": (
        "quarantine.parquet",
        "quarantine",
        ["quarantine.parquet", "'record_index'"],
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_data_is_one_clear_error(case: str, tiny_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    name, change, words = DAMAGE[case]
    if change == "quarantine":
        pq.write_table(pa.table({"record_index": ["a"], "source": ["{}"], "reason": ["x"]}), data / name)
    elif isinstance(change, str):
        (data / name).write_text(change)
    else:
        _edit(data / name, change)
    with pytest.raises(TbprError) as error:
        load_prepared(data, splits=("test",))
    message = str(error.value)
    assert "\n" not in message and "tbpr prepare" in message, message
    for word in words:
        assert word in message, message


def test_good_data_loads_and_an_identity_in_two_splits_is_a_warning(
    tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert load_prepared(tiny_data, splits=("test",)).splits["test"].caption_ids.size
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    image_ids = pq.read_table(data / "images.parquet")["image_id"].to_pylist()
    moved = image_ids[:1]  # one image of the first person moves to train, with its captions

    def to_train(table: pa.Table) -> pa.Table:
        splits = [
            "train" if i in moved else s
            for i, s in zip(table["image_id"].to_pylist(), table["split"].to_pylist(), strict=True)
        ]
        return _set(table, "split", pa.array(splits))

    _edit(data / "images.parquet", to_train)
    _edit(data / "captions.parquet", to_train)
    with caplog.at_level(logging.WARNING):
        load_prepared(data, splits=("test",))
    assert "more than one split" in caplog.text


def test_the_check_is_fast_on_80k_captions() -> None:
    rng = np.random.default_rng(0)
    images = pa.table(
        {
            "image_id": np.arange(40_000),
            "person_id": np.arange(40_000) // 4,
            "split": np.where(np.arange(40_000) < 30_000, "train", "test"),
        }
    )
    rows = rng.permutation(np.repeat(np.arange(40_000), 2))
    captions = pa.table(
        {
            "caption_id": np.arange(80_000),
            "image_id": rows,
            "person_id": rows // 4,
            "split": np.where(rows < 30_000, "train", "test"),
        }
    )
    start = time.perf_counter()
    check_tables(Path("DATA"), images, captions)
    assert time.perf_counter() - start < 1.0


def test_a_manifest_is_read_once_with_its_shape_checked(tiny_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "manifest.json").write_text(json.dumps({"format": "cuhk-pedes"}))
    assert load_prepared(data, splits=("test",)).dataset == "cuhk-pedes"
