"""Move a broken inventory aside (never deleting it) and copy out the rows still readable."""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import suppress
from pathlib import Path

from tui.store.db import Database
from tui.store.health import expected_schema, open_readonly, table_columns
from tui.store.schema import MIGRATIONS

# Parents before children (foreign keys); the scan cache is rebuilt by the next scan.
SALVAGE_TABLES = ("custom_entries", "models", "model_files", "model_history", "jobs",
                  "job_files", "conversations", "chat_messages", "load_options")
_BATCH = 500


def move_aside(path: Path, now: float | None = None) -> Path:
    """Rename ``path`` and its ``-wal`` / ``-shm`` to ``<name>.broken-<timestamp>[...]``.

    The three stay together, so SQLite can still open the moved copy with its log. Nothing
    is overwritten: a taken name gets a counter.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    base = f"{path.name}.broken-{stamp}"
    target = path.with_name(base)
    n = 1
    while any(os.path.lexists(f"{target}{s}") for s in ("", "-wal", "-shm")):
        n += 1
        target = path.with_name(f"{base}-{n}")
    os.rename(path, target)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if os.path.lexists(side):
            os.rename(side, f"{target}{suffix}")
    with suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return target


def salvage(broken: Path, db: Database) -> dict[str, tuple[int, int]]:
    """Copy the readable rows of ``broken`` into ``db``: table -> (copied, lost).

    ``broken`` is opened read-only and never written. A row the fresh schema refuses (a file
    row whose model is gone, a duplicate) counts as lost, as do the rows of a table whose
    reading stopped on a damaged page. Files written by another program give nothing.
    """
    try:
        src = open_readonly(broken, private=True)
    except sqlite3.Error:
        return {}
    out: dict[str, tuple[int, int]] = {}
    try:
        try:
            version = src.execute("PRAGMA user_version").fetchone()[0]
            tables = table_columns(src)
        except sqlite3.Error:
            return {}
        if not 0 < version <= len(MIGRATIONS):
            return {}
        target = expected_schema(len(MIGRATIONS))
        for table in SALVAGE_TABLES:
            if table in tables:
                out[table] = _copy_table(src, db, table, sorted(tables[table] & target[table]))
    finally:
        src.close()
    return out


def _copy_table(src: sqlite3.Connection, db: Database, table: str, columns: list[str]
                ) -> tuple[int, int]:
    names = ", ".join(f'"{c}"' for c in columns)
    insert = (f"INSERT OR IGNORE INTO {table} ({names}) "
              f"VALUES ({', '.join('?' * len(columns))})")
    copied = lost = 0
    try:
        cursor = src.execute(f"SELECT {names} FROM {table}")
    except sqlite3.Error:
        return 0, 0
    with db.write() as tx:
        while True:
            try:
                rows = cursor.fetchmany(_BATCH)
            except sqlite3.Error:
                lost += 1  # at least one row sat on the damaged page
                break
            if not rows:
                break
            for row in rows:
                try:
                    added = tx.execute(insert, tuple(row)).rowcount > 0
                except sqlite3.IntegrityError:
                    added = False
                copied += added
                lost += not added
    return copied, lost
