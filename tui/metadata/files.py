"""File access shared by the metadata readers."""

from __future__ import annotations

import io
import os
import stat

from tui.errors import MetadataError


def open_regular(path: str | os.PathLike[str]) -> io.FileIO:
    """Open a regular file for reading without blocking (a FIFO named like a model would
    otherwise hang the caller); anything else raises :class:`MetadataError`."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise MetadataError(f"{os.fspath(path)}: not a regular file")
        return io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise
