"""The CUHK-PEDES layout on disk: `reid_raw.json`, `imgs/`, plus `attributes.json` and the
`synth.json` marker. Splits are by identity; a swapped pair stays in one split (hard negatives)."""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.errors import TbprError
from tasks.core.files import write_json_atomic

MIN_IDENTITIES = 6
MARKER, ANNOTATIONS, ATTRIBUTES, IMAGES = "synth.json", "reid_raw.json", "attributes.json", "imgs"
IMAGE_FOLDER = "synth"  # under imgs/, as CUHK-PEDES has CUHK01/, cam_a/, ...


@dataclass(frozen=True)
class ImageRecord:
    """One image and what is known about it."""

    person_id: int
    file_path: str  # relative to imgs/
    split: str
    captions: tuple[str, ...]
    tokens: tuple[tuple[str, ...], ...]
    attributes: dict[str, Any]  # identity attributes and the view's conditions

    def annotation(self) -> dict[str, Any]:
        """The record as in CUHK-PEDES `reid_raw.json`."""
        return {
            "split": self.split,
            "captions": list(self.captions),
            "file_path": self.file_path,
            "processed_tokens": [list(t) for t in self.tokens],
            "id": self.person_id,
        }


def split_of_identities(
    identities: int, seed: int, held_out: int | None = None, test: int | None = None
) -> list[str]:
    """Split name per identity index: `held_out` identities each for val and test (default about 10%,
    at least 2), or `test` for test when given (a larger test set: more persons, tighter intervals),
    the rest train."""
    if identities < MIN_IDENTITIES:
        raise TbprError(
            f"--identities must be at least {MIN_IDENTITIES} (got {identities}); train, val and test each need identities"
        )
    if held_out is not None and not 2 <= held_out <= (identities - 2) // 2:
        raise TbprError(
            f"--held-out must be between 2 and {(identities - 2) // 2} for {identities} identities (got "
            f"{held_out}): val and test take that many each and train needs at least 2"
        )
    held_out = held_out if held_out is not None else max(2, round(0.1 * identities))
    test = held_out if test is None else test
    if not 2 <= test <= identities - held_out - 2:
        raise TbprError(
            f"--test must be between 2 and {identities - held_out - 2} for {identities} identities with "
            f"{held_out} for val (got {test}): train needs at least 2"
        )
    pairs = [list(range(i, min(i + 2, identities))) for i in range(0, identities, 2)]
    random.Random(f"tbpr-synth:{seed}:splits").shuffle(pairs)
    order = [i for pair in pairs for i in pair]
    splits = [""] * identities
    for position, index in enumerate(order):
        splits[index] = "test" if position < test else "val" if position < test + held_out else "train"
    return splits


def prepare_output(out: Path) -> None:
    """Check that `out` may be written; clear the files of a previous synth run there."""
    if out.exists() and not out.is_dir():
        raise TbprError(f"{out} is a file; give a folder for the synthetic dataset")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise TbprError(
                f"{out} is not empty and holds no {MARKER}; choose a new or empty folder (a previous `tbpr synth` output is overwritten)"
            )
        shutil.rmtree(out / IMAGES / IMAGE_FOLDER, ignore_errors=True)
        for name in (ANNOTATIONS, ATTRIBUTES):
            (out / name).unlink(missing_ok=True)
    (out / IMAGES / IMAGE_FOLDER).mkdir(parents=True, exist_ok=True)


def write_annotations(out: Path, records: list[ImageRecord]) -> None:
    """`attributes.json` first, `reid_raw.json` last: its presence means the dataset is complete."""
    write_synth_json(
        out / ATTRIBUTES, [{"file_path": r.file_path, "id": r.person_id, **r.attributes} for r in records]
    )
    write_synth_json(out / ANNOTATIONS, [r.annotation() for r in records])


def write_synth_json(path: Path, payload: Any) -> None:
    """Compact UTF-8 JSON, written atomically (the annotation files can be large)."""
    write_json_atomic(path, payload, ensure_ascii=False, separators=(",", ":"))
