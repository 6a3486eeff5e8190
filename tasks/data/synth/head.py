"""Heads: hair (short, medium, long), face, glasses and headwear, from the front, back or side."""

from __future__ import annotations

from tasks.data.synth.attributes import Identity
from tasks.data.synth.render import Body, Colours, Painter, box, shade

EYES = (30, 24, 22)


def hair_behind(p: Painter, identity: Identity, c: Colours, b: Body, side: bool) -> None:
    """Medium or long hair that falls behind the shoulders (drawn before the body)."""
    if identity.hair_length == "short":
        return
    h, cx = b.h, b.cx
    end = b.y(1.5) if identity.hair_length == "medium" else b.y(2.4)
    if side:
        pts = [
            (cx - 0.45 * h, b.y(0.3)),
            (cx + 0.05 * h, b.y(0.3)),
            (cx - 0.1 * h, end),
            (cx - 0.3 * h, end + 0.08 * h),
            (cx - 0.52 * h, end - 0.1 * h),
        ]
    else:
        pts = [(cx - 0.42 * h, b.y(0.35)), (cx + 0.42 * h, b.y(0.35)), (cx + 0.5 * h, b.y(1.3)), (cx + 0.44 * h, end),
               (cx + 0.2 * h, end + 0.1 * h), (cx - 0.2 * h, end + 0.1 * h), (cx - 0.44 * h, end), (cx - 0.5 * h, b.y(1.3))]  # fmt: skip
    p.shapes([("poly", pts)], c.hair)


def hair_over_back(p: Painter, identity: Identity, c: Colours, b: Body) -> None:
    """Seen from the back, medium and long hair cover the nape and the upper back."""
    if identity.hair_length != "short":
        hair_behind(p, identity, c, b, side=False)


def head_front(p: Painter, identity: Identity, c: Colours, b: Body, back: bool) -> None:
    h, cx, y0 = b.h, b.cx, b.y0
    if back:
        p.shapes([box(cx - 0.4 * h, y0 - 0.03 * h, cx + 0.4 * h, y0 + 0.95 * h)], c.hair)
        return
    p.shapes([box(cx - 0.42 * h, y0 + 0.35 * h, cx - 0.3 * h, y0 + 0.7 * h),
              box(cx + 0.3 * h, y0 + 0.35 * h, cx + 0.42 * h, y0 + 0.7 * h)], c.skin)  # fmt: skip
    p.shapes([box(cx - 0.4 * h, y0 - 0.04 * h, cx + 0.4 * h, y0 + 0.72 * h)], c.hair)
    p.shapes([box(cx - 0.34 * h, y0 + 0.2 * h, cx + 0.34 * h, y0 + 1.0 * h)], c.skin)
    fringe = [
        (cx - 0.36 * h, y0 + 0.42 * h),
        (cx - 0.3 * h, y0 + 0.12 * h),
        (cx + 0.3 * h, y0 + 0.12 * h),
        (cx + 0.36 * h, y0 + 0.42 * h),
        (cx + 0.1 * h, y0 + 0.3 * h),
    ]
    p.shapes([("poly", fringe)], c.hair, outline=False)
    if identity.hair_length == "long":
        for side in (-1, 1):
            strand = [(cx + side * 0.26 * h, y0 + 0.25 * h), (cx + side * 0.44 * h, y0 + 0.3 * h),
                      (cx + side * 0.54 * h, b.y(1.9)), (cx + side * 0.42 * h, b.y(2.1)), (cx + side * 0.32 * h, b.y(1.5))]  # fmt: skip
            p.shapes([("poly", strand)], c.hair)
    for side in (-1, 1):
        p.dot((cx + side * 0.14 * h, y0 + 0.58 * h), 0.05 * h, EYES)
    p.line_([(cx - 0.09 * h, y0 + 0.82 * h), (cx + 0.09 * h, y0 + 0.82 * h)], shade(c.skin, 0.65), 0.035 * h)
    if identity.glasses:
        for side in (-1, 1):
            x = cx + side * 0.15 * h
            p.draw.rectangle(
                (x - 0.11 * h, y0 + 0.5 * h, x + 0.11 * h, y0 + 0.66 * h), outline=EYES, width=p.line
            )
        p.line_([(cx - 0.04 * h, y0 + 0.56 * h), (cx + 0.04 * h, y0 + 0.56 * h)], EYES, 0.03 * h)


def head_side(p: Painter, identity: Identity, c: Colours, b: Body) -> None:
    """Facing right: face, nose and eye on the right, hair over the crown and the back."""
    h, cx, y0 = b.h, b.cx, b.y0
    p.shapes([box(cx - 0.36 * h, y0 + 0.05 * h, cx + 0.42 * h, y0 + 1.0 * h)], c.skin)
    p.shapes(
        [
            (
                "poly",
                [
                    (cx + 0.38 * h, y0 + 0.5 * h),
                    (cx + 0.52 * h, y0 + 0.68 * h),
                    (cx + 0.38 * h, y0 + 0.72 * h),
                ],
            )
        ],
        c.skin,
    )
    p.shapes([box(cx - 0.44 * h, y0 - 0.04 * h, cx + 0.36 * h, y0 + 0.68 * h)], c.hair)
    p.shapes(
        [
            (
                "poly",
                [
                    (cx - 0.44 * h, y0 + 0.35 * h),
                    (cx - 0.1 * h, y0 + 0.35 * h),
                    (cx - 0.16 * h, y0 + 0.85 * h),
                    (cx - 0.38 * h, y0 + 0.85 * h),
                ],
            )
        ],
        c.hair,
        outline=False,
    )
    p.shapes([box(cx + 0.0 * h, y0 + 0.22 * h, cx + 0.44 * h, y0 + 0.52 * h)], c.skin, outline=False)
    p.shapes([box(cx - 0.07 * h, y0 + 0.46 * h, cx + 0.03 * h, y0 + 0.64 * h)], shade(c.skin, 0.92))  # ear
    p.dot((cx + 0.27 * h, y0 + 0.56 * h), 0.05 * h, EYES)
    if identity.glasses:
        p.draw.rectangle(
            (cx + 0.21 * h, y0 + 0.5 * h, cx + 0.35 * h, y0 + 0.62 * h), outline=EYES, width=p.line
        )
        p.line_([(cx + 0.19 * h, y0 + 0.54 * h), (cx - 0.04 * h, y0 + 0.52 * h)], EYES, 0.03 * h)


def headwear(p: Painter, identity: Identity, c: Colours, b: Body, view: str) -> None:
    if identity.headwear == "none":
        return
    h, cx, y0, col = b.h, b.cx, b.y0, c.headwear
    if identity.headwear == "cap":
        p.draw.pieslice(
            (cx - 0.43 * h, y0 - 0.1 * h, cx + 0.43 * h, y0 + 0.7 * h),
            180,
            360,
            fill=col,
            outline=shade(col, 0.55),
            width=p.line,
        )
        if view == "front":
            p.shapes([box(cx - 0.44 * h, y0 + 0.2 * h, cx + 0.44 * h, y0 + 0.42 * h)], shade(col, 0.8))
        elif view == "side":
            p.shapes(
                [
                    (
                        "poly",
                        [
                            (cx + 0.25 * h, y0 + 0.24 * h),
                            (cx + 0.82 * h, y0 + 0.32 * h),
                            (cx + 0.25 * h, y0 + 0.38 * h),
                        ],
                    )
                ],
                shade(col, 0.8),
            )
        return
    p.shapes([box(cx - 0.7 * h, y0 + 0.14 * h, cx + 0.7 * h, y0 + 0.36 * h)], shade(col, 0.9))
    p.draw.rounded_rectangle(
        (cx - 0.36 * h, y0 - 0.32 * h, cx + 0.36 * h, y0 + 0.27 * h),
        radius=0.12 * h,
        fill=col,
        outline=shade(col, 0.55),
        width=p.line,
    )
    p.draw.rectangle((cx - 0.36 * h, y0 + 0.08 * h, cx + 0.36 * h, y0 + 0.2 * h), fill=shade(col, 0.6))
