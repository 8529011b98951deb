"""Hashing without a second slow pass, and whole-file checks.

:class:`PrefixHasher` runs in a thread and hashes the *contiguous completed prefix* of a
``.part`` file while the download is still going: segments report the byte ranges they have
written, and the thread reads those bytes back with ``pread`` (they are still in the page
cache) as soon as they extend the prefix. When the last byte lands, the digest is nearly done.
Where the file can be memory-mapped the hasher reads the page cache in place (``mmap`` windows)
instead of copying it out with ``pread``: at ~1 GB/s that copy is a tenth of the hash's cost.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import queue
import threading
from collections import deque
from pathlib import Path

READ_CHUNK = 8 << 20
MAP_WINDOW = 64 << 20  # bytes mapped at a time (a multiple of the page size)
WRITEBACK_STEP = 64 << 20


class PrefixHasher:
    """sha256 (and optionally the git blob sha1) of a file written out of order.

    :meth:`mark` is called from the event loop for every chunk written; it only appends to a
    thread-safe deque (no lock, no wake-up), so the download loop never waits on the hasher.
    The hasher thread drains the deque, merges ranges and polls every few milliseconds when
    it has caught up.
    """

    POLL = 0.004

    def __init__(self, fd: int, size: int | None, *, git_blob: bool = False) -> None:
        self._fd = fd
        self._size = size
        self._sha256 = hashlib.sha256()
        self._sha1 = None
        if git_blob and size is not None:
            self._sha1 = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
        self._flushed = 0  # bytes behind the hash position handed to writeback
        self._flush_queue: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._flusher: threading.Thread | None = None
        self._marks: deque[tuple[int, int]] = deque()
        self._ranges: list[list[int]] = []  # merged, sorted [start, end); hasher thread only
        self._pos = 0
        # In-place reads need a known size: the .part is pre-sized, so a window never reaches
        # past the end of the file (which would SIGBUS) unless someone truncates it under us.
        self._use_map = size is not None and hasattr(mmap, "PROT_READ")
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None
        self._map_base = -1
        self._closed = threading.Event()
        self._aborted = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="modeldeck-hash", daemon=True)
        self._thread.start()

    @property
    def position(self) -> int:
        """Bytes hashed so far."""
        return self._pos

    def mark(self, start: int, end: int) -> None:
        """Record that ``[start, end)`` is written to the file (cheap; any thread)."""
        if end > start:
            self._marks.append((start, end))

    def _drain(self) -> int:
        """Merge new marks; return the end of the contiguous region from the position."""
        marks = self._marks
        if marks:
            rs = self._ranges
            while marks:
                s, e = marks.popleft()
                rs.append([s, e])
            rs.sort()
            merged: list[list[int]] = [rs[0]]
            for s, e in rs[1:]:
                if s <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], e)
                else:
                    merged.append([s, e])
            self._ranges = [r for r in merged if r[1] > self._pos]
        for s, e in self._ranges:
            if s <= self._pos < e:
                return e
        return self._pos

    def _run(self) -> None:
        try:
            while not self._aborted:
                end = self._drain()
                if end <= self._pos:
                    if self._closed.is_set():
                        if self._drain() <= self._pos:
                            return
                        continue
                    self._closed.wait(self.POLL)
                    continue
                while self._pos < end and not self._aborted:
                    n = self._hash_mapped(end) if self._use_map else 0
                    if not n:
                        n = self._hash_read(end)
                    self._pos += n
                    self._start_writeback()
        except BaseException as exc:  # reported by finish()
            self._error = exc
        finally:
            self._unmap()
            self._stop_flusher()

    def _update(self, data: bytes | memoryview) -> None:
        self._sha256.update(data)
        if self._sha1 is not None:
            self._sha1.update(data)

    def _hash_read(self, end: int) -> int:
        data = os.pread(self._fd, min(READ_CHUNK, end - self._pos), self._pos)
        if not data:
            raise OSError(f"short read at offset {self._pos}")
        self._update(data)
        return len(data)

    def _hash_mapped(self, end: int) -> int:
        """Hash up to ``READ_CHUNK`` bytes in place through a mapped window; 0 if mapping is
        not possible here (then :meth:`_hash_read` is used from now on)."""
        pos = self._pos
        base = pos - pos % MAP_WINDOW
        if self._map is None or self._map_base != base:
            self._unmap()
            length = min(MAP_WINDOW, (self._size or 0) - base)
            try:
                if length <= 0 or os.fstat(self._fd).st_size < base + length:
                    raise OSError("file shorter than the mapped window")
                self._map = mmap.mmap(self._fd, length, prot=mmap.PROT_READ, offset=base)
            except (OSError, ValueError):
                self._use_map = False
                return 0
            self._view = memoryview(self._map)
            self._map_base = base
        assert self._view is not None
        stop = min(end, base + len(self._view), pos + READ_CHUNK)
        self._update(self._view[pos - base : stop - base])
        return stop - pos

    def _unmap(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._map is not None:
            self._map.close()
            self._map = None

    def _start_writeback(self) -> None:
        """Start writing the hashed prefix to disk now (Linux) so the final fsync is short;
        those pages are not needed in the page cache any more. Submitting the writes costs
        CPU, so a flusher thread does it: the hash thread is the critical path."""
        if self._pos - self._flushed < WRITEBACK_STEP or not hasattr(os, "posix_fadvise"):
            return
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_run, name="modeldeck-flush",
                                             daemon=True)
            self._flusher.start()
        self._flush_queue.put((self._flushed, self._pos - self._flushed))
        self._flushed = self._pos

    def _flush_run(self) -> None:
        while (item := self._flush_queue.get()) is not None:
            try:
                os.posix_fadvise(self._fd, item[0], item[1], os.POSIX_FADV_DONTNEED)
            except OSError:
                pass

    def _stop_flusher(self) -> None:
        """Let the flusher finish what is queued (before the caller closes the fd)."""
        if self._flusher is not None:
            self._flush_queue.put(None)
            self._flusher.join()
            self._flusher = None

    def finish(self) -> tuple[str, str | None]:
        """Block until the whole marked prefix is hashed; returns (sha256, git blob sha1)."""
        self._closed.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        total = self._size if self._size is not None else self._pos
        if self._pos != total:
            raise OSError(f"hashed {self._pos} of {total} bytes (a range is missing)")
        return self._sha256.hexdigest(), (self._sha1.hexdigest() if self._sha1 else None)

    def abort(self) -> None:
        """Stop the thread without a result."""
        self._aborted = True
        self._closed.set()
        self._thread.join()


def sha256_file(path: Path) -> str:
    """sha256 of a file (blocking; run in a thread)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(READ_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1_file(path: Path) -> str:
    """The git blob id of a file (what the Hub lists for non-LFS files)."""
    size = os.path.getsize(path)
    h = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(READ_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it is durable (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
