"""A contact sheet: a grid of sample images with one caption wrapped under each."""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from tasks.data.synth.layout import IMAGES, ImageRecord

TILE_W, IMAGE_H, TEXT_H, COLUMNS = 210, 330, 150, 6


def pick_samples(records: list[ImageRecord], count: int) -> list[ImageRecord]:
    """One image per identity, viewpoints in turn (front, side, back), men and women alternating."""
    by_person: dict[int, list[ImageRecord]] = {}
    for record in records:
        by_person.setdefault(record.person_id, []).append(record)
    chosen: dict[str, list[ImageRecord]] = {"man": [], "woman": []}
    for turn, images in enumerate(by_person.values()):
        wanted = ("front", "side", "back")[turn % 3]
        pick = next((r for r in images if r.attributes.get("viewpoint") == wanted), images[0])
        chosen[str(pick.attributes.get("gender", "man"))].append(pick)
    mixed = [r for pair in zip(chosen["man"], chosen["woman"], strict=False) for r in pair]
    rest = [r for r in chosen["man"] + chosen["woman"] if r not in mixed]
    return (mixed + rest)[:count]


def _tile(out: Path, record: ImageRecord, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> Image.Image:
    tile = Image.new("RGB", (TILE_W, IMAGE_H + TEXT_H), (255, 255, 255))
    with Image.open(out / IMAGES / record.file_path) as image:
        scale = min((TILE_W - 10) / image.width, (IMAGE_H - 10) / image.height)
        shown = image.convert("RGB").resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
        )
    tile.paste(shown, ((TILE_W - shown.width) // 2, 5))
    draw = ImageDraw.Draw(tile)
    label = f"id {record.person_id} · {record.attributes.get('viewpoint', '')} · {record.split}"
    lines = [label, *textwrap.wrap(record.captions[0], width=30)]
    draw.multiline_text((6, IMAGE_H), "\n".join(lines[:9]), fill=(20, 20, 20), font=font, spacing=2)
    return tile


def contact_sheet(out: Path, records: list[ImageRecord], path: Path, count: int = 12) -> Path:
    """Write a grid of `count` samples of the dataset at `out` (their images and captions) to `path`."""
    samples = pick_samples(records, count)
    rows = -(-len(samples) // COLUMNS)
    sheet = Image.new(
        "RGB", (TILE_W * min(COLUMNS, len(samples)), (IMAGE_H + TEXT_H) * rows), (255, 255, 255)
    )
    font = ImageFont.load_default(size=13)
    for i, record in enumerate(samples):
        sheet.paste(_tile(out, record, font), ((i % COLUMNS) * TILE_W, (i // COLUMNS) * (IMAGE_H + TEXT_H)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path
