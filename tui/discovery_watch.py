"""Discovery that follows the disk: watch the managed folders and rescan what changed.

A :class:`FolderWatcher` runs one daemon thread. It first runs the incremental scan
(:class:`~tui.discovery.Scanner`, as ``modeldeck scan`` does), then watches the models dir, the
extra dirs and the Hugging Face cache with :mod:`watchfiles` (inotify on Linux). A folder on a
network file system (NFS, SMB, …: inotify never hears other machines' writes) or one that does
not exist yet is polled instead, every ``poll_interval`` seconds, by comparing sizes and mtimes.

A changed file is read only once its size and mtime have stayed the same for ``settle``
seconds (a copy in progress is left alone); then the folder holding it is rescanned,
incrementally. A deleted model is marked missing by that rescan. Partial files (``.part``,
``.incomplete``, ``.lock``, ``.tmp``), hidden names and the files ModelDeck's own downloads are
writing are ignored (a finished download registers its files itself). No Textual here.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tui.discovery import SKIP_SUFFIXES, Root, Scanner, ScanReport, roots_for, walk_entries
from tui.errors import ModelDeckError, StoreError
from tui.registration import WEIGHT_SUFFIXES
from tui.settings import Settings
from tui.store import Inventory

log = logging.getLogger(__name__)

SETTLE_SECONDS = 1.0  # a file is read once unchanged this long
POLL_SECONDS = 5.0  # polling period of folders on network file systems
TICK_SECONDS = 0.25  # how often pending files are checked
MAX_TARGETS = 8  # more folders changed at once than this: rescan their roots

Signature = tuple[int, int, int] | None  # (kind, size, mtime_ns) of a path, None if absent


@dataclass(slots=True)
class _Pending:
    sig: Signature | bool  # False: not looked at yet
    since: float


class FolderWatcher:
    """Keeps the inventory in step with the managed folders while the dashboard runs.

    Args:
        settings: the roots come from here (:func:`tui.discovery.roots_for`).
        inventory: where the scans write.
        busy: destinations downloads are writing now (never read by discovery).
        on_scan: called after each scan with its report and the changed paths that caused
            it (empty for the first scan).
        settle / poll_interval / tick: seconds (tests shorten them).
        clock / wall: monotonic and wall-clock seconds (tests inject them).
        force_polling: poll every root (as on a network file system).
    """

    def __init__(
        self,
        settings: Settings,
        inventory: Inventory,
        *,
        busy: Callable[[], set[str]] | None = None,
        on_scan: Callable[[ScanReport, list[str]], None] | None = None,
        settle: float = SETTLE_SECONDS,
        poll_interval: float = POLL_SECONDS,
        tick: float = TICK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        force_polling: bool = False,
    ) -> None:
        self.settings = settings
        self.inventory = inventory
        self.scanner = Scanner(settings, inventory)
        self.busy = busy or (lambda: set())
        self.on_scan = on_scan
        self.settle = settle
        self.poll_interval = poll_interval
        self.tick = tick
        self.clock = clock
        self.wall = wall
        self.force_polling = force_polling
        self.roots: list[Root] = roots_for(settings)
        self.watched: list[Root] = []  # followed through inotify
        self.polled: list[Root] = []  # followed by polling
        self._pending: dict[str, _Pending] = {}
        self._snapshots: dict[str, dict[str, Signature]] = {}
        self._next_poll = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Scan, then watch, in a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="modeldeck-discovery",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching (waits for a scan in progress)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        try:
            self.initial_scan()
            self.split_roots()
            for root in self.polled:
                self._snapshots[str(root.path)] = _snapshot(root.path)
            self._next_poll = self.clock() + self.poll_interval
            if self.watched:
                self._watch()
            while not self._stop.is_set():
                self.step()
                self._stop.wait(self.tick)
        except StoreError as exc:  # the inventory broke or vanished: stop, say why once
            log.warning("folder watching stopped: %s", exc)
        except Exception:
            log.exception("folder watching stopped")

    def _watch(self) -> None:
        """Follow the local roots through watchfiles; falls back to polling if it cannot."""
        try:
            import watchfiles

            changes_iter = watchfiles.watch(
                *[str(r.path) for r in self.watched],
                watch_filter=lambda _change, path: self.relevant(path),
                debounce=int(self.tick * 1000), step=50, rust_timeout=int(self.tick * 1000),
                yield_on_timeout=True, stop_event=self._stop, raise_interrupt=False,
                force_polling=False, ignore_permission_denied=True,
            )
            for changes in changes_iter:
                self.note(path for _change, path in changes)
                self.step()
        except Exception as exc:  # e.g. the inotify watch limit: poll these roots instead
            log.warning("watching %s failed (%s); polling every %.0f s instead",
                        ", ".join(str(r.path) for r in self.watched), exc, self.poll_interval)
            for root in self.watched:
                self._snapshots[str(root.path)] = _snapshot(root.path)
            self.polled += self.watched
            self.watched = []

    # -- the parts (each callable on its own, e.g. from tests) ----------------------------

    def initial_scan(self) -> ScanReport:
        """The start-up scan: incremental; files modified less than ``settle`` seconds ago
        (maybe still being copied) and download destinations wait for the watcher."""
        fresh: list[str] = []
        report = self.scanner.scan(skip=self._skipper(self.busy(), fresh))
        self.note(fresh)
        self._report(report, [])
        return report

    def _skipper(self, busy: set[str], fresh: list[str]) -> Callable[[Path], bool]:
        """A scan's ``skip``: files in ``busy``, and files modified within ``settle`` seconds
        (a copy whose events were missed), which go to ``fresh`` to be looked at again."""
        wall = self.wall()

        def skip(path: Path) -> bool:
            if str(path) in busy:
                return True
            sig = _signature(path)
            if sig is not None and wall - sig[2] / 1e9 < self.settle:
                fresh.append(str(path))
                return True
            return False

        return skip

    def split_roots(self) -> None:
        """Decide which roots inotify follows and which are polled."""
        self.watched, self.polled = [], []
        for root in self.roots:
            if self.force_polling or not root.path.is_dir() or on_network_fs(root.path):
                self.polled.append(root)
            else:
                self.watched.append(root)

    def relevant(self, path: str) -> bool:
        """Whether a change at ``path`` may change a model (weights, configs, folders)."""
        name = os.path.basename(path.rstrip(os.sep))
        lower = name.lower()
        if not name or lower.endswith(SKIP_SUFFIXES):
            return False
        root = self._root_of(path)
        if root is None:
            return False
        rel = os.path.relpath(path, root.path)
        if any(part.startswith(".") for part in Path(rel).parts):
            return False  # hidden files and folders (.locks, .cache, .modeldeck-prev, …)
        if lower.endswith((*WEIGHT_SUFFIXES, ".json")):
            return True
        try:
            st = os.lstat(path)
        except OSError:
            return True  # gone: maybe a folder that held a model
        return stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)

    def note(self, paths: Iterable[str]) -> None:
        """Paths that changed: each is looked at until it settles, then rescanned."""
        now = self.clock()
        with self._lock:
            for path in paths:
                path = str(path)
                if self.relevant(path):
                    self._pending[path] = _Pending(False, now)

    @property
    def pending(self) -> list[str]:
        """Changed paths not rescanned yet (still changing, or not settled long enough)."""
        with self._lock:
            return list(self._pending)

    def step(self) -> ScanReport | None:
        """Poll what is due, then rescan the folders of the paths that settled."""
        now = self.clock()
        if self.polled and now >= self._next_poll:
            self._next_poll = now + self.poll_interval
            self.note(self._poll_changes())
        ready: list[str] = []
        growing: set[str] = set()
        with self._lock:
            for path, item in list(self._pending.items()):
                sig = _signature(Path(path))
                if item.sig is False or sig != item.sig:
                    item.sig, item.since = sig, now
                    growing.add(path)
                elif now - item.since >= self.settle:
                    ready.append(path)
                    del self._pending[path]
                else:
                    growing.add(path)
        if not ready:
            return None
        fresh: list[str] = []
        skip = self._skipper(self.busy() | growing, fresh)
        report = ScanReport()
        for target in self._targets(ready):
            try:
                one = self.scanner.scan(target, skip=skip)
            except StoreError:
                raise
            except ModelDeckError as exc:  # the folder went away meanwhile: next event
                log.info("rescan of %s skipped: %s", target, exc)
                continue
            _merge(report, one)
        self.note(p for p in fresh if p not in growing)
        self._report(report, ready)
        return report

    # -- helpers --------------------------------------------------------------------------

    def _report(self, report: ScanReport, changed: list[str]) -> None:
        for path, error in report.errors:
            log.info("discovery: %s: %s", path, error)
        if self.on_scan is not None:
            try:
                self.on_scan(report, changed)
            except Exception:
                log.exception("discovery callback failed")

    def _root_of(self, path: str) -> Root | None:
        best: Root | None = None
        for root in self.roots:
            base = str(root.path).rstrip(os.sep)
            if (path == base or path.startswith(base + os.sep)) and (
                    best is None or len(base) > len(str(best.path))):
                best = root
        return best

    def _targets(self, paths: list[str]) -> list[Path | None]:
        """The folders to rescan for ``paths`` (None: every root)."""
        folders: set[Path] = set()
        for path in paths:
            root = self._root_of(path)
            if root is None:
                continue
            if root.source == "hf-cache":  # read through scan_cache_dir: the whole cache
                folders.add(root.path)
                continue
            folder = Path(path)
            if not folder.is_dir():
                folder = folder.parent
            while folder != root.path and not folder.is_dir():
                folder = folder.parent
            if not folder.is_dir():
                return [None]  # the root itself is gone: a full scan marks its models missing
            folders.add(folder)
        outer = sorted(folders, key=lambda f: len(f.parts))
        kept: list[Path] = []
        for folder in outer:
            if not any(folder.is_relative_to(k) for k in kept):
                kept.append(folder)
        if len(kept) > MAX_TARGETS:
            roots = {r.path for f in kept if (r := self._root_of(str(f))) is not None}
            return list(roots)
        return list(kept)

    def _poll_changes(self) -> list[str]:
        changed: list[str] = []
        for root in self.polled:
            key = str(root.path)
            before = self._snapshots.get(key, {})
            now = _snapshot(root.path)
            self._snapshots[key] = now
            changed += [p for p, sig in now.items() if before.get(p) != sig]
            changed += [p for p in before if p not in now]
            if before and not now and not root.path.exists():
                changed.append(key)
        return changed


def on_network_fs(path: Path) -> bool:
    """True if ``path`` is on a network file system (where inotify misses other hosts)."""
    from tui.download.preflight import network_fs_warning

    return network_fs_warning(path) is not None


def _signature(path: Path) -> Signature:
    """(kind, size, mtime_ns) of what is at ``path`` (symlinks followed), None if nothing."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    kind = 1 if stat.S_ISDIR(st.st_mode) else 0 if stat.S_ISREG(st.st_mode) else 2
    return kind, st.st_size if kind == 0 else 0, st.st_mtime_ns


def _snapshot(root: Path) -> dict[str, Signature]:
    """Every weight file under ``root`` (hidden names and partials skipped) with its
    signature: what the poller compares."""
    out: dict[str, Signature] = {}
    for entry, _in_package in walk_entries(root):
        if entry.name.lower().endswith((*WEIGHT_SUFFIXES, ".json")):
            try:
                st = entry.stat()
            except OSError:
                continue
            out[entry.path] = (0, st.st_size, st.st_mtime_ns)
    return out


def _merge(into: ScanReport, one: ScanReport) -> None:
    into.roots += one.roots
    into.models += one.models
    into.added += one.added
    into.updated += one.updated
    into.missing += one.missing
    into.errors += one.errors
    into.warnings += one.warnings
    into.files_read += one.files_read
    into.files_cached += one.files_cached
    into.seconds += one.seconds
