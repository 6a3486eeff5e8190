"""Reading a gallery image for the web service without leaving the gallery: every path component is
opened relative to its parent with O_NOFOLLOW (a symbolic link anywhere, or `..`, is refused, however
the folder changed since it was embedded), only a regular file is read, never more than its recorded
size, and its bytes must still be the ones embedded.

The errors are `TbprError`s carrying the HTTP status the service answers with: 404 for a file that is
gone or is no longer a regular file inside the gallery, 409 for one whose bytes changed since the embed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import PurePosixPath

from tasks.core.errors import TbprError


class ServeError(TbprError):
    """A request the service refuses with `status` (4xx) and this message."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def gone(path: str, why: str) -> ServeError:
    return ServeError(f"{path!r} cannot be served: {why}", 404)


_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: opening a FIFO put in the folder must not wait for a writer
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def read_inside(folder: str, path: str, size: int, sha256: str) -> bytes:
    """The bytes of `folder/path` (`path` relative, POSIX), which must be a regular file of `size` bytes
    with this sha256, reached without following any symbolic link; a `ServeError` otherwise."""
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise gone(path, "not a path inside the gallery")
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise gone(path, f"the gallery folder {folder} cannot be opened ({exc.strerror})") from exc
    for part in parts[:-1]:
        fd = _step(fd, part, _DIR_FLAGS, path)  # closes the parent, whatever happens
    fd = _step(fd, parts[-1], _FILE_FLAGS, path)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise gone(path, "no longer a regular file")
        if info.st_size != size:
            raise _changed(path)
        data = _read(fd, size + 1)  # one byte more than recorded: a file that grew meanwhile shows it
    finally:
        os.close(fd)
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
        raise _changed(path)
    return data


def _step(parent: int, name: str, flags: int, path: str) -> int:
    """Open `name` inside the folder `parent` (closed here), refusing a symbolic link."""
    try:
        return os.open(name, flags, dir_fd=parent)
    except FileNotFoundError as exc:
        raise gone(path, "the file was removed since the gallery was embedded") from exc
    except OSError as exc:  # ELOOP: a symbolic link; ENOTDIR: a file where a folder was; EACCES
        raise gone(path, f"not a regular file inside the gallery ({exc.strerror})") from exc
    finally:
        os.close(parent)


def _read(fd: int, limit: int) -> bytes:
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _changed(path: str) -> ServeError:
    return ServeError(
        f"{path!r} changed since the gallery was embedded; re-run `tbpr embed --images` on its folder "
        "(a running `tbpr serve` picks the new embedding up)",
        409,
    )
