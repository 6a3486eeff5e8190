"""Atomic file writes, the one implementation: write a temporary file beside the target, flush it to
disk, rename it over the target. Readers see the old file or the new one, never half of one."""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
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


def replace_dir(new: Path, target: Path) -> None:
    """Put the finished folder `new` at `target`, replacing what was there (renames on one file system)."""
    if target.exists():
        old = temp_path(target)
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove the temporaries `temp_path(target)` left beside `target` by processes no longer running
    (an interrupted earlier run); the removed paths."""
    removed = []
    for path in target.parent.glob(f".{glob.escape(target.name)}.*.tmp") if target.parent.is_dir() else []:
        pid = path.name[len(target.name) + 2 :].split(".")[0]
        if pid.isdigit() and not _running(int(pid)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _leaves(kind: pa.DataType, path: str) -> Iterator[tuple[str, pa.DataType]]:
    """Each leaf column under `kind` as Parquet names it (`embedding.list.element`) and its type."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        yield from _leaves(kind.value_type, f"{path}.list.element")
    elif pa.types.is_struct(kind):
        for child in kind:
            yield from _leaves(child.type, f"{path}.{child.name}")
    else:
        yield path, kind


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """`pq.write_table` options for tables of ids and float vectors. Float columns are byte-stream split
    (each value's bytes grouped by significance, which ZSTD then compresses) and never dictionary-encoded:
    floats rarely repeat, and the attempt left embeddings at 1.5x their raw size. Lossless."""
    leaves = [leaf for field in schema for leaf in _leaves(field.type, field.name)]
    floats = [path for path, kind in leaves if pa.types.is_floating(kind)]
    return {
        "compression": "zstd",
        "use_dictionary": [path for path, kind in leaves if not pa.types.is_floating(kind)],
        "use_byte_stream_split": floats or False,
    }


def write_parquet_atomic(table: pa.Table, path: Path) -> Path:
    """`table` to `path` atomically, encoded by `parquet_options`."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **parquet_options(table.schema))
    return path
