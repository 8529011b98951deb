"""Is the inventory file usable? Checks that never write, and SQLite errors as one line.

:func:`inspect` looks at the file before ModelDeck opens it for writing (header, schema
version, tables, optionally every page); :func:`store_error` turns any ``sqlite3`` failure
into a :class:`StoreError` that says what is wrong and what to do.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import suppress
from functools import cache
from pathlib import Path

from tui.errors import StoreError
from tui.store.schema import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000
REPAIR_HINT = (
    "run 'modeldeck doctor --repair': it keeps the broken file and rebuilds the inventory "
    "from the models on disk"
)
_SQLITE_MAGIC = b"SQLite format 3\x00"


def split_sql(script: str) -> list[str]:
    """The statements of a migration script (a trigger's body stays one statement)."""
    statements: list[str] = []
    current = ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n\t;"):
                statements.append(current.strip()[:-1].strip())
            current = ""
    if current.strip(" \n\t;"):
        statements.append(current.strip().rstrip(";").strip())
    return statements


def is_busy(exc: sqlite3.Error) -> bool:
    """True for "database is locked" style errors (another process holds the file)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc)


def is_store_failure(exc: sqlite3.DatabaseError) -> bool:
    """True for errors about the file (corrupt, read-only, full, missing table, busy, I/O).

    Constraint violations and API misuse stay as they are: callers handle the former, the
    latter is a bug.
    """
    return not isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError)


def store_error(exc: sqlite3.Error, path: Path) -> StoreError:
    """The one-line :class:`StoreError` for a SQLite failure on the inventory at ``path``."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = " ".join(str(exc).split())[:200]
    folder = path.parent
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or (
        "malformed" in text or "not a database" in text
    ):
        return StoreError(f"inventory {path} is damaged ({text})", hint=REPAIR_HINT)
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return StoreError(
            f"inventory {path} cannot be written ({text})",
            hint=f"make {folder} writable or set MODELDECK_STATE_DIR to a writable folder",
        )
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return StoreError(
            f"cannot open inventory {path} ({text})",
            hint=f"check that {folder} exists and is writable, or set MODELDECK_STATE_DIR",
        )
    if name == "SQLITE_FULL" or "disk is full" in text:
        return StoreError(f"no space left to write inventory {path}",
                          hint=f"free some space on the disk holding {folder}")
    if is_busy(exc):
        return StoreError(f"inventory {path} is busy ({text})",
                          hint="another modeldeck process holds it; try again")
    if name.startswith("SQLITE_IOERR"):
        return StoreError(f"I/O error on inventory {path} ({text})",
                          hint="check the disk; if the error stays, " + REPAIR_HINT)
    if "no such table" in text or "no such column" in text:
        return StoreError(f"inventory {path} is missing part of its schema ({text})",
                          hint=REPAIR_HINT)
    return StoreError(f"inventory {path} failed: {text}", hint=REPAIR_HINT)


class NewerInventoryError(StoreError):
    """The inventory was written by a newer ModelDeck: not damaged, never to be repaired."""


def newer_schema(path: Path, version: int) -> StoreError:
    """The error for an inventory written by a newer ModelDeck."""
    return NewerInventoryError(
        f"inventory {path} has schema {version}, newer than this ModelDeck "
        f"({len(MIGRATIONS)})",
        hint="upgrade modeldeck (pip install -U modeldeck); the file was left as it is",
    )


def check_writable(folder: Path) -> None:
    """:class:`StoreError` unless ModelDeck may create files in ``folder``."""
    if os.access(folder, os.W_OK):
        return
    readonly_fs = False
    with suppress(OSError):
        readonly_fs = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    why = "is on a read-only file system" if readonly_fs else "is not writable"
    raise StoreError(
        f"state directory {folder} {why}",
        hint="make it writable or set MODELDECK_STATE_DIR to a writable folder",
    )


def _has_wal(path: Path) -> bool:
    try:
        return os.stat(f"{path}-wal").st_size > 0
    except OSError:
        return False


def _check_header(path: Path) -> StoreError | None:
    """Problems visible in the file itself: not SQLite, or shorter than its header says."""
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as f:
            head = f.read(100)
    except IsADirectoryError:
        return StoreError(f"inventory {path} is a folder, not a file",
                          hint="move it away or set MODELDECK_STATE_DIR elsewhere")
    except OSError as exc:
        return StoreError(f"cannot read inventory {path}: {exc.strerror}",
                          hint="check its permissions or set MODELDECK_STATE_DIR")
    if size == 0:
        return None  # SQLite treats an empty file as a new database
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        return StoreError(f"inventory {path} is damaged (not a SQLite database)",
                          hint=REPAIR_HINT)
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    if page < 512 or page & (page - 1):
        return StoreError(f"inventory {path} is damaged (bad page size {page})",
                          hint=REPAIR_HINT)
    if _has_wal(path):
        return None  # the main file may lag its write-ahead log: let SQLite judge
    pages = int.from_bytes(head[28:32], "big")
    header_valid = pages > 0 and head[24:28] == head[92:96]
    if size % page or (header_valid and size < pages * page):
        expected = pages * page if header_valid else (size // page + 1) * page
        return StoreError(
            f"inventory {path} is damaged (cut short: {size} of {expected} bytes)",
            hint=REPAIR_HINT,
        )
    return None


@cache
def expected_schema(version: int) -> dict[str, frozenset[str]]:
    """Table -> column names after the first ``version`` migrations."""
    conn = sqlite3.connect(":memory:")
    try:
        for script in MIGRATIONS[:version]:
            for statement in split_sql(script):
                conn.execute(statement)
        return table_columns(conn)
    finally:
        conn.close()


def table_columns(conn: sqlite3.Connection) -> dict[str, frozenset[str]]:
    """Table -> column names of the database behind ``conn`` (SQLite's own tables left out)."""
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )]
    return {
        n: frozenset(r[1] for r in conn.execute("SELECT * FROM pragma_table_info(?)", (n,)))
        for n in names
    }


def open_readonly(path: Path, *, private: bool = False) -> sqlite3.Connection:
    """A read-only connection that never writes the main file (for diagnosis and salvage).

    Without a ``-wal`` file no process has the inventory open, so it is read ``immutable``
    (no locks, no ``-wal``/``-shm`` left beside it). ``private``: no other process can be
    using the file (a copy set aside), so an empty ``-wal`` does not count either.
    """
    wal = Path(f"{path}-wal")
    immutable = not os.path.lexists(wal) or (private and not _has_wal(path))
    query = "mode=ro&immutable=1" if immutable else "mode=ro"
    conn = sqlite3.connect(
        f"{Path(path).absolute().as_uri()}?{query}", uri=True, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.row_factory = sqlite3.Row
    return conn


def inspect(path: Path, *, thorough: bool = False) -> StoreError | None:
    """What is wrong with the inventory file at ``path``, or None if it looks usable.

    Never writes the file: checks the header, then the schema version and tables through a
    read-only connection; ``thorough`` also reads every page. A missing or empty file is
    fine (it becomes a new inventory).
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    problem = _check_header(path)
    if problem is not None or path.stat().st_size == 0:
        return problem
    try:
        conn = open_readonly(path)
    except sqlite3.Error as exc:
        return store_error(exc, path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = table_columns(conn)
        if version > len(MIGRATIONS):
            return newer_schema(path, version)
        if version == 0:
            if tables:
                shown = ", ".join(sorted(tables)[:5])
                return StoreError(
                    f"{path} is not a ModelDeck inventory (it holds tables {shown})",
                    hint="set MODELDECK_STATE_DIR to another folder, or move the file aside "
                    "('modeldeck doctor --repair' keeps it and starts a fresh inventory)",
                )
            return None
        problem = _schema_problem(path, tables, expected_schema(version))
        if problem is None and thorough:
            rows = [r[0] for r in conn.execute("PRAGMA quick_check")]
            if rows != ["ok"]:
                problem = StoreError(f"inventory {path} is damaged ({rows[0][:200]})",
                                     hint=REPAIR_HINT)
        return problem
    except sqlite3.Error as exc:
        return store_error(exc, path)
    finally:
        conn.close()


def _schema_problem(
    path: Path, tables: dict[str, frozenset[str]], expected: dict[str, frozenset[str]]
) -> StoreError | None:
    missing = sorted(set(expected) - set(tables))
    if missing:
        what = f"table {missing[0]} is" if len(missing) == 1 else (
            f"tables {', '.join(missing)} are")
        return StoreError(f"inventory {path} is damaged ({what} missing)", hint=REPAIR_HINT)
    for table, columns in sorted(expected.items()):
        lacking = sorted(columns - tables[table])
        if lacking:
            return StoreError(
                f"inventory {path} is damaged (table {table} lacks column "
                f"{', '.join(lacking)})",
                hint=REPAIR_HINT,
            )
    return None
