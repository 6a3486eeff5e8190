"""Image checks: read the file once, verify and fully decode it, report size or the reason it fails.

The checks run in a small thread pool (`ordered_map`): file reads, hashing and zlib release the GIL,
and a bounded window of results in flight keeps memory flat however large the dataset is.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from PIL import Image, UnidentifiedImageError

from tasks.data.prepare.validate import Reason

T = TypeVar("T")
R = TypeVar("R")
UNREADABLE_DIGEST = b"unreadable"


@dataclass(frozen=True)
class ImageCheck:
    """The outcome for one file: its bytes and size when usable, else the reason; always a digest."""

    digest: bytes  # sha256 of the bytes, or UNREADABLE_DIGEST: part of the dataset's content hash
    data: bytes | None = None
    height: int = 0
    width: int = 0
    reason: str | None = None


def read_file(path: Path, *, max_bytes: int | None = None, follow_symlinks: bool = True) -> bytes | Reason:
    """The file's bytes, or why it cannot be read. Only regular files are opened: a FIFO or a device
    named by a record would block the read or never end. With `max_bytes`, a larger file is refused
    (`Reason.TOO_LARGE`) from its size, and the read stops one byte past the bound (a file that grows
    while it is read, a sparse or device-like one); with `follow_symlinks=False` a symbolic link is
    `Reason.SYMLINK` and is never opened."""
    try:
        mode = (path.stat() if follow_symlinks else path.lstat()).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return Reason.MISSING_FILE
    except RuntimeError:
        return Reason.SYMLINK_LOOP
    except OSError as exc:
        return Reason.SYMLINK_LOOP if exc.errno == errno.ELOOP else Reason.UNREADABLE_FILE
    if stat.S_ISLNK(mode):
        return Reason.SYMLINK
    if stat.S_ISDIR(mode):
        return Reason.MISSING_FILE
    if not stat.S_ISREG(mode):
        return Reason.NOT_A_FILE
    flags = os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        with open(path, "rb", opener=lambda p, f: os.open(p, f | flags)) as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # replaced since the stat
                return Reason.NOT_A_FILE
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return Reason.MISSING_FILE
    except OSError as exc:
        return Reason.SYMLINK if exc.errno == errno.ELOOP and not follow_symlinks else Reason.UNREADABLE_FILE
    return Reason.TOO_LARGE if max_bytes is not None and len(data) > max_bytes else data


def file_digest(path: Path) -> bytes:
    """The digest `check_image` reports for this file, without decoding it."""
    data = read_file(path)
    return UNREADABLE_DIGEST if isinstance(data, Reason) else hashlib.sha256(data).digest()


def decode_size(data: bytes) -> tuple[int, int] | Reason:
    """(height, width) of fully decodable image bytes, or the reason they are not usable.

    Any exception while identifying the bytes means "not an image"; any exception while verifying
    (PNG chunk checksums, the end marker) or decoding every pixel means "truncated or corrupt".
    Untrusted bytes can make a decoder raise almost anything, hence the broad `except`.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except UnidentifiedImageError:
        return Reason.NOT_AN_IMAGE
    except Exception:
        return Reason.TRUNCATED
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.height, image.width
    except Exception:
        return Reason.TRUNCATED


def check_image(path: Path) -> ImageCheck:
    """Read, hash, verify and decode one image file."""
    data = read_file(path)
    if isinstance(data, Reason):
        return ImageCheck(UNREADABLE_DIGEST, reason=data.value)
    digest = hashlib.sha256(data).digest()
    if not data:
        return ImageCheck(digest, reason=Reason.ZERO_BYTE.value)
    size = decode_size(data)
    if isinstance(size, Reason):
        return ImageCheck(digest, reason=size.value)
    return ImageCheck(digest, data=data, height=size[0], width=size[1])


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, window: int = 64) -> Iterator[R]:
    """`fn` over `items` in a thread pool, results in input order, at most `window` in flight."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tbpr-image") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
