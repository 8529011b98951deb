"""SQLite access shared by every ModelDeck process on one state directory.

WAL journal, a generous busy timeout and ``BEGIN IMMEDIATE`` for every write, so two
``modeldeck`` processes (say the TUI and a ``modeldeck pull`` in another tmux pane) serialise
their writes instead of failing with "database is locked". One connection per thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tui.errors import StoreError
from tui.store.schema import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000


class Database:
    """A SQLite file with migrations applied on first use.

    Use :meth:`read` for queries and :meth:`write` for changes; both yield a
    ``sqlite3.Connection`` whose rows are ``sqlite3.Row``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create state directory {self.path.parent}: {exc.strerror}",
                hint="set MODELDECK_STATE_DIR to a writable folder",
            ) from None
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open inventory {self.path}: {exc}") from None
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        self._set_wal(conn)
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    @staticmethod
    def _set_wal(conn: sqlite3.Connection) -> None:
        # Switching the journal mode can return SQLITE_BUSY without calling the busy handler
        # while another process holds the file; retry for a while.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(
                        f"the inventory's file system does not support SQLite WAL (got {mode})",
                        hint="put MODELDECK_STATE_DIR on a local disk",
                    )
                return
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _migrate(self) -> None:
        conn = self._connect()
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current == len(MIGRATIONS):
            return
        if current > len(MIGRATIONS):
            raise StoreError(
                f"inventory {self.path} has schema {current}, newer than this ModelDeck "
                f"({len(MIGRATIONS)})",
                hint="upgrade modeldeck",
            )
        with self.write() as tx:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            current = tx.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in _split_sql(script):
                    tx.execute(statement)
                tx.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        """The number of migrations applied."""
        with self.read() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection for queries (autocommit; each statement sees a consistent snapshot)."""
        yield self._connect()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): committed on success, rolled back on error."""
        conn = self._connect()
        if conn.in_transaction:  # nested use on one thread joins the outer transaction
            yield conn
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"inventory {self.path} is busy: {exc}", hint="try again") from None
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this object opened (on any thread)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
