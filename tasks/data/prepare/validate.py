"""Per-record validation: fields, paths and duplicates, decided before any image is opened.

Each rule has its own readable reason; a record that breaks a rule goes to quarantine with it.
Rules run in this order and the first broken one is the reason: the record's shape and field types,
at least one usable caption, a path that stays inside the image root, a path not already claimed.
The image checks (`images.py`) follow for the records that pass.

An image without any usable caption is quarantined ("no usable caption") rather than kept: it can
never be a query, and the evaluation protocol's gallery is the test images that have captions, so
keeping it would add a gallery distractor that the published numbers do not have; for training it
carries no text to align. A blank caption (empty or whitespace only) is dropped on its own and its
image kept as long as another caption remains; kept captions are stored exactly as in the source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from tasks.data.prepare.layouts import Layout, cuhk_standard_split, held_out_for_val

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Reason(StrEnum):
    """Why a record is quarantined; the value is what `quarantine.parquet` stores."""

    NOT_AN_OBJECT = "record is not a JSON object"
    BAD_ID = "id is not an integer"
    BAD_PATH_TYPE = "file path is not a non-empty string"
    BAD_CAPTIONS = "captions is not a list of strings"
    BAD_SPLIT = "bad split value"
    ID_OUTSIDE_SPLITS = "person id outside the standard CUHK-PEDES split"
    NO_CAPTION = "no usable caption"
    PATH_ESCAPES = "path escapes the image root"
    DUPLICATE_PATH = "duplicate path"
    MISSING_FILE = "missing image file"
    UNREADABLE_FILE = "unreadable image file"
    ZERO_BYTE = "zero-byte image file"
    NOT_AN_IMAGE = "not an image"
    TRUNCATED = "truncated or corrupt image"
    NOT_A_FILE = "not a regular file"
    SYMLINK_LOOP = "symlink loop"
    SYMLINK = "symbolic link (not followed)"
    TOO_LARGE = "file too large"


def missing_key(key: str) -> str:
    """The reason for a record without a required key, naming the key."""
    return f"missing key: {key}"


@dataclass(frozen=True)
class Candidate:
    """A record whose fields and path are valid; its image is still to be checked."""

    index: int
    person_id: int
    split: str
    file_path: str  # as in the source annotation
    image_path: Path  # resolved, inside the image root
    captions: tuple[str, ...]  # the non-blank captions, exactly as in the source


@dataclass(frozen=True)
class Rejection:
    """A record that goes to quarantine, with its position in the annotation and the reason."""

    index: int
    reason: str


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from JSON escapes such as "\ud800"
        return False
    return True


def _is_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX


def _split_of(record: dict[str, Any], person_id: int, layout: Layout) -> str:
    """The record's split, or the reason it has none."""
    if "split" not in record:
        if not layout.split_by_id:
            return missing_key("split")
        return cuhk_standard_split(person_id) or Reason.ID_OUTSIDE_SPLITS
    split = record["split"]
    if layout.val_percent and split == "val":  # the layout has no val split of its own: tbpr makes it
        return Reason.BAD_SPLIT
    return split if isinstance(split, str) and split in layout.splits else Reason.BAD_SPLIT


def check_fields(record: Any, layout: Layout) -> tuple[int, str, str, tuple[str, ...]] | str:
    """(person_id, split, file_path, non-blank captions) of a well-formed record, else the reason."""
    if not isinstance(record, dict):
        return Reason.NOT_AN_OBJECT
    for key in ("id", layout.path_key, "captions"):
        if key not in record:
            return missing_key(key)
    person_id, file_path, captions = record["id"], record[layout.path_key], record["captions"]
    if not _is_int64(person_id):
        return Reason.BAD_ID
    if not (isinstance(file_path, str) and file_path and "\0" not in file_path and _is_utf8(file_path)):
        return Reason.BAD_PATH_TYPE
    if not (isinstance(captions, list) and all(isinstance(c, str) and _is_utf8(c) for c in captions)):
        return Reason.BAD_CAPTIONS
    split = _split_of(record, person_id, layout)
    if split not in layout.splits:
        return split
    usable = tuple(caption for caption in captions if caption.strip())
    if not usable:
        return Reason.NO_CAPTION
    return person_id, split, file_path, usable


def resolve_inside(root: Path, file_path: str) -> Path | None:
    """`root / file_path` resolved, or None if it leaves `root` (absolute, `..`, or a symlink out).

    `root` must already be resolved. Nothing is opened: resolving only follows symlinks.
    """
    relative = PurePosixPath(file_path)
    if relative.is_absolute() or ".." in relative.parts:
        return None
    try:
        resolved = (root / relative).resolve()
    except (RuntimeError, OSError):  # a symlink loop (RuntimeError before Python 3.13), a name too long
        return None
    return resolved if resolved.is_relative_to(root) else None


def plan_records(records: Sequence[Any], layout: Layout, image_root: Path) -> list[Candidate | Rejection]:
    """Validate every record's fields and path; one `Candidate` or `Rejection` per record, in order.

    Of several records naming the same file (after resolving), the first valid one is the candidate
    and the later ones are rejected as duplicates.
    """
    root = image_root.resolve()
    claimed: set[Path] = set()
    plan: list[Candidate | Rejection] = []
    for index, record in enumerate(records):
        fields = check_fields(record, layout)
        if isinstance(fields, str):
            plan.append(Rejection(index, str(fields)))
            continue
        person_id, split, file_path, captions = fields
        if split == "train" and layout.val_percent and held_out_for_val(person_id, layout.val_percent):
            split = "val"
        resolved = resolve_inside(root, file_path)
        if resolved is None:
            plan.append(Rejection(index, Reason.PATH_ESCAPES.value))
        elif resolved in claimed:
            plan.append(Rejection(index, Reason.DUPLICATE_PATH.value))
        else:
            claimed.add(resolved)
            plan.append(Candidate(index, person_id, split, file_path, resolved, captions))
    return plan
