"""File access shared by the metadata readers and discovery."""

from __future__ import annotations

import io
import os
import stat

from tui.errors import MetadataError

_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_BINARY", 0)
)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def open_regular(path: str | os.PathLike[str]) -> io.FileIO:
    """Open a regular file (or a symlink to one) for reading; anything else raises
    :class:`MetadataError` without being opened.

    A FIFO named like a model would hang the caller and opening a device can have effects, so
    the path is checked with ``stat`` first; it is then opened with ``O_NONBLOCK`` and checked
    again with ``fstat`` (same file, still regular) in case it was swapped in between.
    """
    label = os.fspath(path)
    before = os.stat(path)
    if not stat.S_ISREG(before.st_mode):
        raise MetadataError(f"{label}: {_kind(before.st_mode)}, not a regular file")
    fd = os.open(path, _FLAGS)
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (
            before.st_dev,
            before.st_ino,
        ):
            raise MetadataError(f"{label}: changed while being opened, not read")
        return io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def is_regular_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file or a symlink to one (never opens it)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False
