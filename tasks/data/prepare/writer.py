"""Atomic, streaming Parquet writers for the DATA/ contract (DESIGN.md, "Parquet contracts").

Every output is written to a temporary file in its final folder and renamed over the target only
when all outputs are complete, so an interrupted prepare never leaves a half-written file.
`images.parquet` is written in row groups, so at most one group of image bytes is held in memory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.files import commit, remove_stale_temps, temp_path
from tasks.data.layout import IMAGES_SCHEMA

ROW_GROUP_ROWS = 512
ROW_GROUP_BYTES = 64 * 2**20  # flush earlier when the images are large


@dataclass(frozen=True)
class ImageRow:
    image_id: int
    person_id: int
    split: str
    file_path: str
    image: bytes
    height: int
    width: int


@dataclass(frozen=True)
class CaptionRow:
    caption_id: int
    image_id: int
    person_id: int
    split: str
    text: str


@dataclass(frozen=True)
class QuarantineRow:
    record_index: int
    source: str
    reason: str


def rows_table(rows: Sequence[Any], schema: pa.Schema) -> pa.Table:
    """Dataclass rows whose field names are the schema's columns, as an Arrow table (no deep copies)."""
    columns = [pa.array([getattr(row, f.name) for row in rows], type=f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


class AtomicOutputs:
    """Temporary files beside their targets; `commit()` renames them all, else they are removed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._staged: dict[Path, Path] = {}  # final path -> temporary path

    def stage(self, name: str) -> Path:
        """A fresh temporary path in the folder for the output `name` (temporaries of an earlier,
        killed run are removed first: a SIGKILL leaves no chance to clean up)."""
        remove_stale_temps(self.folder / name)
        tmp = temp_path(self.folder / name)  # a plain new name: the file gets the usual umask
        self._staged[self.folder / name] = tmp
        return tmp

    def commit(self) -> None:
        for final, tmp in self._staged.items():
            commit(tmp, final)
        self._staged.clear()

    def __enter__(self) -> AtomicOutputs:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for tmp in self._staged.values():
            tmp.unlink(missing_ok=True)
        self._staged.clear()


class ImageWriter:
    """Streams `ImageRow`s into a Parquet file, one row group per `ROW_GROUP_ROWS` or `ROW_GROUP_BYTES`."""

    def __init__(self, path: Path) -> None:
        others = [name for name in IMAGES_SCHEMA.names if name != "image"]
        # Image bytes are already compressed: no dictionary, compression or min/max statistics for them.
        self._writer = pq.ParquetWriter(
            path,
            IMAGES_SCHEMA,
            compression={name: ("NONE" if name == "image" else "ZSTD") for name in IMAGES_SCHEMA.names},
            use_dictionary=others,
            write_statistics=others,
        )
        self._rows: list[ImageRow] = []
        self._bytes = 0
        self.rows_written = 0

    def add(self, row: ImageRow) -> None:
        self._rows.append(row)
        self._bytes += len(row.image)
        if len(self._rows) >= ROW_GROUP_ROWS or self._bytes >= ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            self._writer.write_table(rows_table(self._rows, IMAGES_SCHEMA))
            self.rows_written += len(self._rows)
            self._rows, self._bytes = [], 0

    def close(self) -> None:
        self.flush()
        self._writer.close()


def write_rows(path: Path, rows: Sequence[Any], schema: pa.Schema) -> None:
    """Write dataclass rows whose fields follow `schema` to one Parquet file."""
    pq.write_table(rows_table(rows, schema), path, compression="ZSTD")


def write_json(outputs: AtomicOutputs, name: str, payload: dict[str, Any]) -> None:
    """Stage a JSON file (UTF-8, indented, trailing newline) for the next commit."""
    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    outputs.stage(name).write_text(text, encoding="utf-8")
