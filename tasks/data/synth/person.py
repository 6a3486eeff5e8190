"""One whole pedestrian: the drawing order of body, garments, head and bag for each viewpoint."""

from __future__ import annotations

from tasks.data.synth.attributes import Identity
from tasks.data.synth.bags import bag_on_body, handbag
from tasks.data.synth.front import draw_body
from tasks.data.synth.head import hair_behind, hair_over_back, head_front, head_side, headwear
from tasks.data.synth.render import Body, Colours, Painter
from tasks.data.synth.side import draw_side, near_arm


def draw_person(p: Painter, identity: Identity, c: Colours, b: Body, viewpoint: str, stride: float) -> None:
    """Draw `identity` on the painter's canvas; side views face right."""
    if viewpoint == "side":
        hair_behind(p, identity, c, b, side=True)
        arm = draw_side(p, identity, c, b, stride)
        bag_on_body(p, identity, c, b, viewpoint)
        near_arm(p, identity, c, b, arm)
        if identity.bag_type == "handbag":
            handbag(p, c, b, arm[2])
        head_side(p, identity, c, b)
    elif viewpoint == "front":
        hair_behind(p, identity, c, b, side=False)
        arms = draw_body(p, identity, c, b, stride, back=False)
        bag_on_body(p, identity, c, b, viewpoint)
        head_front(p, identity, c, b, back=False)
        if identity.bag_type == "handbag":
            handbag(p, c, b, arms[1][2])
    else:
        draw_body(p, identity, c, b, stride, back=True)
        bag_on_body(p, identity, c, b, viewpoint)
        head_front(p, identity, c, b, back=True)
        hair_over_back(p, identity, c, b)
    headwear(p, identity, c, b, viewpoint)
