"""A whole image: background with clutter, the pedestrian, an occluder, then lighting and noise."""

from __future__ import annotations

import dataclasses
import functools
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tasks.data.synth.attributes import PALETTE, RGB, Identity
from tasks.data.synth.person import draw_person
from tasks.data.synth.render import Painter, colours_for, make_body, shade
from tasks.data.synth.views import View

SUPERSAMPLE = 2
NOISE_BANK = (560, 240)  # rows, columns: more than the largest image (420 x 160)
WALLS: tuple[RGB, ...] = ((196, 186, 168), (150, 150, 146), (164, 96, 76), (210, 204, 190), (120, 128, 140))
GROUNDS: dict[str, tuple[RGB, ...]] = {
    "street": ((118, 118, 114), (140, 136, 128), (96, 98, 100)),
    "indoor": ((160, 120, 80), (186, 180, 170), (120, 110, 100)),
    "park": ((176, 156, 120), (128, 124, 116), (150, 140, 110)),
}


def _jitter(rng: random.Random, colour: RGB) -> RGB:
    return shade(colour, rng.uniform(0.8, 1.15))


def background(view: View, size: tuple[int, int], rng: random.Random) -> tuple[Image.Image, float]:
    """The scene behind the person and the horizon height (pixels)."""
    w, h = size
    horizon = h * rng.uniform(0.5, 0.7)
    upper = (70, 120, 60) if view.scene == "park" else _jitter(rng, rng.choice(WALLS))
    image = Image.new("RGB", size, upper)
    draw = ImageDraw.Draw(image)
    ground = _jitter(rng, rng.choice(GROUNDS[view.scene]))
    draw.rectangle((0, horizon, w, h), fill=ground)
    if view.scene == "park":
        for _ in range(6):
            x, y, r = rng.uniform(0, w), rng.uniform(0, horizon), rng.uniform(0.15, 0.4) * w
            draw.ellipse((x - r, y - r, x + r, y + r), fill=_jitter(rng, (60, 110, 50)))
    else:
        cols = rng.randint(1, 3)
        for i in range(cols):
            x = w * (i + rng.uniform(0.15, 0.4)) / cols
            y = rng.uniform(0.05, 0.25) * h
            draw.rectangle((x, y, x + w * 0.5 / cols, y + h * 0.18), fill=shade(upper, 0.55))
    y, step = horizon, h * 0.02
    while y < h:  # paving lines, wider apart near the camera
        draw.line((0, y, w, y), fill=shade(ground, 0.85), width=SUPERSAMPLE)
        y, step = y + step, step * 1.45
    _clutter(draw, view, size, horizon, rng)
    # blurred at the final resolution, then blown up by pixel repetition: the final reduce() undoes it exactly
    small = image.reduce(SUPERSAMPLE).filter(ImageFilter.BoxBlur(1))
    return small.resize(size, Image.Resampling.NEAREST), horizon


def _clutter(
    draw: ImageDraw.ImageDraw, view: View, size: tuple[int, int], horizon: float, rng: random.Random
) -> None:
    """Signs, bins, bushes and passers-by, some in the person's own clothing colours."""
    w, h = size
    for name in view.clutter_colours:
        colour = _jitter(rng, PALETTE[name])
        x, bottom = rng.uniform(-0.2, 1.0) * w, horizon + rng.uniform(-0.1, 0.25) * h
        width, height = rng.uniform(0.15, 0.5) * w, rng.uniform(0.08, 0.3) * h
        kind = rng.choice(("box", "blob", "figure"))
        if kind == "box":
            draw.rectangle((x, bottom - height, x + width, bottom), fill=colour, outline=shade(colour, 0.6))
        elif kind == "blob":
            draw.ellipse((x, bottom - height, x + width, bottom), fill=colour)
        else:  # a blurred passer-by far away
            fw = width * 0.35
            draw.ellipse(
                (x + fw * 0.3, bottom - height * 1.2, x + fw * 0.7, bottom - height * 1.05),
                fill=(200, 160, 130),
            )
            draw.rectangle((x, bottom - height * 1.05, x + fw, bottom - height * 0.55), fill=colour)
            draw.rectangle(
                (x + fw * 0.1, bottom - height * 0.55, x + fw * 0.9, bottom), fill=shade(colour, 0.5)
            )


def _occluder(image: Image.Image, view: View, feet: float, head: float, rng: random.Random) -> None:
    w, h = image.size
    draw = ImageDraw.Draw(image)
    if view.occluder == "pole":
        x, half = view.occluder_x * w, view.occluder_size * head / 2
        colour = rng.choice(((70, 72, 76), (150, 150, 150), (40, 90, 60)))
        draw.rectangle((x - half, 0, x + half, h), fill=colour)
        draw.line((x - half * 0.4, 0, x - half * 0.4, h), fill=shade(colour, 1.4), width=SUPERSAMPLE)
    elif view.occluder == "box":
        top = feet - view.occluder_size * head
        x0 = (view.occluder_x - 0.5) * w
        colour = rng.choice(((150, 110, 70), (90, 90, 96), (60, 60, 70), (170, 160, 140)))
        draw.rectangle(
            (x0, top, x0 + w * rng.uniform(0.6, 1.0), h),
            fill=colour,
            outline=shade(colour, 0.6),
            width=SUPERSAMPLE,
        )
        draw.line(
            (x0, top + (h - top) * 0.3, x0 + w, top + (h - top) * 0.3),
            fill=shade(colour, 0.75),
            width=SUPERSAMPLE,
        )


PARTS = ("hair", "upper", "lower", "shoes", "bag", "headwear")  # `Colours` fields that are parts


def part_boxes(identity: Identity, view: View, image: Image.Image | None = None) -> dict[str, list[int]]:
    """Where each visible part was drawn: {part: [x0, y0, x1, y1]} in pixels of the final image (x1, y1
    exclusive), from the pixels that change when that part alone is drawn in another colour."""
    base = np.asarray(image if image is not None else render_image(identity, view), dtype=np.int16)
    boxes = {}
    for part in PARTS:
        if (part == "bag" and identity.bag_type == "none") or (
            part == "headwear" and identity.headwear == "none"
        ):
            continue
        changed = (
            np.abs(np.asarray(render_image(identity, view, part), dtype=np.int16) - base).sum(axis=2) > 60
        )
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        if len(rows) and len(cols):
            boxes[part] = [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]
    return boxes


@functools.cache
def _noise_bank() -> np.ndarray:
    """Unit Gaussian noise, larger than any image; each image reads a crop at a seeded offset."""
    return np.random.default_rng(20240601).standard_normal(
        (NOISE_BANK[0], NOISE_BANK[1], 3), dtype=np.float32
    )


def _light(image: Image.Image, view: View) -> Image.Image:
    """Brightness, colour cast and sensor noise (a seeded crop of a fixed bank: reproducible, cheap)."""
    pixels = np.asarray(image, dtype=np.float32)  # (H, W, 3)
    gain = view.brightness * (1 - view.tint_strength)
    offset = np.asarray(view.tint, dtype=np.float32) * (view.tint_strength * view.brightness)
    h, w = pixels.shape[:2]
    y, x = view.render_seed % (NOISE_BANK[0] - h), (view.render_seed >> 12) % (NOISE_BANK[1] - w)
    lit = pixels * np.float32(gain) + offset
    if view.noise:
        lit += _noise_bank()[y : y + h, x : x + w] * np.float32(view.noise)
    return Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8))


def render_image(identity: Identity, view: View, recolour: str | None = None) -> Image.Image:
    """The final RGB image (view.width x view.height) of `identity` seen under `view`; `recolour` names
    a part colour (`Colours` field) drawn in a far-off colour instead (to find where that part is)."""
    rng = random.Random(view.render_seed)
    size = (view.width * SUPERSAMPLE, view.height * SUPERSAMPLE)
    image, _ = background(view, size, rng)
    body = make_body(identity, view, SUPERSAMPLE)
    feet = body.y(7.15)
    draw = ImageDraw.Draw(image)
    draw.ellipse(
        (body.cx - 1.1 * body.h, feet - 0.18 * body.h, body.cx + 1.1 * body.h, feet + 0.12 * body.h),
        fill=(60, 60, 60),
    )
    painter = Painter(image, line=SUPERSAMPLE * max(1.0, body.h / 40))
    colours = colours_for(identity, rng)
    if recolour is not None:
        original = getattr(colours, recolour)
        far = (
            (255, 0, 255)
            if abs(original[0] - 255) + original[1] + abs(original[2] - 255) > 300
            else (0, 255, 0)
        )
        colours = dataclasses.replace(colours, **{recolour: far})
    draw_person(painter, identity, colours, body, view.viewpoint, view.stride)
    _occluder(image, view, feet, body.h, rng)
    image = _light(image.reduce(SUPERSAMPLE), view)
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if view.facing_left else image
