"""Persistent download jobs over the ``jobs`` / ``job_files`` tables.

A job row holds the spec (JSON), its state and byte counters; each file row holds the resolved
URL, destination, expected size/sha256, the validator used for ``If-Range`` (strong ETag and
commit), and the segment list ``[[start, end, done], …]`` flushed while downloading.
Nothing secret is stored: URLs carry no token, the token is looked up at request time.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tui.download.progress import ACTIVE_STATES
from tui.download.sources import JobSpec
from tui.errors import InvalidInputError, NotFoundError
from tui.store.db import Database

FILE_STATES = ("pending", "downloading", "installed", "failed")
UNREADABLE_URL = "http://unreadable.invalid/"  # placeholder spec of a job whose JSON is damaged


@dataclass(slots=True)
class JobFile:
    """One file of a job."""

    path: str
    url: str
    dest: str
    size: int | None = None
    sha256: str | None = None
    blob_sha1: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    commit_hash: str | None = None
    state: str = "pending"
    done_bytes: int = 0
    segments: list[list[int]] | None = None
    error: str | None = None
    position: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for ``jobs --json``)."""
        return {
            "path": self.path, "dest": self.dest, "size": self.size, "sha256": self.sha256,
            "state": self.state, "done_bytes": self.done_bytes, "error": self.error,
        }


@dataclass(slots=True)
class JobRecord:
    """A job and its files."""

    id: str
    kind: str
    spec: JobSpec
    state: str
    name: str
    dest: str | None = None
    total_bytes: int | None = None
    done_bytes: int = 0
    error: str | None = None
    control: str | None = None
    model_id: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    files: list[JobFile] = field(default_factory=list)
    unreadable: bool = False  # the stored spec could not be read back: never run it
    interrupted: bool = False  # recorded as running, but no process runs it (not stored)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for ``jobs --json``)."""
        return {
            "id": self.id, "kind": self.kind, "name": self.name, "state": self.state,
            "dest": self.dest, "total_bytes": self.total_bytes, "done_bytes": self.done_bytes,
            "error": self.error, "model_id": self.model_id, "created_at": self.created_at,
            "updated_at": self.updated_at, "interrupted": self.interrupted,
            "files": [f.to_dict() for f in self.files],
        }


class JobStore:
    """CRUD for jobs; every method is one short transaction (safe from any thread/process)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, spec: JobSpec) -> JobRecord:
        """Insert a queued job for ``spec``."""
        now = time.time()
        job = JobRecord(
            id=uuid.uuid4().hex[:12], kind=spec.kind, spec=spec, state="queued",
            name=spec.describe(), created_at=now, updated_at=now,
        )
        with self.db.write() as tx:
            tx.execute(
                "INSERT INTO jobs (id, kind, spec, state, name, done_bytes, created_at, "
                "updated_at) VALUES (?,?,?,?,?,0,?,?)",
                (job.id, job.kind, spec.to_json(), job.state, job.name, now, now),
            )
        return job

    def get(self, job_id: str) -> JobRecord | None:
        """The job with this id (with files), or None."""
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return self._hydrate(conn, row) if row else None

    def require(self, job_id: str) -> JobRecord:
        """The job; :class:`NotFoundError` if unknown (accepts a unique id prefix)."""
        job = self.get(job_id)
        if job is None and len(job_id) >= 4:
            with self.db.read() as conn:
                rows = conn.execute(
                    "SELECT * FROM jobs WHERE id LIKE ? LIMIT 2", (job_id.replace("%", "") + "%",)
                ).fetchall()
                if len(rows) == 1:
                    job = self._hydrate(conn, rows[0])
        if job is None:
            raise NotFoundError(f"no download job {job_id!r}", hint="see 'modeldeck jobs'")
        return job

    def list(self, states: tuple[str, ...] | None = None) -> list[JobRecord]:
        """Jobs, oldest first, optionally only in ``states``."""
        with self.db.read() as conn:
            if states:
                marks = ",".join("?" * len(states))
                rows = conn.execute(
                    f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at, id",
                    states,
                ).fetchall()
            else:
                rows = conn.execute("SELECT * FROM jobs ORDER BY created_at, id").fetchall()
            return [self._hydrate(conn, r) for r in rows]

    def set_state(
        self, job_id: str, state: str, *, error: str | None = None, clear_control: bool = True
    ) -> None:
        """Change a job's state (and error text)."""
        with self.db.write() as tx:
            tx.execute(
                "UPDATE jobs SET state = ?, error = ?, updated_at = ?"
                + (", control = NULL" if clear_control else "")
                + " WHERE id = ?",
                (state, error, time.time(), job_id),
            )

    def request(self, job_id: str, control: str | None) -> None:
        """Ask the process running the job to ``pause`` or ``cancel`` it."""
        with self.db.write() as tx:
            tx.execute("UPDATE jobs SET control = ? WHERE id = ?", (control, job_id))

    def control(self, job_id: str) -> str | None:
        """The pending control request of a job."""
        with self.db.read() as conn:
            row = conn.execute("SELECT control FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return row[0] if row else None

    def set_plan(
        self, job_id: str, dest: str, files: list[JobFile], spec: JobSpec | None = None
    ) -> None:
        """Store the resolved file list (replacing any previous plan) and resolved spec."""
        total = sum(f.size or 0 for f in files) if all(f.size is not None for f in files) else None
        with self.db.write() as tx:
            tx.execute("DELETE FROM job_files WHERE job_id = ?", (job_id,))
            tx.executemany(
                "INSERT INTO job_files (job_id, path, url, dest, size, sha256, blob_sha1, etag, "
                "last_modified, commit_hash, state, done_bytes, segments, error, position) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (job_id, f.path, f.url, f.dest, f.size, f.sha256, f.blob_sha1, f.etag,
                     f.last_modified, f.commit_hash, f.state, f.done_bytes,
                     json.dumps(f.segments) if f.segments is not None else None, f.error, i)
                    for i, f in enumerate(files)
                ],
            )
            tx.execute(
                "UPDATE jobs SET dest = ?, total_bytes = ?, updated_at = ? WHERE id = ?",
                (dest, total, time.time(), job_id),
            )
            if spec is not None:
                tx.execute("UPDATE jobs SET spec = ?, kind = ? WHERE id = ?",
                           (spec.to_json(), spec.kind, job_id))

    def save_files(self, job_id: str, files: list[JobFile], state: str | None = None) -> None:
        """Flush per-file progress, validators and segments plus the job's byte counter, and
        ``state`` (a running job's live state) unless the row already holds one it ended in
        (paused, done, failed, cancelled: a late flush never undoes an end)."""
        with self.db.write() as tx:
            if state is not None:
                marks = ",".join("?" * len(ACTIVE_STATES))
                tx.execute(f"UPDATE jobs SET state = ?, updated_at = ? WHERE id = ? "
                           f"AND state IN ({marks})",
                           (state, time.time(), job_id, *ACTIVE_STATES))
            if not files:
                return
            tx.executemany(
                "UPDATE job_files SET size = ?, etag = ?, last_modified = ?, state = ?, "
                "done_bytes = ?, segments = ?, error = ? WHERE job_id = ? AND path = ?",
                [
                    (f.size, f.etag, f.last_modified, f.state, f.done_bytes,
                     json.dumps(f.segments) if f.segments is not None else None, f.error,
                     job_id, f.path)
                    for f in files
                ],
            )
            known = all(f.size is not None for f in files)
            tx.execute(
                "UPDATE jobs SET done_bytes = ?, total_bytes = ?, updated_at = ? WHERE id = ?",
                (sum(f.done_bytes for f in files),
                 sum(f.size or 0 for f in files) if known else None, time.time(), job_id),
            )

    def files_at(self, dest: str, *, exclude: str | None = None
                 ) -> list[tuple[str, JobSpec, JobFile]]:
        """(job id, spec, file) of unfinished jobs (not done or cancelled) with a file
        planned at ``dest``: who else will write there."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT j.id, j.spec, f.url, f.sha256, f.commit_hash FROM job_files f "
                "JOIN jobs j ON j.id = f.job_id WHERE f.dest = ? AND j.id != ? "
                "AND j.state NOT IN ('done', 'cancelled')",
                (dest, exclude or ""),
            ).fetchall()
        return [(r[0], JobSpec.from_json(r[1]),
                 JobFile(path="", url=r[2], dest=dest, sha256=r[3], commit_hash=r[4]))
                for r in rows]

    def dests_in_flight(self) -> set[str]:
        """Destinations of jobs not done or cancelled: files a download may be writing."""
        with self.db.read() as conn:
            return {
                r[0] for r in conn.execute(
                    "SELECT f.dest FROM job_files f JOIN jobs j ON j.id = f.job_id "
                    "WHERE j.state NOT IN ('done', 'cancelled')"
                ) if isinstance(r[0], str)
            }

    def dests(self) -> set[str]:
        """Every destination any job (in any state) has planned."""
        with self.db.read() as conn:
            return {r[0] for r in conn.execute("SELECT DISTINCT dest FROM job_files")
                    if isinstance(r[0], str)}

    def reset_files(self, job_id: str) -> None:
        """Forget the plan (files are re-resolved on the next run)."""
        with self.db.write() as tx:
            tx.execute("DELETE FROM job_files WHERE job_id = ?", (job_id,))
            tx.execute("UPDATE jobs SET done_bytes = 0 WHERE id = ?", (job_id,))

    def set_model(self, job_id: str, model_id: str | None) -> None:
        """Remember the registered model of a finished job."""
        with self.db.write() as tx:
            tx.execute("UPDATE jobs SET model_id = ? WHERE id = ?", (model_id, job_id))

    def delete(self, job_id: str) -> None:
        """Forget a job."""
        with self.db.write() as tx:
            tx.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    @staticmethod
    def _hydrate(conn: Any, row: Any) -> JobRecord:
        files = [
            JobFile(
                path=f["path"], url=f["url"], dest=f["dest"], size=f["size"], sha256=f["sha256"],
                blob_sha1=f["blob_sha1"], etag=f["etag"], last_modified=f["last_modified"],
                commit_hash=f["commit_hash"], state=f["state"], done_bytes=f["done_bytes"],
                segments=_segments(f["segments"]), error=f["error"], position=f["position"],
            )
            for f in conn.execute(
                "SELECT * FROM job_files WHERE job_id = ? ORDER BY position, path", (row["id"],)
            )
        ]
        state, error = row["state"], row["error"]
        try:
            spec, unreadable = JobSpec.from_json(row["spec"]), False
        except (ValueError, TypeError, InvalidInputError, RecursionError):
            # Listed as failed (never run) so it can be seen and cancelled.
            spec, unreadable = JobSpec(kind="url", url=UNREADABLE_URL), True
            state = state if state in ("done", "cancelled") else "failed"
            error = (f"its saved request is unreadable; cancel it with 'modeldeck jobs cancel "
                     f"{row['id']}' and pull again")
        return JobRecord(
            id=row["id"], kind=row["kind"], spec=spec,
            state=state, name=row["name"] or row["id"], dest=row["dest"],
            total_bytes=row["total_bytes"], done_bytes=row["done_bytes"], error=error,
            control=row["control"], model_id=row["model_id"], created_at=row["created_at"],
            updated_at=row["updated_at"], files=files, unreadable=unreadable,
        )


def _segments(text: Any) -> list[list[int]] | None:
    """Stored segment offsets, or None (the file restarts from zero) if they are damaged."""
    try:
        segs = json.loads(text) if isinstance(text, str) and text else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(segs, list):
        return None
    for seg in segs:
        if not (isinstance(seg, list) and len(seg) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) for v in seg)):
            return None
        start, end, done = seg
        if start < 0 or done < 0 or (end >= 0 and (end < start or done > end - start)) or (
                end < -1):
            return None
    return segs
