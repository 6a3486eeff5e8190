"""The public dataset layouts: where the annotation file is and what its records are called.

All three layouts keep images under `SOURCE/imgs/` and one JSON annotation file at the top of
SOURCE whose top level is a list of records, one per image:

- CUHK-PEDES: `reid_raw.json` (preferred, has `split`) or `caption_all.json` (no `split`); records
  have `id`, `file_path`, `captions` and usually `split`. Without `split`, the standard split by
  person id applies: train 1–11003, val 11004–12003, test 12004–13003 (Li et al., CVPR 2017).
- ICFG-PEDES: `ICFG-PEDES.json` or `ICFG_PEDES.json`; `id`, `file_path`, `captions`, `split` in
  train/test. ICFG-PEDES has no val split, and selecting on test is the flaw tbpr exists to avoid, so
  5% of the training identities are held out as val, chosen by a hash of the person id
  (`held_out_for_val`: deterministic, independent of record order; the manifest says so).
- RSTPReid: `data_captions.json`; `id`, `img_path`, `captions`, `split` in train/val/test.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from tasks.core.errors import TbprError

Format = Literal["cuhk-pedes", "icfg-pedes", "rstpreid"]
FORMATS: tuple[str, ...] = get_args(Format)
IMAGE_DIR = "imgs"

# The standard CUHK-PEDES split by person id (inclusive ranges), used when a record has no `split`.
CUHK_ID_SPLITS: tuple[tuple[str, int, int], ...] = (
    ("train", 1, 11003),
    ("val", 11004, 12003),
    ("test", 12004, 13003),
)


@dataclass(frozen=True)
class Layout:
    """How one public dataset names its annotation file and record fields."""

    name: Format
    annotation_files: tuple[str, ...]  # tried in this order
    path_key: str
    splits: tuple[str, ...]
    split_by_id: bool  # a record without `split` gets the standard split of its person id
    val_percent: int = 0  # this percentage of training identities becomes val (no val split of its own)


LAYOUTS: dict[str, Layout] = {
    "cuhk-pedes": Layout(
        "cuhk-pedes", ("reid_raw.json", "caption_all.json"), "file_path", ("train", "val", "test"), True
    ),
    "icfg-pedes": Layout(
        "icfg-pedes", ("ICFG-PEDES.json", "ICFG_PEDES.json"), "file_path", ("train", "val", "test"), False, 5
    ),
    "rstpreid": Layout("rstpreid", ("data_captions.json",), "img_path", ("train", "val", "test"), False),
}


@dataclass(frozen=True)
class Annotation:
    """The annotation file: its path, its exact bytes (hashed into the manifest) and its records."""

    path: Path
    raw: bytes
    records: list[Any]


def get_layout(fmt: str) -> Layout:
    """The layout for a format name; an unknown name is a `TbprError`."""
    try:
        return LAYOUTS[fmt]
    except KeyError:
        raise TbprError(f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}") from None


VAL_RULE = "sha256(str(person_id)) as an integer, modulo 100, below val_percent"


def held_out_for_val(person_id: int, percent: int) -> bool:
    """Whether a training identity is held out as val: the same answer on every machine and run."""
    digest = hashlib.sha256(str(person_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < percent


def cuhk_standard_split(person_id: int) -> str | None:
    """The standard CUHK-PEDES split of a person id, or None outside 1–13003."""
    for split, low, high in CUHK_ID_SPLITS:
        if low <= person_id <= high:
            return split
    return None


def find_annotation_file(source: Path, layout: Layout) -> Path:
    """The first of the layout's annotation files present in SOURCE; none is a `TbprError`."""
    if not source.is_dir():
        raise TbprError(f"source folder {source} does not exist; pass the dataset's root folder")
    for name in layout.annotation_files:
        if (source / name).is_file():
            return source / name
    others = [
        f"{name} ({other.name})"
        for other in LAYOUTS.values()
        if other is not layout
        for name in other.annotation_files
        if (source / name).is_file()
    ]
    hint = f"; found {', '.join(others)}: check --format" if others else ""
    expected = " or ".join(layout.annotation_files)
    raise TbprError(f"no {layout.name} annotation file in {source}: expected {expected}{hint}")


def load_annotation(source: Path, layout: Layout) -> Annotation:
    """Read and parse the annotation file (loaded whole: ~30 MB for the largest public dataset)."""
    path = find_annotation_file(source, layout)
    raw = path.read_bytes()
    try:
        records = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TbprError(f"{path} is not valid UTF-8 JSON ({exc}); re-download or repair the file") from None
    except RecursionError:
        raise TbprError(
            f"{path} nests JSON too deeply to be an annotation file (a list of flat records); repair it"
        ) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python accepts
        raise TbprError(f"{path} holds a value JSON cannot represent here ({exc}); repair the file") from None
    if not isinstance(records, list):
        kind = type(records).__name__
        raise TbprError(f"{path} must hold a JSON list of records at the top level, not a {kind}")
    if not (source / IMAGE_DIR).is_dir():
        raise TbprError(
            f"image folder {source / IMAGE_DIR} does not exist; images must be under SOURCE/imgs/"
        )
    return Annotation(path=path, raw=raw, records=records)
