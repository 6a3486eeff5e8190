"""Bags: a backpack (seen from the back or side; only its straps from the front), a handbag held in
one hand (front or side), a shoulder bag on a diagonal strap (every view)."""

from __future__ import annotations

from tasks.data.synth.attributes import Identity
from tasks.data.synth.render import Body, Colours, Painter, Point, quad, shade


def backpack(p: Painter, c: Colours, b: Body, viewpoint: str) -> None:
    h, cx, col = b.h, b.cx, c.bag
    dark = shade(col, 0.6)
    if viewpoint == "front":
        for side in (-1, 1):
            x = cx + side * 0.55 * h
            p.shapes(
                [("poly", quad((x, b.y(1.3)), (x - side * 0.05 * h, b.y(2.7)), 0.17 * h, 0.15 * h))], col
            )
        return
    if viewpoint == "back":
        w = 0.66 * h * (b.sw / h)
        p.draw.rounded_rectangle(
            (cx - w, b.y(1.55), cx + w, b.y(3.35)), radius=0.25 * h, fill=col, outline=dark, width=p.line
        )
        p.draw.rounded_rectangle(
            (cx - w * 0.75, b.y(2.55), cx + w * 0.75, b.y(3.22)),
            radius=0.15 * h,
            fill=shade(col, 0.85),
            outline=dark,
            width=p.line,
        )
        p.draw.arc((cx - 0.2 * h, b.y(1.35), cx + 0.2 * h, b.y(1.75)), 180, 360, fill=dark, width=p.line * 2)
        return
    p.draw.rounded_rectangle(
        (cx - 1.02 * h, b.y(1.55), cx - 0.32 * h, b.y(3.3)),
        radius=0.22 * h,
        fill=col,
        outline=dark,
        width=p.line,
    )
    p.draw.rounded_rectangle(
        (cx - 1.12 * h, b.y(2.5), cx - 0.8 * h, b.y(3.15)),
        radius=0.1 * h,
        fill=shade(col, 0.85),
        outline=dark,
        width=p.line,
    )
    p.shapes([("poly", quad((cx - 0.3 * h, b.y(1.35)), (cx + 0.3 * h, b.y(1.75)), 0.15 * h, 0.15 * h))], col)


def handbag(p: Painter, c: Colours, b: Body, hand: Point) -> None:
    h, (x, y), col = b.h, hand, c.bag
    p.draw.arc(
        (x - 0.22 * h, y - 0.1 * h, x + 0.22 * h, y + 0.5 * h),
        180,
        360,
        fill=shade(col, 0.6),
        width=p.line * 2,
    )
    body = [
        (x - 0.3 * h, y + 0.22 * h),
        (x + 0.3 * h, y + 0.22 * h),
        (x + 0.4 * h, y + 0.85 * h),
        (x - 0.4 * h, y + 0.85 * h),
    ]
    p.shapes([("poly", body)], col)
    p.draw.line((x - 0.34 * h, y + 0.4 * h, x + 0.34 * h, y + 0.4 * h), fill=shade(col, 0.7), width=p.line)


def shoulder_bag(p: Painter, c: Colours, b: Body, viewpoint: str) -> None:
    h, cx, col = b.h, b.cx, c.bag
    side = -1 if viewpoint == "back" else 1
    if viewpoint == "side":
        top, hip = (cx - 0.1 * h, b.y(1.3)), (cx + 0.15 * h, b.y(3.3))
        bag = (cx - 0.2 * h, b.y(3.1), cx + 0.5 * h, b.y(3.8))
    else:
        top, hip = (cx - side * (b.sw - 0.25 * h), b.y(1.3)), (cx + side * b.hw, b.y(3.3))
        x = cx + side * (b.hw + 0.2 * h)
        bag = (x - 0.36 * h, b.y(3.1), x + 0.36 * h, b.y(3.8))
    p.line_([top, hip], shade(col, 0.75), 0.1 * h)
    p.draw.rounded_rectangle(bag, radius=0.08 * h, fill=col, outline=shade(col, 0.55), width=p.line)
    p.draw.line((bag[0], bag[1] + 0.25 * h, bag[2], bag[1] + 0.25 * h), fill=shade(col, 0.6), width=p.line)


def bag_on_body(p: Painter, identity: Identity, c: Colours, b: Body, viewpoint: str) -> None:
    """The bag parts that lie on the torso (drawn after it, before the head and near arm)."""
    if identity.bag_type == "backpack":
        backpack(p, c, b, viewpoint)
    elif identity.bag_type == "shoulder bag":
        shoulder_bag(p, c, b, viewpoint)
