"""The one check of a DATA folder (`tasks.data.layout`) when it is opened: every Parquet file's schema
against the layout's Arrow schema, the manifest's shape, and the invariants across files (ids unique,
no nulls, splits known, each caption's image present with the same person and split). A violation is
a TbprError naming the file and the column or row; an identity in several splits is a warning.

Vectorised with pyarrow.compute and numpy: 80k captions check in milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.core.errors import TbprError
from tasks.core.files import write_json_atomic
from tasks.data.layout import (
    CAPTIONS,
    CAPTIONS_SCHEMA,
    IMAGES,
    IMAGES_SCHEMA,
    MANIFEST,
    QUARANTINE,
    QUARANTINE_SCHEMA,
    SPLITS,
)

log = logging.getLogger(__name__)
REDO = "re-run `tbpr prepare` (or `tbpr synth`) to rewrite DATA"
# manifest keys a reader uses, with the JSON type each must have when present
MANIFEST_TYPES: dict[str, type] = {
    "dataset": str,
    "format": str,
    "content_hash": str,
    "source": dict,
    "splits": dict,
    "quarantine": dict,
    "outputs": dict,
    "quality": dict,
}


def read_manifest(data: Path) -> dict[str, Any]:
    """DATA/manifest.json, checked: a JSON object naming its dataset, its known keys of the right type."""
    path = data / MANIFEST
    if not path.is_file():
        raise TbprError(f"{path} not found; run `tbpr prepare` (or `tbpr synth`) to create DATA")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TbprError(f"{path} is not valid JSON ({exc}); {REDO}") from exc
    if not isinstance(manifest, dict):
        raise TbprError(f"{path} holds a JSON {type(manifest).__name__}, not an object; {REDO}")
    for key, kind in MANIFEST_TYPES.items():
        if key in manifest and not isinstance(manifest[key], kind):
            raise TbprError(f"{path}: {key!r} is {manifest[key]!r}, not a JSON {_json_name(kind)}; {REDO}")
    if not (manifest.get("dataset") or manifest.get("format")):
        raise TbprError(f"{path} names no dataset; {REDO}")
    return manifest


def _json_name(kind: type) -> str:
    return "object" if kind is dict else "string"


def check_schema(path: Path, expected: pa.Schema) -> None:
    """Every column of `expected` is in the Parquet file at `path`, with its type."""
    if not path.is_file():
        raise TbprError(f"{path} not found; {REDO}")
    found = pq.read_schema(path)
    for field in expected:
        index = found.get_field_index(field.name)
        if index < 0:
            raise TbprError(f"{path} lacks column {field.name!r} ({field.type}); {REDO}")
        if not found.field(index).type.equals(field.type):
            raise TbprError(
                f"{path}: column {field.name!r} is {found.field(index).type}, expected {field.type}; {REDO}"
            )


def read_checked(path: Path, expected: pa.Schema, columns: Sequence[str]) -> pa.Table:
    """`columns` of the Parquet file at `path` after its schema is checked; none may hold a null."""
    check_schema(path, expected)
    table = pq.read_table(path, columns=list(columns))
    for name in columns:
        nulls = table[name].null_count
        if nulls:
            row = int(np.flatnonzero(table[name].is_null().to_numpy(zero_copy_only=False))[0])
            raise TbprError(f"{path}: column {name!r} has {nulls} nulls (first at row {row}); {REDO}")
    return table


# the files whose bytes are DATA's content: what every reader of DATA reads
HASHED = (IMAGES, CAPTIONS)
# DATA/.content_hash.json: the last hash and the stat identity of the files it was computed from
HASH_MEMO = ".content_hash.json"
# (folder, stat identity of each hashed file) -> its hash, in this process
_HASHES: dict[tuple[str, tuple[tuple[int, ...], ...]], str] = {}


def _identity(path: Path) -> tuple[int, ...]:
    """What changes when a file is rewritten, replaced, touched or edited in place: its inode, size,
    mtime and ctime (a user can set mtime back, not ctime)."""
    info = path.stat()
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def content_hash(data: Path) -> str:
    """What DATA holds, as one string: a sha256 of its own images and captions Parquet bytes (streamed
    in 1 MiB blocks), so a DATA folder re-prepared or edited after `prepare` hashes differently. The
    manifest's `content_hash` is another thing: the source's identity, which makes `prepare` a no-op.
    Hashed once for an unchanged pair of files: remembered in this process and in DATA/.content_hash.json
    (best effort: a read-only DATA is hashed once per process), keyed by both files' `_identity`.
    An OSError when a file cannot be read."""
    data = Path(data)
    identity = tuple(_identity(data / name) for name in HASHED)
    key = (str(data.resolve()), identity)
    if key in _HASHES:
        return _HASHES[key]
    try:
        memo = json.loads((data / HASH_MEMO).read_text(encoding="utf-8"))
        known = memo["hash"] if [tuple(i) for i in memo["identity"]] == list(identity) else None
    except (OSError, ValueError, KeyError, TypeError):
        known = None
    if not isinstance(known, str):
        digest = hashlib.sha256()
        for name in HASHED:
            with open(data / name, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        known = "sha256:" + digest.hexdigest()
        with contextlib.suppress(OSError):  # a read-only DATA: hashed again by the next process
            write_json_atomic(data / HASH_MEMO, {"hash": known, "identity": identity})
    _HASHES[key] = known
    return known


def source_hash(data: Path) -> str:
    """The manifest's `content_hash` (of the source annotation and image bytes, written by `prepare`),
    or "" when it has none: what an EMB made before DATA's own hash was recorded holds instead."""
    try:
        recorded = json.loads((data / MANIFEST).read_text(encoding="utf-8")).get("content_hash")
    except (OSError, ValueError, AttributeError):
        return ""
    return recorded if isinstance(recorded, str) else ""


def open_data(
    data: Path, image_columns: Sequence[str], caption_columns: Sequence[str]
) -> tuple[dict[str, Any], pa.Table, pa.Table]:
    """(manifest, images, captions) of DATA, every file and the invariants across them checked."""
    data = Path(data)
    if not data.is_dir():
        raise TbprError(f"no DATA folder at {data}; run `tbpr prepare` (or `tbpr synth`) to create it")
    for name in (IMAGES, CAPTIONS, MANIFEST):
        if not (data / name).is_file():
            raise TbprError(f"{data / name} not found; run `tbpr prepare` (or `tbpr synth`) to create DATA")
    manifest = read_manifest(data)
    need = {"image_id", "person_id", "split"}
    images = read_checked(data / IMAGES, IMAGES_SCHEMA, [*need, *(c for c in image_columns if c not in need)])
    need |= {"caption_id"}
    captions = read_checked(
        data / CAPTIONS, CAPTIONS_SCHEMA, [*need, *(c for c in caption_columns if c not in need)]
    )
    if (data / QUARANTINE).is_file():
        check_schema(data / QUARANTINE, QUARANTINE_SCHEMA)
    check_tables(data, images, captions)
    return manifest, images, captions


def check_tables(data: Path, images: pa.Table, captions: pa.Table) -> None:
    """The invariants across DATA's files, on tables read by `read_checked`."""
    _unique(data / IMAGES, images, "image_id")
    _unique(data / CAPTIONS, captions, "caption_id")
    for name, table in ((IMAGES, images), (CAPTIONS, captions)):
        unknown = pc.invert(pc.is_in(table["split"], value_set=pa.array(SPLITS)))
        if pc.any(unknown).as_py():
            row = _first(unknown)
            raise TbprError(
                f"{data / name}: row {row} has split {table['split'][row].as_py()!r}, not one of "
                f"{', '.join(SPLITS)}; {REDO}"
            )
    row_of = pc.index_in(
        captions["image_id"], value_set=images["image_id"].combine_chunks()
    )  # (Q,) image row or null
    if row_of.null_count:
        row = _first(row_of.is_null())
        raise TbprError(
            f"{data / CAPTIONS}: row {row} (caption_id {captions['caption_id'][row].as_py()}) points at "
            f"image_id {captions['image_id'][row].as_py()}, which {data / IMAGES} lacks; {REDO}"
        )
    for column in ("person_id", "split"):
        differs = pc.not_equal(captions[column], images[column].take(row_of))
        if pc.any(differs).as_py():
            row = _first(differs)
            raise TbprError(
                f"{data / CAPTIONS}: row {row} (caption_id {captions['caption_id'][row].as_py()}) has "
                f"{column} {captions[column][row].as_py()!r} but its image "
                f"{captions['image_id'][row].as_py()} has {images[column].take(row_of)[row].as_py()!r}; {REDO}"
            )
    _warn_shared_identities(data, images)


def _unique(path: Path, table: pa.Table, column: str) -> None:
    values, counts = np.unique(table[column].to_numpy(), return_counts=True)
    if len(values) < table.num_rows:
        raise TbprError(
            f"{path}: {column} {int(values[counts > 1][0])} appears {int(counts.max())} times; "
            f"{column} must be unique; {REDO}"
        )


def _first(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])


def _warn_shared_identities(data: Path, images: pa.Table) -> None:
    """An identity in several splits leaks test people into training: a warning (a source's own choice)."""
    splits = images.group_by("person_id").aggregate([("split", "count_distinct")])
    shared = splits.filter(pc.greater(splits["split_count_distinct"], 1))["person_id"]
    if len(shared):
        log.warning(
            "%s: %d identities appear in more than one split (e.g. person_id %s): evaluation on them "
            "is not on unseen people",
            data / IMAGES,
            len(shared),
            shared[0].as_py(),
        )
