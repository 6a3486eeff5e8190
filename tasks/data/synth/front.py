"""A pedestrian seen from the front or the back (the same silhouette, different details)."""

from __future__ import annotations

from tasks.data.synth.attributes import Identity
from tasks.data.synth.render import Body, Colours, Painter, Point, Shape, box, disc, quad, shade

LONG_SLEEVES = {"shirt", "jacket", "sweater", "hoodie"}


def hem_y(identity: Identity, b: Body) -> float:
    return b.y(3.8) if identity.upper_type in {"jacket", "hoodie"} else b.y(3.55)


def _legs(b: Body, stride: float) -> tuple[list[Point], list[Point]]:
    """Hip, knee and ankle of the left and right leg (image left/right)."""
    lift = abs(stride) * 0.12 * b.h
    legs = []
    for side, up in ((-1, lift if stride > 0 else 0.0), (1, lift if stride <= 0 else 0.0)):
        x = b.cx + side * b.hw * 0.5
        legs.append(
            [(x, b.y(3.6)), (x + side * 0.03 * b.h, b.y(5.2) - up), (x + side * 0.06 * b.h, b.y(6.85) - up)]
        )
    return legs[0], legs[1]


def _arms(b: Body, stride: float) -> tuple[list[Point], list[Point]]:
    """Shoulder, elbow, wrist of the left and right arm."""
    arms = []
    for side in (-1, 1):
        swing = side * stride * 0.1 * b.h
        sx = b.cx + side * (b.sw - 0.2 * b.h)
        arms.append(
            [(sx, b.y(1.55)), (sx + side * 0.22 * b.h, b.y(2.75)), (sx + side * 0.2 * b.h + swing, b.y(3.85))]
        )
    return arms[0], arms[1]


def limb_shapes(joints: list[Point], w0: float, w1: float, w2: float, upto: float = 1.0) -> list[Shape]:
    """Upper and lower segments of a limb; `upto` < 1 cuts it (short sleeves, shorts)."""
    (a, k, c), shapes = joints, []
    if upto <= 0.5:
        t = upto / 0.5
        end = (a[0] + (k[0] - a[0]) * t, a[1] + (k[1] - a[1]) * t)
        return [("poly", quad(a, end, w0, w0 * (1 - t) + w1 * t)), disc(a, w0 / 2)]
    shapes = [("poly", quad(a, k, w0, w1)), disc(a, w0 / 2), disc(k, w1 / 2)]
    t = (upto - 0.5) / 0.5
    end = (k[0] + (c[0] - k[0]) * t, k[1] + (c[1] - k[1]) * t)
    shapes.append(("poly", quad(k, end, w1, w1 * (1 - t) + w2 * t)))
    return shapes


def _torso(identity: Identity, b: Body) -> list[Point]:
    h, cx, hem = b.h, b.cx, hem_y(identity, b)
    right = [(cx + 0.28 * h, b.y(1.18)), (cx + b.sw, b.y(1.45)), (cx + b.sw - 0.12 * h, b.y(2.1)),
             (cx + b.ww, b.y(3.0)), (cx + b.hw * 1.03, hem)]  # fmt: skip
    return right + [(2 * cx - x, y) for x, y in reversed(right)]


def _lower(identity: Identity, b: Body, legs: tuple[list[Point], list[Point]]) -> list[Shape]:
    h, cx = b.h, b.cx
    pelvis: Shape = ("poly", [(cx - b.ww, b.y(3.0)), (cx + b.ww, b.y(3.0)), (cx + b.hw, b.y(3.55)),
                              (cx + b.hw * 0.95, b.y(4.0)), (cx - b.hw * 0.95, b.y(4.0)), (cx - b.hw, b.y(3.55))])  # fmt: skip
    if identity.lower_type == "skirt":
        flare = b.hw * 1.5
        return [
            (
                "poly",
                [
                    (cx - b.ww, b.y(3.0)),
                    (cx + b.ww, b.y(3.0)),
                    (cx + flare, b.y(5.05)),
                    (cx - flare, b.y(5.05)),
                ],
            )
        ]
    upto = 0.42 if identity.lower_type == "shorts" else 1.0
    width = 0.52 if identity.lower_type == "shorts" else 0.48
    return [pelvis] + [s for leg in legs for s in limb_shapes(leg, width * h, 0.4 * h, 0.32 * h, upto)]


def draw_body(
    p: Painter, identity: Identity, c: Colours, b: Body, stride: float, back: bool
) -> list[list[Point]]:
    """Legs, lower garment, shoes, arms, upper garment and neck (front or back); returns the arms."""
    h = b.h
    legs, arms = _legs(b, stride), _arms(b, stride)
    p.shapes([s for leg in legs for s in limb_shapes(leg, 0.42 * h, 0.34 * h, 0.26 * h)], c.skin)
    p.shapes(_lower(identity, b, legs), c.lower)
    if identity.lower_type == "jeans":
        for leg in legs:
            p.line_([leg[0], leg[1], leg[2]], shade(c.lower, 1.35), 0.04 * h)
    for leg in legs:
        x, y = leg[2]
        p.shapes([box(x - 0.27 * h, y - 0.1 * h, x + 0.27 * h, y + 0.3 * h)], c.shoes)
    p.shapes([disc(arm[2], 0.17 * h) for arm in arms], c.skin)
    p.shapes([s for arm in arms for s in limb_shapes(arm, 0.4 * h, 0.34 * h, 0.28 * h)], c.skin)
    p.shapes([("poly", quad((b.cx, b.y(0.8)), (b.cx, b.y(1.35)), 0.32 * h, 0.36 * h))], c.skin, outline=False)
    if identity.upper_type == "hoodie" and not back:
        p.shapes([box(b.cx - 0.52 * h, b.y(0.6), b.cx + 0.52 * h, b.y(1.45))], c.upper)
    upto = 1.0 if identity.upper_type in LONG_SLEEVES else 0.32
    sleeves = [s for arm in arms for s in limb_shapes(arm, 0.48 * h, 0.4 * h, 0.32 * h, upto)]
    p.textured([*sleeves, ("poly", _torso(identity, b))], c.upper, identity.upper_pattern, 0.3 * h)
    _upper_details(p, identity, c, b, back)
    return list(arms)


def _upper_details(p: Painter, identity: Identity, c: Colours, b: Body, back: bool) -> None:
    h, cx, hem, kind = b.h, b.cx, hem_y(identity, b), identity.upper_type
    dark = shade(c.upper, 0.6)
    if back:
        if kind == "hoodie":
            p.shapes([box(cx - 0.48 * h, b.y(1.0), cx + 0.48 * h, b.y(1.95))], shade(c.upper, 0.85))
        elif kind == "jacket":
            p.line_([(cx, b.y(1.3)), (cx, hem)], dark, 0.04 * h)
        return
    if kind == "t-shirt" or kind == "sweater":
        p.shapes([box(cx - 0.2 * h, b.y(1.0), cx + 0.2 * h, b.y(1.35))], c.skin, outline=False)
    if kind == "sweater":
        p.shapes([("poly", [(cx - b.hw, hem - 0.2 * h), (cx + b.hw, hem - 0.2 * h), (cx + b.hw * 1.03, hem),
                            (cx - b.hw * 1.03, hem)])], shade(c.upper, 0.8))  # fmt: skip
    if kind == "jacket":
        inner = (235, 235, 230) if sum(c.upper) < 300 else (40, 40, 44)
        p.shapes(
            [
                (
                    "poly",
                    [
                        (cx - 0.2 * h, b.y(1.15)),
                        (cx + 0.2 * h, b.y(1.15)),
                        (cx + 0.1 * h, hem),
                        (cx - 0.1 * h, hem),
                    ],
                )
            ],
            inner,
        )
        for side in (-1, 1):
            lapel = [
                (cx + side * 0.3 * h, b.y(1.12)),
                (cx + side * 0.1 * h, b.y(2.0)),
                (cx + side * 0.42 * h, b.y(1.6)),
            ]
            p.shapes([("poly", lapel)], shade(c.upper, 0.8))
    if kind == "shirt":
        for side in (-1, 1):
            p.shapes(
                [
                    (
                        "poly",
                        [(cx, b.y(1.3)), (cx + side * 0.3 * h, b.y(1.1)), (cx + side * 0.26 * h, b.y(1.45))],
                    )
                ],
                shade(c.upper, 1.15),
            )
        for i in range(5):
            p.dot((cx, b.y(1.55 + i * 0.42)), 0.045 * h, dark)
    if kind == "hoodie":
        for side in (-1, 1):
            p.line_(
                [(cx + side * 0.12 * h, b.y(1.3)), (cx + side * 0.14 * h, b.y(1.95))],
                (235, 235, 235),
                0.04 * h,
            )
        p.shapes(
            [
                (
                    "poly",
                    [
                        (cx - 0.5 * h, b.y(2.95)),
                        (cx + 0.5 * h, b.y(2.95)),
                        (cx + 0.6 * h, b.y(3.5)),
                        (cx - 0.6 * h, b.y(3.5)),
                    ],
                )
            ],
            c.upper,
        )
