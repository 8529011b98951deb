"""Partial downloads and lock files: which ones are ModelDeck's, and deleting them safely.

A partial is ``<dest>.part`` next to a download's destination, a lock ``<dest>.lock`` (or
``<state dir>/jobs/<job id>.lock``). One is deleted only when it is a regular file (never a
symlink, folder or device) inside the models dir (a job record pointing elsewhere, say a
damaged one, deletes nothing), no model records it, no other unfinished job plans to write
that destination, and nobody holds its lock (a running download in any process); it is
checked again just before the unlink.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from pathlib import Path
from typing import Any

from tui.download.errors import DownloadError
from tui.download.preflight import DestLock

PART, LOCK = ".part", ".lock"
MAX_LOCK_BYTES = 32  # a lock file holds a pid and a newline
_PID_RE = re.compile(rb"^\d{0,20}\s*$")


def allocated(st: os.stat_result) -> int:
    """Bytes a file really holds on disk (a sparse partial holds less than its size)."""
    return min(st.st_size, st.st_blocks * 512)


def _regular(path: Path) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def inside(path: Path, root: Path) -> bool:
    """``path`` (its folder resolved through symlinks, not its last part) is under ``root``."""
    try:
        return path.parent.resolve().joinpath(path.name).is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def partial_kept_for(dest: str, *, jobs: Any, inventory: Any, exclude: str | None,
                     root: Path) -> str | None:
    """Why ``<dest>.part`` must stay (outside the models dir, another job or a model uses
    it), or None."""
    if not inside(Path(dest + PART), root):
        return "outside the models dir"
    others = jobs.files_at(dest, exclude=exclude)
    if others:
        return f"job {others[0][0]} will resume it"
    if inventory.find_by_path(dest + PART) is not None:
        return "a model records it"
    return None


def remove_partial(dest: str, *, jobs: Any, inventory: Any, root: Path,
                   exclude: str | None = None) -> int:
    """Delete ``<dest>.part`` if it may go (see the module; ``root`` is the models dir); the
    bytes freed, 0 if kept."""
    part = Path(dest + PART)
    st = _regular(part)
    if st is None or partial_kept_for(dest, jobs=jobs, inventory=inventory, exclude=exclude,
                                      root=root):
        return 0
    return unlink_unlocked(part, Path(dest), st)


def unlink_unlocked(path: Path, dest: Path, seen: os.stat_result) -> int:
    """Unlink ``path`` while holding ``dest``'s download lock, if it is still the file seen
    (``seen``); the bytes freed, 0 when it stays (locked: a download is running, or changed)."""
    lock = DestLock(dest)
    try:
        lock.acquire()
    except (DownloadError, OSError):
        return 0
    try:
        st = _regular(path)
        if st is None or (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino):
            return 0
        try:
            os.unlink(path)
        except OSError:
            return 0
        return allocated(st)
    finally:
        lock.release(remove=True)


def is_lock_file(path: Path, st: os.stat_result) -> bool:
    """A file ModelDeck's locks write: small, holding a pid (or nothing)."""
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_LOCK_BYTES:
        return False
    try:
        with open(path, "rb") as f:
            return bool(_PID_RE.match(f.read(MAX_LOCK_BYTES + 1)))
    except OSError:
        return False


def remove_lock_file(path: Path, seen: os.stat_result) -> bool:
    """Delete a stale lock file: only if nobody holds it and it is still the file seen."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino) or not stat.S_ISREG(st.st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False  # held: a download is running
            raise
        try:
            now = os.lstat(path)
        except OSError:
            return False
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return False
        os.unlink(path)  # a process that opened it meanwhile sees the inode change and retries
        return True
    finally:
        os.close(fd)
