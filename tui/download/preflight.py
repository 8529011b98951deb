"""Checks before a byte moves: free space, network file systems, and per-file locks.

Locks are ``fcntl.flock`` locks on ``<dest>.lock`` next to the destination. ``flock`` is
advisory and on some network file systems (older NFS, some FUSE mounts, SMB) it silently
locks only locally, so two *machines* sharing a volume are not protected; two processes on
one machine always are. :func:`network_fs_warning` detects the common cases from /proc/mounts.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tui import formatting as fmt
from tui.download.errors import AlreadyDownloadingError, DiskFullError

log = logging.getLogger(__name__)

MARGIN_FIXED = 100 << 20
MARGIN_FRACTION = 0.01
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "afs", "glusterfs",
              "fuse.glusterfs", "ceph", "fuse.ceph", "lustre", "fuse.s3fs", "fuse.gcsfuse"}

DiskUsage = Callable[[str], Any]  # shutil.disk_usage: an object with ``free``
# Write errors that mean "no room for these bytes" (a short or zero write is one too).
DISK_FULL_ERRNOS = {errno.ENOSPC: "", errno.EDQUOT: " (disk quota exceeded)",
                    errno.EFBIG: " (file too large for this file system)"}


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC, EDQUOT and EFBIG."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def disk_full_error(path: Path, needed: int | None, *, cause: BaseException | None = None,
                    reserving: bool = False) -> DiskFullError:
    """The one-line error for a full disk: the file, and the bytes still needed (``unknown``
    when the size is not known, never negative); the partial is kept for a retry.

    ``cause`` (the ``OSError``, or an earlier such error) names a quota or file-size limit.
    """
    code = getattr(cause, "errno", None) or getattr(cause, "cause_errno", None) or 0
    why = DISK_FULL_ERRNOS.get(code, "")
    if needed is None:
        amount = "unknown bytes"
    else:
        needed = max(0, needed)
        amount = f"{fmt.size(needed)} ({needed} bytes)"
    doing = "reserving space for" if reserving else "writing"
    error = DiskFullError(
        f"disk full{why} {doing} {path}: {amount} still needed",
        hint="free some space, then retry; the partial is kept",
    )
    error.cause_errno = code
    return error


def existing_parent(path: Path) -> Path:
    """The nearest existing ancestor of ``path`` (for disk_usage before dirs exist)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_free_space(
    target_dir: Path, remaining_bytes: int, disk_usage: DiskUsage = shutil.disk_usage
) -> None:
    """Refuse with :class:`DiskFullError` unless ``remaining_bytes`` + margin fit."""
    if remaining_bytes <= 0:
        return
    needed = remaining_bytes + int(remaining_bytes * MARGIN_FRACTION) + MARGIN_FIXED
    free = disk_usage(str(existing_parent(target_dir))).free
    if free < needed:
        raise DiskFullError(
            f"not enough space in {target_dir}: need {fmt.size(needed)} ({needed} bytes incl. "
            f"margin), {fmt.size(free)} free",
            hint="free some space or set MODELDECK_MODELS_DIR to a bigger volume",
        )


def fs_type(path: Path) -> str | None:
    """The file system type of the mount holding ``path`` (Linux /proc/mounts), or None."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = str(existing_parent(path).resolve())
    best, best_type = "", None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, best_type = mnt, parts[2]
    return best_type


def network_fs_warning(path: Path) -> str | None:
    """A warning if ``path`` is on a network file system where flock may not protect."""
    kind = fs_type(path)
    if kind and (kind in NETWORK_FS or kind.startswith("nfs")):
        return (
            f"{path} is on {kind}: file locks may not work across machines; do not pull the "
            "same model from two machines at once"
        )
    return None


class DestLock:
    """An exclusive, non-blocking ``flock`` on ``<dest>.lock`` holding the owner's pid."""

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest)
        self.path = self.dest.with_name(self.dest.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`AlreadyDownloadingError` naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                pid = self._read_pid()
                who = f"pid {pid}" if pid else "another process"
                raise AlreadyDownloadingError(
                    f"{self.dest} is already being downloaded by {who}",
                    hint="wait for it to finish or pause it there",
                ) from None
            # The holder may have unlinked the file after we opened it: retry on the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def _read_pid(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self, *, remove: bool = False) -> None:
        """Release (and optionally delete) the lock file."""
        if self._fd is None:
            return
        if remove:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        os.close(self._fd)
        self._fd = None
