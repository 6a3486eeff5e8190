"""Attribute words an analyst looks for in captions (the warehouse table `vocabulary`, and the words
the heat maps show first): colours and garments."""

from __future__ import annotations

COLOURS = (
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
    "dark",
    "light",
)
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
