"""Where the parts of each person are, and which caption words name them: the ground truth of
attention grounding (README, "Attention grounding").

Part boxes come from a synthetic source's `attributes.json` (`tbpr synth` records, for test images, the
box of each visible part: hair, upper and lower garment, shoes, bag, headwear). The lexicon below is
deliberately broader than the generator's: the words of CUHK-PEDES / ICFG-PEDES / RSTPReid captions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq

from tasks.data.check import read_manifest
from tasks.data.layout import IMAGES
from tasks.data.synth.layout import ATTRIBUTES

PART_NOUNS: dict[str, frozenset[str]] = {
    "hair": frozenset(["hair", "haired", "ponytail", "bun", "braid", "braids"]),
    "upper": frozenset(
        [
            "shirt",
            "tshirt",
            "tee",
            "jacket",
            "coat",
            "sweater",
            "jumper",
            "pullover",
            "hoodie",
            "sweatshirt",
            "top",
            "blouse",
            "vest",
            "cardigan",
            "blazer",
            "parka",
            "windbreaker",
            "jersey",
            "polo",
            "tank",
        ]
    ),
    "lower": frozenset(
        ["trousers", "pants", "slacks", "jeans", "shorts", "skirt", "leggings", "capris", "sweatpants"]
    ),
    "shoes": frozenset(
        ["shoes", "shoe", "sneakers", "trainers", "boots", "sandals", "heels", "slippers", "loafers"]
    ),
    "bag": frozenset(["backpack", "rucksack", "bag", "handbag", "purse", "satchel", "tote", "knapsack"]),
    "headwear": frozenset(["hat", "cap", "beanie", "helmet", "hood"]),
}
COLOURS = tuple(
    [
        "black",
        "white",
        "grey",
        "gray",
        "red",
        "blue",
        "green",
        "yellow",
        "orange",
        "purple",
        "pink",
        "brown",
        "beige",
        "navy",
        "khaki",
        "tan",
        "maroon",
        "violet",
        "blonde",
        "blond",
        "silver",
        "gold",
        "cream",
        "dark",
        "light",
    ]
)  # colour words, and the shade words that go with them
_NOUN_PART = {noun: part for part, nouns in PART_NOUNS.items() for noun in nouns}
_REACH = 3  # a colour word belongs to a part noun at most this many words away (ahead first)
_WORD = re.compile(r"[a-z]+")


def part_words(text: str) -> list[tuple[int, int, str]]:
    """(start, end) character spans of the words of `text` that name a part or its colour, with the part.

    `a red jacket` -> "red" and "jacket" name `upper`; `her skirt is black` -> "skirt" and "black" name
    `lower` (a colour goes with the nearest part noun ahead of it, else behind, within three words).
    """
    words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(text.lower())]
    parts = [_NOUN_PART.get(w) for _, _, w in words]
    found = []
    for i, (start, end, word) in enumerate(words):
        part = parts[i]
        if part is None and word in COLOURS:
            ahead = [parts[j] for j in range(i + 1, min(len(words), i + 1 + _REACH)) if parts[j]]
            behind = [parts[j] for j in range(i - 1, max(-1, i - 1 - _REACH), -1) if parts[j]]
            part = (ahead or behind or [None])[0]
        if part is not None:
            found.append((start, end, part))
    return found


def part_boxes(data: Path, split: str = "test") -> dict[int, dict[str, tuple[float, float, float, float]]]:
    """{image_id: {part: (x0, y0, x1, y1)}} as fractions of the image's width and height, for the images of
    `split` whose source recorded part boxes; {} when it recorded none (any non-synthetic source)."""
    manifest = read_manifest(data)
    source = manifest.get("source", {}).get("path")
    attributes = Path(source) / ATTRIBUTES if isinstance(source, str) and source else None
    if attributes is None or not attributes.is_file():
        return {}
    records = json.loads(attributes.read_text())
    boxes_by_path = {r["file_path"]: r["parts"] for r in records if r.get("parts")}
    if not boxes_by_path:
        return {}
    images = pq.read_table(data / IMAGES, columns=["image_id", "split", "file_path", "height", "width"])
    out: dict[int, dict[str, tuple[float, float, float, float]]] = {}
    for row in images.to_pylist():
        boxes = boxes_by_path.get(row["file_path"])
        if row["split"] != split or not boxes:
            continue
        w, h = float(row["width"]), float(row["height"])
        out[int(row["image_id"])] = {
            part: (box[0] / w, box[1] / h, box[2] / w, box[3] / h) for part, box in boxes.items()
        }
    return out
