"""SQLite access shared by every ModelDeck process on one state directory.

WAL journal, a generous busy timeout and ``BEGIN IMMEDIATE`` for every write, so two
``modeldeck`` processes (say the TUI and a ``modeldeck pull`` in another tmux pane) serialise
their writes instead of failing with "database is locked". One connection per thread.

A damaged, foreign, newer or unwritable inventory is refused at open, before anything is
written (:mod:`tui.store.health`); any SQLite failure later on (a page found corrupt mid-run,
a full disk, the file deleted under a running process) is one :class:`StoreError` line.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tui.errors import StoreError
from tui.store.health import (
    BUSY_TIMEOUT_MS,
    REPAIR_HINT,
    check_writable,
    inspect,
    is_busy,
    is_store_failure,
    newer_schema,
    split_sql,
    store_error,
)
from tui.store.schema import MIGRATIONS

__all__ = ["BUSY_TIMEOUT_MS", "Database"]


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
        self._identity: tuple[int, int] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create state directory {self.path.parent}: {exc.strerror}",
                hint="set MODELDECK_STATE_DIR to a writable folder",
            ) from None
        check_writable(self.path.parent)
        problem = inspect(self.path)
        if problem is not None:
            raise problem
        try:
            self._migrate()
            self._identity = _identity(self.path)
        except BaseException:
            self.close()
            raise

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
            raise store_error(exc, self.path) from None
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._set_wal(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise store_error(exc, self.path) from None
        except BaseException:
            conn.close()
            raise
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
            except sqlite3.OperationalError as exc:
                if time.monotonic() > deadline or not is_busy(exc):
                    raise
                time.sleep(0.05)

    def _migrate(self) -> None:
        with self.read() as conn:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current == len(MIGRATIONS):
            return
        if current > len(MIGRATIONS):
            raise newer_schema(self.path, current)
        with self.write() as tx:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            current = tx.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in split_sql(script):
                    tx.execute(statement)
                tx.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        """The number of migrations applied."""
        with self.read() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def verify(self) -> None:
        """Read every page (``PRAGMA quick_check``); :class:`StoreError` if any is damaged."""
        with self.read() as conn:
            rows = [r[0] for r in conn.execute("PRAGMA quick_check")]
        if rows != ["ok"]:
            raise StoreError(f"inventory {self.path} is damaged ({rows[0][:200]})",
                             hint=REPAIR_HINT)

    def _check_same_file(self) -> None:
        """Refuse to go on once the file was deleted or replaced under this process."""
        if self._identity is None:
            return
        now = _identity(self.path)
        if now == self._identity:
            return
        raise StoreError(
            f"inventory {self.path} was {'deleted' if now is None else 'replaced'} while "
            "ModelDeck was running; nothing more was recorded",
            hint="run the command again to use the inventory now at that path "
            "('modeldeck scan' registers the models already on disk)",
        )

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection for queries (autocommit; each statement sees a consistent snapshot)."""
        conn = self._connect()
        if not conn.in_transaction:
            self._check_same_file()
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            if not is_store_failure(exc):
                raise
            raise store_error(exc, self.path) from None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): committed on success, rolled back on error."""
        conn = self._connect()
        if conn.in_transaction:  # nested use on one thread joins the outer transaction
            yield conn
            return
        self._check_same_file()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise store_error(exc, self.path) from None
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            _rollback(conn)
            if not is_store_failure(exc):
                raise
            raise store_error(exc, self.path) from None
        except BaseException:
            _rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise store_error(exc, self.path) from None

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


def _rollback(conn: sqlite3.Connection) -> None:
    with suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read inventory {path}: {exc.strerror}") from None
    return st.st_dev, st.st_ino
