"""Attribute words an analyst looks for in captions (the warehouse table `vocabulary`, and the words
the heat maps show first): colours and garments."""

from __future__ import annotations

from tasks.data.parts import COLOURS

GARMENTS = (
    "shirt",
    "t-shirt",
    "jacket",
    "coat",
    "sweater",
    "hoodie",
    "dress",
    "skirt",
    "trousers",
    "pants",
    "jeans",
    "shorts",
    "shoes",
    "sneakers",
    "boots",
    "hat",
    "cap",
    "backpack",
    "bag",
    "umbrella",
    "hair",
)
VOCABULARY: tuple[tuple[str, str], ...] = tuple((w, "colour") for w in COLOURS) + tuple(
    (w, "garment") for w in GARMENTS
)
