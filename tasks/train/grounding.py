"""Attention grounding, measured: for caption words that name a visible part or its colour, how often
the word's attention peak over the regions of its own image falls inside that part's box (pointing
accuracy, as in Zhang et al.'s pointing game), beside the chance of a uniformly random region.

Regions are the cells of the image encoder's grid (h x w) over the whole resized image, so a region's
centre in image fractions is ((col + 0.5) / w, (row + 0.5) / h).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tasks.data.parts import part_words
from tasks.data.reader import SplitData
from tbpr_models import RetrievalModel, Tokenizer
from tbpr_models.features import ImageFeatures, TextFeatures

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of width and height


@dataclass(frozen=True)
class Grounding:
    accuracy: float  # percent of grounded words whose attention peak lies in their part's box
    chance: float  # percent expected from a uniformly random region
    words: int  # grounded words measured

    def metrics(self) -> dict[str, float]:
        return {
            "grounding": self.accuracy,
            "grounding_chance": self.chance,
            "grounding_words": float(self.words),
        }


def region_centres(grid: tuple[int, int]) -> Tensor:
    """(N, 2) centre (x, y) of each region in image fractions, row-major like the encoders' tokens."""
    h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([(cols.flatten() + 0.5) / w, (rows.flatten() + 0.5) / h], dim=1)


def inside(centres: Tensor, box: Box) -> Tensor:
    """(N,) bool: which centres lie in `box` (x0 <= x < x1, y0 <= y < y1)."""
    x0, y0, x1, y1 = box
    x, y = centres[:, 0], centres[:, 1]
    return (x >= x0) & (x < x1) & (y >= y0) & (y < y1)


def pointing(attention: Tensor, grid: tuple[int, int], targets: list[tuple[int, Box]]) -> tuple[int, float]:
    """(hits, expected hits by chance) of one caption: `attention` (L, N) word x region weights,
    `targets` (token index, box of the part it names)."""
    centres = region_centres(grid)
    hits, chance = 0, 0.0
    for token, box in targets:
        in_box = inside(centres, box)
        hits += int(in_box[int(attention[token].argmax())])
        chance += float(in_box.float().mean())
    return hits, chance


def token_targets(text: str, tokenizer: Tokenizer, boxes: dict[str, Box]) -> list[tuple[int, Box]]:
    """(first token index of the word, its part's box) for the words of `text` that name a part
    drawn in this image (a part without a box is not visible and is skipped)."""
    encoding = tokenizer.backend(
        text, truncation=True, max_length=tokenizer.max_length, return_offsets_mapping=True
    )
    offsets = encoding["offset_mapping"]
    targets = []
    for start, end, part in part_words(text):
        if part not in boxes:
            continue
        tokens = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
        if tokens:
            targets.append((tokens[0], boxes[part]))
    return targets


@torch.inference_mode()
def measure_grounding(
    model: RetrievalModel,
    split: SplitData,
    texts: TextFeatures,
    images: ImageFeatures,
    tokenizer: Tokenizer,
    boxes: dict[int, dict[str, Box]],
) -> Grounding | None:
    """Pointing accuracy of `model`'s word-to-region attention over the captions of `split` (features
    `texts`, `images` in split order) against their own images; None when the head has no such
    attention or no image of the split has part boxes."""
    grid = model.image_encoder.grid
    hits, chance, words = 0, 0.0, 0
    for q, text in enumerate(split.texts):
        g = int(split.caption_image[q])
        image_boxes = boxes.get(int(split.image_ids[g]))
        if not image_boxes:
            continue
        targets = token_targets(text, tokenizer, image_boxes)
        if not targets:
            continue
        attention = model.head.word_region_attention(
            texts.select(slice(q, q + 1)), images.select(slice(g, g + 1))
        )
        if attention is None:
            return None
        h, c = pointing(attention.float().cpu(), grid, targets)
        hits, chance, words = hits + h, chance + c, words + len(targets)
    if words == 0:
        return None
    return Grounding(100.0 * hits / words, 100.0 * chance / words, words)
