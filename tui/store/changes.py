"""What other connections changed in the inventory: a cheap poll for the dashboard.

Every ``modeldeck`` process on one state directory writes the same SQLite file. A
:class:`ChangeWatcher` polls ``PRAGMA data_version`` on its own connection (it moves when any
other connection, in this process or another, commits); only then does it read the
``change_counters`` row of each watched table (bumped by triggers, migration 7) and, when the
jobs counter moved, the jobs' summary rows, which it compares with the last ones seen.
Callbacks get plain :class:`Changes`; no Textual here.

Usage::

    watcher = ChangeWatcher(db)
    watcher.prime()                      # the baseline: what the caller has already shown
    watcher.start(on_change, on_error)   # a thread polling every ``interval`` seconds
    ...
    watcher.stop()
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tui.download import progress
from tui.errors import StoreError
from tui.store.db import Database

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25  # seconds between two data_version reads
JOB_STATES = frozenset(progress.JOB_STATES)
_MAX_NAME = 500  # characters of a job's name or error kept (the row may hold anything)


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """A job's summary row as the process running it last persisted it.

    Every field is checked: an unknown state reads as ``failed``, a negative or non-integer
    byte count as 0 (total: unknown), text is bounded.
    """

    id: str
    name: str
    state: str
    done_bytes: int
    total_bytes: int | None
    error: str | None
    control: str | None
    updated_at: float
    catalog_id: str | None = None


@dataclass(slots=True)
class Changes:
    """What changed since the previous poll."""

    models: bool = False  # installed models (rows added, removed or changed)
    catalog: bool = False  # custom catalog entries
    jobs: list[JobSnapshot] = field(default_factory=list)  # new or changed jobs
    removed_jobs: list[str] = field(default_factory=list)  # job ids no longer in the table

    def __bool__(self) -> bool:
        return self.models or self.catalog or bool(self.jobs) or bool(self.removed_jobs)


class ChangeWatcher:
    """Polls one inventory for changes made through other connections."""

    def __init__(self, db: Database, *, interval: float = POLL_INTERVAL) -> None:
        self.db = db
        self.interval = interval
        self._version: int | None = None
        self._conn: Any = None  # the connection ``_version`` was read on
        self._counters: dict[str, int] = {}
        self._jobs: dict[str, JobSnapshot] = {}
        self._catalog_ids: dict[str, str | None] = {}
        self._lock = threading.Lock()  # one poll at a time (the thread, or a test's call)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def primed(self) -> bool:
        """Whether a baseline was read."""
        return self._version is not None

    @property
    def jobs(self) -> dict[str, JobSnapshot]:
        """Every job as last read."""
        return dict(self._jobs)

    def prime(self) -> None:
        """Read the baseline: changes made before this are not reported."""
        with self._lock, self.db.read() as conn:
            self._conn, self._version = conn, _data_version(conn)
            self._counters = _counters(conn)
            self._jobs = {j.id: j for j in self._read_jobs(conn)}

    def poll(self) -> Changes:
        """One check (blocking SQLite reads): what changed since the previous one.

        Raises :class:`~tui.errors.StoreError` if the inventory broke or was deleted.
        """
        with self._lock, self.db.read() as conn:
            if self._version is None:
                self._conn, self._version = conn, _data_version(conn)
                self._counters = _counters(conn)
                self._jobs = {j.id: j for j in self._read_jobs(conn)}
                return Changes()
            # data_version numbers mean something only on one connection (the database's
            # connections are per thread): on another one, compare the counters.
            version = _data_version(conn)
            if conn is self._conn and version == self._version:
                return Changes()
            self._conn, self._version = conn, version
            counters = _counters(conn)
            before, self._counters = self._counters, counters
            changes = Changes(
                models=counters.get("models") != before.get("models"),
                catalog=counters.get("custom_entries") != before.get("custom_entries"),
            )
            if counters.get("jobs") != before.get("jobs"):
                now = {j.id: j for j in self._read_jobs(conn)}
                changes.jobs = [j for i, j in now.items() if self._jobs.get(i) != j]
                changes.removed_jobs = [i for i in self._jobs if i not in now]
                self._jobs = now
                for gone in changes.removed_jobs:
                    self._catalog_ids.pop(gone, None)
            return changes

    def _read_jobs(self, conn: Any) -> list[JobSnapshot]:
        rows = conn.execute(
            "SELECT id, name, state, done_bytes, total_bytes, error, control, updated_at "
            "FROM jobs ORDER BY created_at, id"
        ).fetchall()
        unknown = [r[0] for r in rows if isinstance(r[0], str) and r[0] not in self._catalog_ids]
        for start in range(0, len(unknown), 500):
            batch = unknown[start:start + 500]
            for job_id, spec in conn.execute(
                f"SELECT id, spec FROM jobs WHERE id IN ({','.join('?' * len(batch))})", batch
            ):
                self._catalog_ids[job_id] = _catalog_id(spec)
        return [j for r in rows if (j := self._snapshot(r)) is not None]

    def _snapshot(self, row: Any) -> JobSnapshot | None:
        job_id, name, state, done, total, error, control, updated = tuple(row)
        if not isinstance(job_id, str) or not job_id:
            return None
        return JobSnapshot(
            id=job_id,
            name=_text(name, _MAX_NAME) or job_id,
            state=state if state in JOB_STATES else "failed",
            done_bytes=_count(done) or 0,
            total_bytes=_count(total),
            error=_text(error, _MAX_NAME),
            control=control if control in ("pause", "cancel") else None,
            updated_at=(float(updated) if isinstance(updated, int | float)
                        and not isinstance(updated, bool) and math.isfinite(updated) else 0.0),
            catalog_id=self._catalog_ids.get(job_id),
        )

    # -- the polling thread ---------------------------------------------------------------

    def start(
        self,
        on_change: Callable[[Changes], None],
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        """Poll in a daemon thread every ``interval`` s; ``on_change`` gets each non-empty
        :class:`Changes`. A broken or deleted inventory ends the thread after one
        ``on_error(line)``."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(on_change, on_error), name="modeldeck-changes", daemon=True
        )
        self._thread.start()

    def _run(self, on_change: Callable[[Changes], None],
             on_error: Callable[[str], None] | None) -> None:
        while not self._stop.is_set():
            try:
                changes = self.poll()
            except StoreError as exc:
                log.warning("inventory change feed stopped: %s", exc)
                if on_error is not None:
                    on_error(str(exc))
                return
            if changes:
                try:
                    on_change(changes)
                except Exception:
                    log.exception("inventory change callback failed")
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (waits for a poll in progress)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


def _data_version(conn: Any) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _counters(conn: Any) -> dict[str, int]:
    return {
        name: seq for name, seq in conn.execute("SELECT name, seq FROM change_counters")
        if isinstance(name, str) and isinstance(seq, int)
    }


def _catalog_id(spec: Any) -> str | None:
    """The catalog entry a job's stored spec names (None if none or unreadable)."""
    if not isinstance(spec, str) or len(spec) > 1 << 20:
        return None
    try:
        data = json.loads(spec)
    except (ValueError, RecursionError):
        return None
    value = data.get("catalog_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def _text(value: Any, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
