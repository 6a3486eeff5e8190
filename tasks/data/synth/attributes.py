"""Identity attributes: what a synthetic pedestrian wears and carries, sampled per (seed, identity).

Colours come from one small palette so that many identities share values; identities are sampled in
pairs and the second of a pair is often a near copy of the first (two colours swapped, or one detail
changed), so only fine-grained, correctly bound details tell them apart.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from typing import Literal

RGB = tuple[int, int, int]

# The palette: colour name -> base RGB. Weights make some colours common, as in street photos.
PALETTE: dict[str, RGB] = {
    "black": (28, 28, 32),
    "white": (236, 236, 232),
    "grey": (128, 128, 132),
    "red": (196, 32, 38),
    "blue": (38, 72, 178),
    "green": (40, 140, 60),
    "yellow": (232, 200, 40),
    "purple": (118, 52, 150),
    "pink": (236, 130, 170),
    "brown": (116, 74, 42),
}
COLOUR_WEIGHTS: dict[str, float] = {
    "black": 3.0,
    "white": 2.5,
    "grey": 2.0,
    "red": 1.5,
    "blue": 2.5,
    "green": 1.0,
    "yellow": 0.8,
    "purple": 0.8,
    "pink": 0.8,
    "brown": 1.2,
}
HAIR_COLOURS: dict[str, RGB] = {
    "black": (22, 20, 20),
    "brown": (92, 58, 30),
    "blonde": (214, 176, 96),
    "grey": (150, 148, 146),
}
SKIN_TONES: tuple[RGB, ...] = (
    (246, 214, 186),
    (228, 184, 146),
    (196, 146, 106),
    (150, 102, 70),
    (104, 70, 48),
)

Gender = Literal["man", "woman"]
HairLength = Literal["short", "medium", "long"]
UpperType = Literal["t-shirt", "shirt", "jacket", "sweater", "hoodie"]
Pattern = Literal["plain", "striped", "checked", "dotted"]
LowerType = Literal["trousers", "jeans", "shorts", "skirt"]
BagType = Literal["backpack", "handbag", "shoulder bag", "none"]
Headwear = Literal["cap", "hat", "none"]

UPPER_TYPES: tuple[UpperType, ...] = ("t-shirt", "shirt", "jacket", "sweater", "hoodie")
PATTERNS: tuple[Pattern, ...] = ("plain", "striped", "checked", "dotted")
LOWER_TYPES: tuple[LowerType, ...] = ("trousers", "jeans", "shorts", "skirt")
BAG_TYPES: tuple[BagType, ...] = ("backpack", "handbag", "shoulder bag", "none")
HEADWEAR: tuple[Headwear, ...] = ("cap", "hat", "none")
SHOE_COLOURS = ("black", "white", "grey", "brown", "red", "blue")
# The colour slots a swap may exchange (both values come from PALETTE).
SWAPPABLE = (
    ("upper_colour", "lower_colour"),
    ("upper_colour", "bag_colour"),
    ("lower_colour", "shoes_colour"),
    ("upper_colour", "shoes_colour"),
)


@dataclass(frozen=True)
class Identity:
    """Everything a caption may say about a person, plus body details only the renderer uses."""

    gender: Gender
    hair_colour: str
    hair_length: HairLength
    upper_type: UpperType
    upper_colour: str
    upper_pattern: Pattern
    lower_type: LowerType
    lower_colour: str
    shoes_colour: str
    bag_type: BagType
    bag_colour: str  # "" when bag_type is "none"
    headwear: Headwear
    headwear_colour: str  # "" when headwear is "none"
    glasses: bool
    skin: int  # index into SKIN_TONES
    height: float  # relative body height, about 0.9..1.05
    build: float  # relative body width, about 0.85..1.15

    def as_record(self) -> dict[str, object]:
        """The attributes as a flat JSON-able mapping (for attributes.json)."""
        return asdict(self)


def _colour(rng: random.Random, exclude: tuple[str, ...] = ()) -> str:
    names = [c for c in PALETTE if c not in exclude]
    return rng.choices(names, weights=[COLOUR_WEIGHTS[c] for c in names])[0]


def _weighted(rng: random.Random, options: dict[str, float]) -> str:
    return rng.choices(list(options), weights=list(options.values()))[0]


def sample_identity(rng: random.Random) -> Identity:
    """One independent identity."""
    gender: Gender = "man" if rng.random() < 0.5 else "woman"
    man = gender == "man"
    lengths = (
        {"short": 0.8, "medium": 0.15, "long": 0.05} if man else {"short": 0.15, "medium": 0.3, "long": 0.55}
    )
    lower = {"trousers": 0.4, "jeans": 0.35, "shorts": 0.25} if man else {
        "trousers": 0.25, "jeans": 0.3, "shorts": 0.15, "skirt": 0.3}  # fmt: skip
    bags = {"backpack": 0.35, "handbag": 0.05, "shoulder bag": 0.25, "none": 0.35} if man else {
        "backpack": 0.25, "handbag": 0.35, "shoulder bag": 0.2, "none": 0.2}  # fmt: skip
    upper_colour = _colour(rng)
    lower_type = _weighted(rng, lower)
    lower_colour = _colour(rng, exclude=(upper_colour,))
    if lower_type == "jeans" and rng.random() < 0.6:
        lower_colour = "blue" if upper_colour != "blue" else "black"
    bag_type = _weighted(rng, bags)
    headwear = _weighted(rng, {"cap": 0.15, "hat": 0.1, "none": 0.75})
    return Identity(
        gender=gender,
        hair_colour=_weighted(rng, {"black": 0.5, "brown": 0.3, "blonde": 0.12, "grey": 0.08}),
        hair_length=_weighted(rng, lengths),  # type: ignore[arg-type]
        upper_type=rng.choice(UPPER_TYPES),
        upper_colour=upper_colour,
        upper_pattern=_weighted(rng, {"plain": 0.6, "striped": 0.16, "checked": 0.14, "dotted": 0.1}),  # type: ignore[arg-type]
        lower_type=lower_type,  # type: ignore[arg-type]
        lower_colour=lower_colour,
        shoes_colour=rng.choice(SHOE_COLOURS),
        bag_type=bag_type,  # type: ignore[arg-type]
        bag_colour="" if bag_type == "none" else _colour(rng),
        headwear=headwear,  # type: ignore[arg-type]
        headwear_colour="" if headwear == "none" else _colour(rng),
        glasses=rng.random() < 0.15,
        skin=rng.randrange(len(SKIN_TONES)),
        height=rng.uniform(0.9, 1.05),
        build=rng.uniform(0.85, 1.15),
    )


def swapped(base: Identity, rng: random.Random) -> Identity | None:
    """`base` with two of its colours exchanged (red top/blue trousers -> blue top/red trousers)."""
    options = [(a, b) for a, b in SWAPPABLE if getattr(base, a) and getattr(base, b)]
    options = [(a, b) for a, b in options if getattr(base, a) != getattr(base, b)]
    if not options:
        return None
    a, b = rng.choice(options)
    return replace(base, **{a: getattr(base, b), b: getattr(base, a)})


def one_detail_changed(base: Identity, rng: random.Random) -> Identity:
    """`base` with one attribute changed: the pattern, the bag, the headwear or the lower garment type."""
    kind = rng.choice(("pattern", "bag", "headwear", "lower", "hair"))
    if kind == "pattern":
        return replace(base, upper_pattern=rng.choice([p for p in PATTERNS if p != base.upper_pattern]))
    if kind == "bag":
        bag = rng.choice([b for b in BAG_TYPES if b != base.bag_type])
        colour = "" if bag == "none" else (base.bag_colour or _colour(rng))
        return replace(base, bag_type=bag, bag_colour=colour)
    if kind == "headwear":
        hat = rng.choice([h for h in HEADWEAR if h != base.headwear])
        return replace(base, headwear=hat, headwear_colour="" if hat == "none" else _colour(rng))
    if kind == "lower":
        options = [
            t for t in LOWER_TYPES if t != base.lower_type and (t != "skirt" or base.gender == "woman")
        ]
        return replace(base, lower_type=rng.choice(options))
    return replace(base, hair_colour=rng.choice([c for c in HAIR_COLOURS if c != base.hair_colour]))


def identity_rng(seed: int, index: int, purpose: str) -> random.Random:
    """A generator for one identity and purpose; string seeds hash with SHA-512, stable across runs."""
    return random.Random(f"tbpr-synth:{seed}:{index}:{purpose}")


def identity_at(seed: int, index: int) -> Identity:
    """Identity number `index` (0-based) of the dataset with `seed`.

    Identities come in pairs (2k, 2k+1): the odd one is a swap of the even one (35%), the even one
    with one detail changed (25%), or independent (40%). Only the pair's own generators are used, so
    any identity can be computed alone, in any process.
    """
    if index % 2 == 0:
        return sample_identity(identity_rng(seed, index, "attributes"))
    base = identity_at(seed, index - 1)
    rng = identity_rng(seed, index, "attributes")
    roll = rng.random()
    if roll < 0.35:
        twin = swapped(base, rng)
        if twin is not None:
            return replace(twin, skin=rng.randrange(len(SKIN_TONES)), height=rng.uniform(0.9, 1.05))
    if roll < 0.6:
        return replace(one_detail_changed(base, rng), height=rng.uniform(0.9, 1.05))
    return sample_identity(rng)
