"""What a Hub model follows and what it was before its last update (``model_history``).

One row per model: ``tracked`` is the branch or tag it follows (a commit id: pinned),
``previous_commit`` / ``previous_files`` the commit it had before its last update and where
that commit's changed files are kept (``<model root>/.modeldeck-prev/…``) for
``modeldeck update --rollback``; ``pending`` the file swaps of an update while they happen (so
an interrupted one can be finished); ``hub_commit`` / ``checked_at`` the Hub's answer at the
last check (``modeldeck outdated``, the dashboard's marker). The row goes with its model.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tui.store.db import Database
from tui.store.records import ModelFile

MAX_FILES = 10_000  # a stored list longer than this is damaged: read as empty


@dataclass(slots=True)
class KeptFile:
    """A file of the previous commit: where it belongs (``path``) and where it is kept."""

    path: str
    kept: str
    size: int
    sha256: str | None = None
    dev: int | None = None
    ino: int | None = None
    mtime_ns: int | None = None
    verified: str | None = None

    def as_model_file(self) -> ModelFile:
        """The kept copy as a recorded file (for the safe delete)."""
        return ModelFile(path=self.kept, size=self.size, sha256=self.sha256,
                         mtime_ns=self.mtime_ns, dev=self.dev, ino=self.ino,
                         verified=self.verified)


@dataclass(slots=True)
class ModelHistory:
    """One ``model_history`` row."""

    model_id: str
    tracked: str | None = None
    previous_commit: str | None = None
    previous_files: list[KeptFile] = field(default_factory=list)
    pending: dict[str, Any] | None = None
    hub_commit: str | None = None
    checked_at: float | None = None


class HistoryStore:
    """Reads and writes ``model_history``; each call is one short transaction (or joins the
    caller's, see :meth:`Database.write`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, model_id: str) -> ModelHistory | None:
        """The row of ``model_id``; damaged fields read as unknown."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT tracked, previous_commit, previous_files, pending, hub_commit, "
                "checked_at FROM model_history WHERE model_id = ?", (model_id,)).fetchone()
        if row is None:
            return None
        return ModelHistory(
            model_id=model_id, tracked=_text(row[0]), previous_commit=_text(row[1]),
            previous_files=_kept_files(row[2]), pending=_json_dict(row[3]),
            hub_commit=_text(row[4]),
            checked_at=row[5] if isinstance(row[5], int | float) else None,
        )

    def _upsert(self, model_id: str, **values: Any) -> None:
        cols = ", ".join(values)
        marks = ", ".join("?" * len(values))
        updates = ", ".join(f"{c} = excluded.{c}" for c in values)
        with self.db.write() as tx:
            tx.execute(
                f"INSERT INTO model_history (model_id, {cols}, updated_at) "
                f"VALUES (?, {marks}, ?) ON CONFLICT(model_id) DO UPDATE SET {updates}, "
                "updated_at = excluded.updated_at",
                (model_id, *values.values(), time.time()),
            )

    def set_tracked(self, model_id: str, tracked: str | None) -> None:
        """The branch or tag ``model_id`` follows (None: unknown, ``main`` is assumed)."""
        self._upsert(model_id, tracked=tracked)

    def set_previous(self, model_id: str, commit: str | None, files: list[KeptFile]) -> None:
        """The commit before the last update and where its files are kept; clears pending."""
        self._upsert(model_id, previous_commit=commit,
                     previous_files=json.dumps([asdict(f) for f in files]), pending=None)

    def set_pending(self, model_id: str, pending: dict[str, Any] | None) -> None:
        """The swaps an update is about to make (None once they are recorded as done)."""
        self._upsert(model_id, pending=json.dumps(pending) if pending is not None else None)

    def set_hub_commit(self, model_id: str, commit: str | None, when: float | None = None
                       ) -> None:
        """The Hub's current commit for the tracked revision, as last seen."""
        self._upsert(model_id, hub_commit=commit,
                     checked_at=time.time() if when is None else when)

    def outdated(self) -> dict[str, str]:
        """model id -> Hub commit, for installed models whose last check saw a newer commit."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT h.model_id, h.hub_commit FROM model_history h JOIN models m "
                "ON m.id = h.model_id WHERE h.hub_commit IS NOT NULL AND m.revision IS NOT NULL "
                "AND h.hub_commit != m.revision AND m.status = 'installed'").fetchall()
        return {r[0]: r[1] for r in rows if isinstance(r[0], str) and isinstance(r[1], str)}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _json_dict(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _kept_files(text: Any) -> list[KeptFile]:
    """The stored list, or empty when any entry is damaged (nothing is then deleted or
    swapped on its word)."""
    if not isinstance(text, str):
        return []
    try:
        items = json.loads(text)
    except (ValueError, RecursionError):
        return []
    if not isinstance(items, list) or len(items) > MAX_FILES:
        return []
    out = []
    for item in items:
        if not (isinstance(item, dict) and isinstance(item.get("path"), str)
                and isinstance(item.get("kept"), str) and _int(item.get("size")) is not None):
            return []
        out.append(KeptFile(
            path=item["path"], kept=item["kept"], size=item["size"],
            sha256=_text(item.get("sha256")), dev=_int(item.get("dev")),
            ino=_int(item.get("ino")), mtime_ns=_int(item.get("mtime_ns")),
            verified=_text(item.get("verified")),
        ))
    return out
