"""Per-image conditions: viewpoint, framing, lighting, background clutter and occlusion.

`visible_slots` says which attributes an annotator could see in such an image (a backpack is seen
from the back or side, a handbag from the front or side, glasses not from the back, shoes not
behind a box), so captions only mention what the picture shows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from tasks.data.synth.attributes import PALETTE, RGB, Identity

Viewpoint = Literal["front", "back", "side"]
Occluder = Literal["none", "box", "pole"]
Scene = Literal["street", "indoor", "park"]
VIEWPOINTS: tuple[Viewpoint, ...] = ("front", "back", "side")
MIN_IMAGES, MAX_IMAGES = 2, 5
NOISY = 0.2  # share of images with sensor noise (noise makes a PNG ~8x larger)
SLOTS = ("hair", "upper", "lower", "shoes", "bag", "headwear", "glasses")


@dataclass(frozen=True)
class View:
    """How one image of an identity is taken. Sizes in pixels of the final image."""

    viewpoint: Viewpoint
    facing_left: bool  # side views: mirror the drawing
    width: int
    height: int
    person_height: float  # fraction of the image height, feet to crown
    center_x: float  # fraction of the width
    top: float  # fraction of the height left above the head
    stride: float  # -1..1, leg and arm swing
    brightness: float
    tint: RGB
    tint_strength: float
    noise: float  # pixel noise standard deviation (0: none)
    scene: Scene
    clutter: int  # background objects
    clutter_colours: tuple[str, ...]  # palette names, some shared with the clothes
    occluder: Occluder
    occluder_x: float  # fraction of the width (pole centre or box left edge)
    occluder_size: float  # pole width or box height, in head heights
    render_seed: int


def _size(rng: random.Random) -> tuple[int, int]:
    width = rng.randint(90, 160)
    height = round(width * rng.uniform(2.45, 2.95))
    return width, min(max(height, 250), 420)


def _viewpoints(rng: random.Random, count: int) -> list[Viewpoint]:
    first = rng.sample(VIEWPOINTS, 2)  # two different viewpoints at least
    return first + [rng.choice(VIEWPOINTS) for _ in range(count - 2)]


def sample_views(identity: Identity, rng: random.Random) -> list[View]:
    """2 to 5 views of one identity, at least two viewpoints."""
    count = rng.choices(range(MIN_IMAGES, MAX_IMAGES + 1), weights=(3, 4, 2, 1))[0]
    own = [identity.upper_colour, identity.lower_colour] + (
        [identity.bag_colour] if identity.bag_colour else []
    )
    views = []
    for viewpoint in _viewpoints(rng, count):
        width, height = _size(rng)
        clutter = rng.choice((0, 1, 2, 3, 4, 5))
        colours = tuple(
            rng.choice(own) if rng.random() < 0.3 else rng.choice(list(PALETTE)) for _ in range(clutter)
        )
        occluder: Occluder = rng.choices(("none", "box", "pole"), weights=(0.72, 0.13, 0.15))[0]  # type: ignore[assignment]
        views.append(
            View(
                viewpoint=viewpoint,
                facing_left=rng.random() < 0.5,
                width=width,
                height=height,
                person_height=rng.uniform(0.74, 0.94),
                center_x=0.5 + rng.uniform(-0.1, 0.1),
                top=rng.uniform(0.02, 0.06),
                stride=rng.uniform(-1.0, 1.0),
                brightness=rng.uniform(0.7, 1.25),
                tint=rng.choice(((255, 200, 140), (150, 190, 255), (200, 255, 200), (255, 255, 255))),
                tint_strength=rng.uniform(0.0, 0.18),
                noise=rng.uniform(1.5, 4.0) if rng.random() < NOISY else 0.0,
                scene=rng.choice(("street", "indoor", "park")),
                clutter=clutter,
                clutter_colours=colours,
                occluder=occluder,
                occluder_x=rng.uniform(0.2, 0.7),
                occluder_size=rng.uniform(0.35, 1.2) if occluder == "pole" else rng.uniform(1.0, 1.7),
                render_seed=rng.getrandbits(32),
            )
        )
    return views


def visible_slots(identity: Identity, view: View) -> tuple[str, ...]:
    """The attribute slots an annotator can see in this image, in SLOTS order."""
    hidden = set()
    if identity.bag_type == "none" or (identity.bag_type, view.viewpoint) in {
        ("backpack", "front"),
        ("handbag", "back"),
    }:
        hidden.add("bag")
    if identity.headwear == "none":
        hidden.add("headwear")
    if not identity.glasses or view.viewpoint == "back":
        hidden.add("glasses")
    if view.occluder == "box":
        hidden.add("shoes")
    return tuple(slot for slot in SLOTS if slot not in hidden)
