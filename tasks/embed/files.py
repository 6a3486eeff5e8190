"""The files of a user's image folder: found, hashed, and decoded or quarantined with a reason.

Any nested folder of jpg, png, webp or bmp files of any size. An entry that cannot become an RGB image
(zero bytes, not an image, truncated, damaged, a decompression bomb, another file type, a symbolic
link to a file or a folder, a FIFO or device, a file over `MAX_FILE_BYTES`, a folder that cannot be
listed) is not embedded: it is listed in the EMB's quarantine with its reason. Only regular files
with an image suffix are ever opened, without following links and by a read bounded by
`MAX_FILE_BYTES` (prepare's guarded `read_file`); others are quarantined from their name and `lstat`
alone (their sha256 is then empty). Hidden files and folders (a name starting with ".") are skipped.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from tasks.data.prepare.images import read_file as read_regular_file
from tasks.data.prepare.validate import Reason

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# The largest image decoded: 64 megapixels (e.g. 8000 x 8000), about 192 MB as RGB. Larger ones are
# refused from their header, before any pixel is decoded (Pillow's own guard is 89 megapixels).
MAX_PIXELS = 64_000_000
# The largest file read: 256 MiB (a 64-megapixel BMP is 192 MB); larger ones are refused from lstat.
MAX_FILE_BYTES = 256 * 2**20
SYMLINK_REASON = "symbolic link (not followed: only files inside the folder are embedded)"


@dataclass(frozen=True, order=True)
class FolderFile:
    """One file under the folder: its path relative to it (POSIX), content hash ("" when it was not
    read), size, mtime (ordered by path first)."""

    path: str
    sha256: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Scan:
    """What `scan_folder` found: every non-hidden entry that is not a folder (files, links to files or
    folders, FIFOs, devices) in gallery row order, and the folders it could not list, with why."""

    entries: list[Path]
    unlisted: list[tuple[Path, str]]


def scan_folder(folder: Path) -> Scan:
    """Every non-hidden entry under `folder` (links to folders are entries, never followed), sorted by
    relative path; a folder `os.walk` cannot list is reported, not skipped."""
    found: list[Path] = []
    unlisted: list[tuple[Path, str]] = []

    def failed(exc: OSError) -> None:
        unlisted.append(
            (Path(exc.filename), f"unreadable folder ({exc.strerror or exc}): its files are not embedded")
        )

    for root, dirs, names in os.walk(folder, onerror=failed):
        linked = [d for d in dirs if (Path(root) / d).is_symlink()]  # os.walk lists them, never enters
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in linked]
        found += [Path(root) / name for name in names + linked if not name.startswith(".")]
    return Scan(sorted(found, key=lambda p: p.relative_to(folder).as_posix()), unlisted)


def unlisted_record(folder: Path, path: Path) -> FolderFile:
    """The quarantine record of a folder that could not be listed (its path ends with "/")."""
    try:
        mtime = path.lstat().st_mtime_ns
    except OSError:
        mtime = 0
    relative = path.relative_to(folder).as_posix() if path != folder else "."
    return FolderFile(relative + "/", "", 0, mtime)


def read_file(folder: Path, path: Path, max_bytes: int = MAX_FILE_BYTES) -> tuple[FolderFile, bytes | str]:
    """(record, bytes | the reason it is quarantined) of one entry. Its name and `lstat` come first: a
    link, a non-image suffix, a FIFO or device, a file over `max_bytes` is never opened; a regular
    image file is read once, bounded, without following a link swapped in since."""
    relative = path.relative_to(folder).as_posix()
    try:
        info = path.lstat()
    except OSError as exc:
        return FolderFile(relative, "", 0, 0), f"unreadable file ({exc.strerror or exc})"
    record = FolderFile(relative, "", info.st_size, info.st_mtime_ns)
    suffix = path.suffix.lower()
    if stat.S_ISLNK(info.st_mode):
        return record, SYMLINK_REASON
    if suffix not in IMAGE_SUFFIXES:
        return record, _suffix_reason(suffix)
    if not stat.S_ISREG(info.st_mode):
        return record, f"not a regular file ({_kind(info.st_mode)}; only regular files are read)"
    if info.st_size > max_bytes:
        return record, f"file too large ({info.st_size:,} bytes > {max_bytes:,})"
    data = read_regular_file(path, max_bytes=max_bytes, follow_symlinks=False)
    if isinstance(data, Reason):
        reasons = {
            Reason.SYMLINK: SYMLINK_REASON,
            Reason.TOO_LARGE: f"file too large (> {max_bytes:,} bytes)",
        }
        return record, reasons.get(
            data, f"{data.value} (changed while read)" if data is Reason.NOT_A_FILE else data.value
        )
    return FolderFile(relative, hashlib.sha256(data).hexdigest(), len(data), info.st_mtime_ns), data


def _suffix_reason(suffix: str) -> str:
    return f"not an image file type ({suffix or 'no suffix'}; tbpr reads {', '.join(IMAGE_SUFFIXES)})"


def _kind(mode: int) -> str:
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
    return next((name for test, name in kinds.items() if test(mode)), "a socket or other special file")


def open_image(name: str, data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image | str:
    """The RGB image in `data` (the file `name`), or the reason it is quarantined."""
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        return _suffix_reason(suffix)
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
