"""Draw one pedestrian with Pillow: head, hair, face, torso, arms, legs, garments, shoes, bag, headwear.

Coordinates are pixels of the (supersampled) canvas; `h` is the head height, the unit of all body
proportions (a person is about 7.15 heads tall). Side views are drawn facing right; the caller mirrors.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from tasks.data.synth.attributes import HAIR_COLOURS, PALETTE, RGB, SKIN_TONES, Identity
from tasks.data.synth.views import View

Point = tuple[float, float]
HEADS_TALL = 7.15


def shade(colour: RGB, factor: float) -> RGB:
    """`colour` darker (factor < 1) or lighter (> 1), clipped to 0..255."""
    return (
        min(255, int(colour[0] * factor)),
        min(255, int(colour[1] * factor)),
        min(255, int(colour[2] * factor)),
    )


def outline_of(colour: RGB) -> RGB:
    return shade(colour, 0.55) if sum(colour) > 90 else shade((60, 60, 64), 1.0)


def contrast_of(colour: RGB) -> RGB:
    """A pattern colour that reads against `colour`."""
    return (240, 240, 236) if sum(colour) < 380 else (30, 30, 36)


@dataclass(frozen=True)
class Body:
    """Key heights and widths of one figure on the canvas."""

    cx: float
    y0: float  # top of the head
    h: float  # head height
    sw: float  # half shoulder width
    ww: float  # half waist width
    hw: float  # half hip width
    man: bool

    def y(self, heads: float) -> float:
        return self.y0 + heads * self.h


def make_body(identity: Identity, view: View, scale: int) -> Body:
    height = view.height * scale * view.person_height * (0.93 + 0.07 * identity.height)
    h = height / HEADS_TALL
    man = identity.gender == "man"
    b = identity.build
    return Body(
        cx=view.center_x * view.width * scale,
        y0=view.top * view.height * scale + (view.height * scale * view.person_height - height),
        h=h,
        sw=(1.0 if man else 0.86) * h * b,
        ww=(0.72 if man else 0.6) * h * b,
        hw=(0.76 if man else 0.84) * h * b,
        man=man,
    )


@dataclass(frozen=True)
class Colours:
    skin: RGB
    hair: RGB
    upper: RGB
    lower: RGB
    shoes: RGB
    bag: RGB
    headwear: RGB


def colours_for(identity: Identity, rng: random.Random) -> Colours:
    """Palette colours with a small shade jitter, so that one colour name covers a range of pixels."""

    def jitter(colour: RGB) -> RGB:
        return shade(colour, rng.uniform(0.88, 1.1))

    def palette(name: str) -> RGB:
        return jitter(PALETTE[name]) if name else (0, 0, 0)

    return Colours(
        skin=jitter(SKIN_TONES[identity.skin]),
        hair=jitter(HAIR_COLOURS[identity.hair_colour]),
        upper=palette(identity.upper_colour),
        lower=palette(identity.lower_colour),
        shoes=palette(identity.shoes_colour),
        bag=palette(identity.bag_colour),
        headwear=palette(identity.headwear_colour),
    )


def pattern_fill(size: tuple[int, int], colour: RGB, pattern: str, step: float) -> Image.Image:
    """A canvas-sized texture of `colour` with stripes, checks or dots every `step` pixels."""
    tex = Image.new("RGB", size, colour)
    if pattern == "plain":
        return tex
    draw = ImageDraw.Draw(tex)
    other = contrast_of(colour)
    w, hgt = size
    s = max(3.0, step)
    if pattern == "striped":
        for i in range(int(hgt / s) + 1):
            draw.rectangle((0, i * s, w, i * s + s * 0.38), fill=other)
    elif pattern == "checked":
        line = max(1, round(s * 0.22))
        for i in range(int(max(w, hgt) / s) + 1):
            draw.line((0, i * s, w, i * s), fill=other, width=line)
            draw.line((i * s, 0, i * s, hgt), fill=other, width=line)
    else:  # dotted
        r = s * 0.16
        for i in range(int(hgt / s) + 1):
            for j in range(int(w / s) + 2):
                x, y = j * s + (s / 2 if i % 2 else 0), i * s + s / 2
                draw.ellipse((x - r, y - r, x + r, y + r), fill=other)
    return tex


Shape = tuple[str, list[Point]]  # ("poly", points) or ("ellipse", [top-left, bottom-right])


def quad(a: Point, b: Point, width_a: float, width_b: float) -> list[Point]:
    """A tapered band from `a` to `b` (a limb segment), as four polygon corners."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / length, dx / length
    return [
        (a[0] + nx * width_a / 2, a[1] + ny * width_a / 2),
        (b[0] + nx * width_b / 2, b[1] + ny * width_b / 2),
        (b[0] - nx * width_b / 2, b[1] - ny * width_b / 2),
        (a[0] - nx * width_a / 2, a[1] - ny * width_a / 2),
    ]


def disc(centre: Point, radius: float) -> Shape:
    x, y = centre
    return ("ellipse", [(x - radius, y - radius), (x + radius, y + radius)])


def box(x0: float, y0: float, x1: float, y1: float) -> Shape:
    return ("ellipse", [(x0, y0), (x1, y1)])


class Painter:
    """Pillow drawing: each group of shapes gets one outline around their union (no inner seams)."""

    def __init__(self, image: Image.Image, line: float) -> None:
        self.image = image
        self.draw = ImageDraw.Draw(image)
        self.line = max(1, round(line))

    @staticmethod
    def _fill(draw: ImageDraw.ImageDraw, shape: Shape, colour: RGB | int, grow: int) -> None:
        kind, pts = shape
        if kind == "poly":
            draw.polygon(pts, fill=colour)
            if grow:
                draw.line([*pts, pts[0]], fill=colour, width=2 * grow, joint="curve")
        else:
            (x0, y0), (x1, y1) = pts
            draw.ellipse((x0 - grow, y0 - grow, x1 + grow, y1 + grow), fill=colour)

    def shapes(self, shapes: list[Shape], fill: RGB, outline: bool = True) -> None:
        if outline:
            edge = outline_of(fill)
            for shape in shapes:
                self._fill(self.draw, shape, edge, self.line)
        for shape in shapes:
            self._fill(self.draw, shape, fill, 0)

    def textured(self, shapes: list[Shape], fill: RGB, pattern: str, step: float) -> None:
        """Fill `shapes` with a pattern texture through one mask, outlined around their union."""
        if pattern == "plain":
            self.shapes(shapes, fill)
            return
        edge = outline_of(fill)
        mask = Image.new("L", self.image.size, 0)
        mdraw = ImageDraw.Draw(mask)
        for shape in shapes:
            self._fill(self.draw, shape, edge, self.line)
            self._fill(mdraw, shape, 255, 0)
        left, top, right, bottom = mask.getbbox() or (0, 0, 1, 1)
        texture = pattern_fill((right - left, bottom - top), fill, pattern, step)
        self.image.paste(texture, (left, top), mask.crop((left, top, right, bottom)))

    def line_(self, points: list[Point], fill: RGB, width: float) -> None:
        self.draw.line(points, fill=fill, width=max(1, round(width)), joint="curve")

    def dot(self, centre: Point, radius: float, fill: RGB) -> None:
        x, y = centre
        self.draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
