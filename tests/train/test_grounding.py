"""Attention grounding: which words name which part, where the synthetic renderer drew each part, and the
pointing accuracy of hand-made attention maps."""

from __future__ import annotations

import pytest
import torch

from tasks.data.parts import part_words
from tasks.data.synth.attributes import identity_at, identity_rng
from tasks.data.synth.scene import part_boxes, render_image
from tasks.data.synth.views import sample_views
from tasks.train.grounding import inside, pointing, region_centres, token_targets
from tbpr_models import TextEncoderConfig, build_tokenizer


def _named(text: str) -> list[tuple[str, str]]:
    return [(text[a:b], part) for a, b, part in part_words(text)]


def test_part_words_name_parts_and_their_colours() -> None:
    assert _named("A man in a red jacket and blue jeans.") == [
        ("red", "upper"), ("jacket", "upper"), ("blue", "lower"), ("jeans", "lower"),
    ]  # fmt: skip
    assert _named("Her skirt is black. She has long blonde hair.") == [
        ("skirt", "lower"), ("black", "lower"), ("blonde", "hair"), ("hair", "hair"),
    ]  # fmt: skip
    assert _named("The pedestrian is walking slowly") == []  # nothing names a part
    assert _named("white sneakers, a grey backpack and a cap") == [
        ("white", "shoes"), ("sneakers", "shoes"), ("grey", "bag"), ("backpack", "bag"), ("cap", "headwear"),
    ]  # fmt: skip


def test_pointing_counts_peaks_inside_the_box_and_the_chance_of_a_random_region() -> None:
    grid = (4, 2)  # 8 regions, centres at x in {0.25, 0.75}, y in {0.125, 0.375, 0.625, 0.875}
    centres = region_centres(grid)
    assert centres[0].tolist() == [0.25, 0.125] and centres[7].tolist() == [0.75, 0.875]
    top_half = (0.0, 0.0, 1.0, 0.5)  # regions 0..3
    bottom_right = (0.5, 0.5, 1.0, 1.0)  # regions 5 and 7
    assert inside(centres, top_half).nonzero().flatten().tolist() == [0, 1, 2, 3]
    attention = torch.zeros(3, 8)
    attention[0, 2] = 1.0  # word 0 peaks in the top half: a hit
    attention[1, 4] = 0.9  # word 1 peaks at region 4 (bottom left): a miss for the bottom-right box
    attention[1, 5] = 0.1
    attention[2, 7] = 0.6  # word 2 peaks at region 7: a hit
    hits, chance = pointing(attention, grid, [(0, top_half), (1, bottom_right), (2, bottom_right)])
    assert hits == 2
    assert chance == pytest.approx(4 / 8 + 2 / 8 + 2 / 8)


def test_token_targets_point_at_the_first_word_piece_of_each_part_word() -> None:
    tokenizer = build_tokenizer(TextEncoderConfig(max_length=32))
    boxes = {"upper": (0.0, 0.2, 1.0, 0.5), "hair": (0.0, 0.0, 1.0, 0.2)}
    text = "a woman in a red jacket with a rucksack"
    targets = token_targets(text, tokenizer, boxes)
    tokens = tokenizer.backend.convert_ids_to_tokens(tokenizer.backend(text)["input_ids"])
    assert [(tokens[i], box) for i, box in targets] == [("red", boxes["upper"]), ("jacket", boxes["upper"])]
    # the bag is named but has no box (not visible in this image): not measured


@pytest.mark.parametrize("index", [0, 3, 11])
def test_synthetic_part_boxes_follow_the_body(index: int) -> None:
    identity = identity_at(0, index)
    view = sample_views(identity, identity_rng(0, index, "views"))[0]
    image = render_image(identity, view)
    boxes = part_boxes(identity, view, image)
    assert {"hair", "upper", "lower"} <= set(boxes)
    assert ("bag" in boxes) <= (identity.bag_type != "none")
    for x0, y0, x1, y1 in boxes.values():
        assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
    centre = {part: (box[1] + box[3]) / 2 for part, box in boxes.items()}
    assert centre["hair"] < centre["upper"] < centre["lower"]  # head above torso above legs
    if "shoes" in boxes:
        assert centre["lower"] < centre["shoes"]
