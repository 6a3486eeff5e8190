"""The data-quality report of a DATA folder: what a public layout gets wrong without breaking a schema.
Flagged, never dropped (a flag is a question for the analyst, not a verdict); `tbpr prepare` prints the
counts and records them in the manifest (`quality`), and the warehouse holds every flag (table
`data_quality`, `tbpr sql data_quality`).

| flag | one row per | what it means |
| --- | --- | --- |
| `identity_in_splits` | person | the person has images in several splits: test people seen in training |
| `reused_caption` | caption | the same text (case, spacing and end punctuation aside) describes images of several persons: a caption that cannot single anyone out (RSTPReid has one on 9 images of 5 persons) |
| `not_language` | caption | control characters, code or markup, or mostly non-letters: not a description |
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

IDENTITY_IN_SPLITS = "identity_in_splits"
REUSED_CAPTION = "reused_caption"
NOT_LANGUAGE = "not_language"
FLAGS = (IDENTITY_IN_SPLITS, REUSED_CAPTION, NOT_LANGUAGE)
QUALITY_SCHEMA = pa.schema(
    [
        ("flag", pa.string()),
        ("person_id", pa.int64()),
        ("image_id", pa.int64()),  # null for a person's flag
        ("caption_id", pa.int64()),  # null for a person's flag
        ("split", pa.string()),
        ("text", pa.string()),  # the caption, for a caption's flag
        ("detail", pa.string()),
    ]
)
MIN_LETTER_SHARE = 0.5  # of the non-space characters
# code and markup: braces, tags, statements, operators, URLs, escapes; none occurs in a description
CODE = re.compile(
    r"[{}]|</?[A-Za-z][\w-]*(\s[^<>]*)?/?>|==|=>|\(\s*\)|https?://|www\.|\\[nrtux]|"
    r"\bdef\s+\w+\s*\(|\bfunction\s*\w*\s*\(|\bimport\s+[\w.]+\s*(;|$)|\bSELECT\b.*\bFROM\b"
)
_KEEP_WHITESPACE = {"\t", "\n", "\r"}
_END_PUNCTUATION = " .,;:!?\t\n\r"


@dataclass(frozen=True)
class Flag:
    flag: str
    person_id: int
    image_id: int | None
    caption_id: int | None
    split: str
    text: str | None
    detail: str


def language_problem(text: str) -> str | None:
    """Why `text` is not a natural-language description, or None when it reads as one."""
    controls = sorted({f"U+{ord(c):04X}" for c in text if _is_control(c)})
    if controls:
        return f"control characters {', '.join(controls[:3])}"
    match = CODE.search(text)
    if match:
        return f"code or markup ({match.group(0).strip()!r})"
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    if not visible or letters < MIN_LETTER_SHARE * len(visible):
        return f"mostly non-letters ({letters} of {len(visible)} characters are letters)"
    return None


def _is_control(char: str) -> bool:
    return char not in _KEEP_WHITESPACE and unicodedata.category(char) in ("Cc", "Cf", "Co", "Cs")


def normalised(text: str) -> str:
    """The text as a caption reuse is recognised by: lower case, runs of spaces as one, no end punctuation."""
    return " ".join(text.lower().split()).strip(_END_PUNCTUATION)


def quality_flags(images: pa.Table, captions: pa.Table) -> list[Flag]:
    """Every flag of DATA's tables (images: image_id, person_id, split; captions: caption_id, image_id,
    person_id, split, text), persons first, then captions in caption order."""
    flags = list(_identity_flags(images))
    rows = captions.select(["caption_id", "image_id", "person_id", "split", "text"]).to_pylist()
    persons: dict[str, set[int]] = defaultdict(set)
    image_sets: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        key = normalised(row["text"])
        persons[key].add(row["person_id"])
        image_sets[key].add(row["image_id"])
    for row in rows:
        key = normalised(row["text"])
        problem = language_problem(row["text"])
        if problem:
            flags.append(_caption_flag(NOT_LANGUAGE, row, problem))
        if key and len(persons[key]) > 1:
            detail = f"the same text on {len(image_sets[key])} images of {len(persons[key])} persons"
            flags.append(_caption_flag(REUSED_CAPTION, row, detail))
    return flags


def _identity_flags(images: pa.Table) -> Iterable[Flag]:
    splits: dict[int, set[str]] = defaultdict(set)
    for person, split in zip(images["person_id"].to_pylist(), images["split"].to_pylist(), strict=True):
        splits[person].add(split)
    for person, seen in splits.items():
        if len(seen) > 1:
            names = ", ".join(sorted(seen))
            yield Flag(IDENTITY_IN_SPLITS, person, None, None, names, None, f"images in {names}")


def _caption_flag(flag: str, row: dict[str, Any], detail: str) -> Flag:
    return Flag(flag, row["person_id"], row["image_id"], row["caption_id"], row["split"], row["text"], detail)


def flags_table(flags: list[Flag]) -> pa.Table:
    """The flags as an Arrow table of `QUALITY_SCHEMA` (the warehouse's `data_quality`)."""
    columns = {name: [getattr(f, name) for f in flags] for name in QUALITY_SCHEMA.names}
    return pa.table(columns, schema=QUALITY_SCHEMA)


def quality_summary(flags: list[Flag], examples: int = 3) -> dict[str, Any]:
    """The manifest's `quality`: per flag, how many rows and the first few (id and detail)."""
    summary: dict[str, Any] = {}
    for name in FLAGS:
        chosen = [f for f in flags if f.flag == name]
        summary[name] = {
            "count": len(chosen),
            "examples": [
                {
                    "person_id": f.person_id,
                    **({"caption_id": f.caption_id, "text": f.text} if f.caption_id is not None else {}),
                    "detail": f.detail,
                }
                for f in chosen[:examples]
            ],
        }
    return summary
