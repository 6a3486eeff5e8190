"""`write_image_folder(root)`: a user's image folder built with Pillow (nested folders; jpg, png, webp,
bmp; sizes from 20 x 30 to 900 x 1200) plus files that must be quarantined, and their reasons."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw

GOOD = {
    "cam1/a.jpg": ("JPEG", (40, 90), "red"),
    "cam1/b.png": ("PNG", (900, 1200), "blue"),
    "cam1/deep/c.webp": ("WEBP", (64, 128), "green"),
    "cam2/d.bmp": ("BMP", (20, 30), "yellow"),
    "cam2/e.JPEG": ("JPEG", (300, 200), "white"),
    "f.png": ("PNG", (48, 96), "black"),
}
BAD = {  # path -> the start of its quarantine reason
    "bad/empty.png": "empty file",
    "bad/text.jpg": "not an image",
    "bad/truncated.png": "truncated or damaged",
    "bad/bomb.png": "decompression bomb",
    "notes.txt": "not an image file type",
}


def person(size: tuple[int, int], colour: str, seed: int = 0) -> Image.Image:
    """A figure: a head and a body of `colour` on grey, scaled to `size` (width, height)."""
    width, height = size
    image = Image.new("RGB", size, (120 + seed % 50, 120, 120))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.35, height * 0.05, width * 0.65, height * 0.2), fill=(230, 190, 160))
    draw.rectangle((width * 0.25, height * 0.22, width * 0.75, height * 0.95), fill=colour)
    return image


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 1-bit grey PNG whose header claims width x height pixels (10 gigapixels), 100 bytes on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def save(root: Path, rel: str, fmt: str, size: tuple[int, int], colour: str, seed: int = 0) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    person(size, colour, seed).save(path, format=fmt)
    return path


def write_image_folder(root: Path) -> Path:
    for rel, (fmt, size, colour) in GOOD.items():
        save(root, rel, fmt, size, colour)
    (root / "bad").mkdir(parents=True, exist_ok=True)
    (root / "bad/empty.png").write_bytes(b"")
    (root / "bad/text.jpg").write_text("this is not a picture\n")
    whole = (root / "f.png").read_bytes()
    (root / "bad/truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "bad/bomb.png").write_bytes(bomb_png())
    (root / "notes.txt").write_text("camera notes\n")
    (root / ".hidden").mkdir()
    (root / ".hidden/skipped.png").write_bytes(whole)
    return root
