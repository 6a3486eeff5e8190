"""A pedestrian seen from the side, walking to the right: stride, swinging arms, profile torso."""

from __future__ import annotations

import math

from tasks.data.synth.attributes import Identity
from tasks.data.synth.front import LONG_SLEEVES, hem_y, limb_shapes
from tasks.data.synth.render import Body, Colours, Painter, Point, Shape, box, shade


def _swing(origin: Point, angle: float, upper: float, lower: float, bend: float) -> list[Point]:
    """Joint, middle joint and end of a limb swung by `angle` radians from vertical (+ forward)."""
    knee = (origin[0] + math.sin(angle) * upper, origin[1] + math.cos(angle) * upper)
    end = (knee[0] + math.sin(angle + bend) * lower, knee[1] + math.cos(angle + bend) * lower)
    return [origin, knee, end]


def side_limbs(b: Body, stride: float) -> tuple[list[list[Point]], list[list[Point]]]:
    """(far leg, near leg), (far arm, near arm); the near arm swings against the near leg."""
    h, a = b.h, 0.12 + 0.28 * abs(stride)
    sign = 1 if stride >= 0 else -1
    hip, shoulder = (b.cx - 0.02 * h, b.y(3.6)), (b.cx - 0.04 * h, b.y(1.55))
    legs = [_swing(hip, -sign * a, 1.65 * h, 1.62 * h, -0.25 if sign > 0 else 0.0),
            _swing(hip, sign * a, 1.65 * h, 1.62 * h, -0.25 if sign < 0 else 0.0)]  # fmt: skip
    arms = [_swing(shoulder, sign * a * 0.8, 1.2 * h, 1.1 * h, 0.3),
            _swing(shoulder, -sign * a * 0.8, 1.2 * h, 1.1 * h, 0.3)]  # fmt: skip
    return legs, arms


def _torso(identity: Identity, b: Body) -> list[Point]:
    h, cx, hem = b.h, b.cx, hem_y(identity, b)
    chest = 0.42 if b.man else 0.5
    return [(cx - 0.18 * h, b.y(1.15)), (cx + 0.16 * h, b.y(1.15)), (cx + 0.38 * h, b.y(1.5)), (cx + chest * h, b.y(2.1)),
            (cx + 0.34 * h, b.y(3.0)), (cx + 0.4 * h, hem), (cx - 0.46 * h, hem), (cx - 0.4 * h, b.y(3.0)),
            (cx - 0.48 * h, b.y(1.6)), (cx - 0.34 * h, b.y(1.28))]  # fmt: skip


def _lower(identity: Identity, b: Body, legs: list[list[Point]]) -> list[Shape]:
    h, cx = b.h, b.cx
    if identity.lower_type == "skirt":
        return [
            (
                "poly",
                [
                    (cx - 0.42 * h, b.y(3.0)),
                    (cx + 0.36 * h, b.y(3.0)),
                    (cx + 0.75 * h, b.y(5.05)),
                    (cx - 0.8 * h, b.y(5.05)),
                ],
            )
        ]
    pelvis: Shape = (
        "poly",
        [
            (cx - 0.42 * h, b.y(3.0)),
            (cx + 0.36 * h, b.y(3.0)),
            (cx + 0.4 * h, b.y(3.95)),
            (cx - 0.45 * h, b.y(3.95)),
        ],
    )
    upto = 0.42 if identity.lower_type == "shorts" else 1.0
    width = 0.56 if identity.lower_type == "shorts" else 0.5
    return [pelvis] + [s for leg in legs for s in limb_shapes(leg, width * h, 0.42 * h, 0.34 * h, upto)]


def _shoe(p: Painter, ankle: Point, h: float, colour: tuple[int, int, int]) -> None:
    x, y = ankle
    p.shapes([box(x - 0.2 * h, y - 0.12 * h, x + 0.46 * h, y + 0.26 * h)], colour)


def draw_side(p: Painter, identity: Identity, c: Colours, b: Body, stride: float) -> list[Point]:
    """Far limbs, legs, lower garment, shoes and torso in profile; returns the near arm, drawn later."""
    h = b.h
    legs, arms = side_limbs(b, stride)
    far = 0.78
    upto = 1.0 if identity.upper_type in LONG_SLEEVES else 0.32
    skin_far, upper_far = shade(c.skin, far), shade(c.upper, far)
    p.shapes(limb_shapes(arms[0], 0.36 * h, 0.3 * h, 0.26 * h), skin_far)
    p.shapes(limb_shapes(arms[0], 0.44 * h, 0.36 * h, 0.3 * h, upto), upper_far)
    for leg in legs:
        p.shapes(limb_shapes(leg, 0.44 * h, 0.36 * h, 0.28 * h), skin_far if leg is legs[0] else c.skin)
    lower = _lower(identity, b, legs)
    if identity.lower_type != "skirt":
        far_lower = lower[1 : len(lower) // 2 + 1]
        p.shapes(far_lower, shade(c.lower, far))
        lower = [lower[0], *lower[len(lower) // 2 + 1 :]]
    p.shapes(lower, c.lower)
    _shoe(p, legs[0][2], h, shade(c.shoes, far))
    _shoe(p, legs[1][2], h, c.shoes)
    p.shapes(
        [
            (
                "poly",
                [
                    (b.cx - 0.16 * h, b.y(0.8)),
                    (b.cx + 0.14 * h, b.y(0.8)),
                    (b.cx + 0.16 * h, b.y(1.3)),
                    (b.cx - 0.2 * h, b.y(1.3)),
                ],
            )
        ],
        c.skin,
    )
    if identity.upper_type == "hoodie":
        p.shapes([box(b.cx - 0.55 * h, b.y(0.75), b.cx - 0.05 * h, b.y(1.6))], c.upper)
    p.textured([("poly", _torso(identity, b))], c.upper, identity.upper_pattern, 0.3 * h)
    if identity.upper_type == "jacket":
        p.line_(
            [(b.cx + 0.3 * h, b.y(1.4)), (b.cx + 0.36 * h, hem_y(identity, b))],
            shade(c.upper, 0.55),
            0.05 * h,
        )
    if identity.upper_type == "sweater":
        hem = hem_y(identity, b)
        p.draw.rectangle((b.cx - 0.46 * h, hem - 0.2 * h, b.cx + 0.4 * h, hem), fill=shade(c.upper, 0.8))
    return arms[1]


def near_arm(p: Painter, identity: Identity, c: Colours, b: Body, arm: list[Point]) -> None:
    """The arm on the camera side, drawn last so that it covers the torso (and a backpack)."""
    h = b.h
    upto = 1.0 if identity.upper_type in LONG_SLEEVES else 0.32
    x, y = arm[2]
    p.shapes([box(x - 0.17 * h, y - 0.17 * h, x + 0.17 * h, y + 0.17 * h)], c.skin)
    p.shapes(limb_shapes(arm, 0.38 * h, 0.32 * h, 0.27 * h), c.skin)
    p.textured(limb_shapes(arm, 0.46 * h, 0.38 * h, 0.32 * h, upto), c.upper, identity.upper_pattern, 0.3 * h)
