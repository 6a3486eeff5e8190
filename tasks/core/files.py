"""Atomic file writes, the one implementation: write a temporary file beside the target, flush it to
disk, rename it over the target. Readers see the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def temp_path(target: Path) -> Path:
    """A new hidden name beside `target` (same folder, so the rename is atomic); not created."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def commit(tmp: Path, target: Path) -> None:
    """Flush `tmp` to disk and rename it onto `target`."""
    if tmp.is_file():
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
    os.replace(tmp, target)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """`with atomic_path(target) as tmp: write(tmp)`: renamed onto `target` on success, removed on error."""
    tmp = temp_path(target)
    try:
        yield tmp
        commit(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json_atomic(path: Path, document: Any, **dumps: Any) -> Path:
    """`document` as JSON (`dumps` passes json.dumps options, e.g. indent=2, sort_keys=True)."""
    return write_text_atomic(path, json.dumps(document, **dumps))


def write_parquet_atomic(table: pa.Table, path: Path) -> Path:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path
