"""Pins: models ``modeldeck reclaim`` never proposes (``modeldeck pin`` / ``unpin``)."""

from __future__ import annotations

from tui.errors import NotFoundError
from tui.store.db import Database


def set_pinned(db: Database, model_id: str, pinned: bool) -> None:
    """Pin or unpin one model; NotFoundError if there is no such model."""
    with db.write() as tx:
        cur = tx.execute("UPDATE models SET pinned = ? WHERE id = ?", (int(pinned), model_id))
        if cur.rowcount == 0:
            raise NotFoundError(f"no installed model with id {model_id!r}",
                                hint="see `modeldeck ls` for ids")


def pinned_ids(db: Database) -> set[str]:
    """The ids of every pinned model."""
    with db.read() as conn:
        return {r[0] for r in conn.execute("SELECT id FROM models WHERE pinned != 0")}
