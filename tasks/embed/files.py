"""The files of a user's image folder: found, hashed, and decoded or quarantined with a reason.

Any nested folder of jpg, png, webp or bmp files of any size. A file that cannot become an RGB image
(zero bytes, not an image, truncated, damaged, a decompression bomb, another file type, a symbolic
link) is not embedded: it is listed in the EMB's quarantine with its reason. Hidden files and
folders (a name starting with ".") are skipped.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# The largest image decoded: 64 megapixels (e.g. 8000 x 8000), about 192 MB as RGB. Larger ones are
# refused from their header, before any pixel is decoded (Pillow's own guard is 89 megapixels).
MAX_PIXELS = 64_000_000


@dataclass(frozen=True, order=True)
class FolderFile:
    """One file under the folder: its path relative to it (POSIX), content hash, size, mtime (ordered
    by path first)."""

    path: str
    sha256: str
    size: int
    mtime_ns: int


def scan_folder(folder: Path) -> list[Path]:
    """Every non-hidden file under `folder` (not following symbolic links to folders), sorted by
    relative path: the gallery's row order."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root) / name for name in names if not name.startswith(".")]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def read_file(folder: Path, path: Path) -> tuple[FolderFile, bytes]:
    """(record, bytes) of one file; OSError when it cannot be read."""
    data = b"" if path.is_symlink() else path.read_bytes()
    stat = path.lstat()
    record = FolderFile(
        path=path.relative_to(folder).as_posix(),
        sha256=hashlib.sha256(data).hexdigest(),
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
    )
    return record, data


def open_image(name: str, data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image | str:
    """The RGB image in `data` (the file `name`), or the reason it is quarantined."""
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        return f"not an image file type ({suffix or 'no suffix'}; tbpr reads {', '.join(IMAGE_SUFFIXES)})"
    if not data:
        return "empty file (0 bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    return f"decompression bomb ({width} x {height} = {width * height:,} pixels > {max_pixels:,})"
                image.load()  # every pixel decoded now: a truncated file fails here
                return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"decompression bomb ({exc})"
    except UnidentifiedImageError:
        return "not an image (Pillow cannot identify its contents)"
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return f"truncated or damaged image ({str(exc).strip() or type(exc).__name__})"
