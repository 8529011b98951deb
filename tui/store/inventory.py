"""Installed models, custom catalog entries and the discovery scan cache."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from tui.errors import InvalidInputError, NotFoundError
from tui.kinds import KINDS
from tui.kinds import normalise as normalise_kind
from tui.metadata.kinds import kind_of
from tui.metadata.types import (
    IGNORED_KEY,
    SQLITE_INT_MAX,
    SQLITE_INT_MIN,
    ModelMetadata,
    bounded_json,
    describe,
    sanitize,
)
from tui.store.db import Database
from tui.store.records import CustomEntry, ModelFile, ModelRecord

_MODEL_COLUMNS = (
    "id, name, format, path, source, source_ref, revision, catalog_id, status, architecture, "
    "quantization, parameters, context_length, size_bytes, metadata, installed_at, last_used_at, "
    "load_seconds, tokens_per_s, prompt_tokens_per_s, ttft_ms, kind"
)


class Inventory:
    """Queries and changes on the models, custom entries and scan cache tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- models -------------------------------------------------------------------------

    def upsert_model(self, record: ModelRecord) -> None:
        """Insert or replace a model and its file list in one transaction."""
        if not record.installed_at:
            record.installed_at = time.time()
        with self.db.write() as tx:
            self._upsert(tx, record)

    def _upsert(self, tx: sqlite3.Connection, record: ModelRecord) -> None:
        parameters, context_length, size_bytes, meta = _storable(record)
        # A different id already at this path (e.g. a rescan after a rename) is replaced.
        tx.execute("DELETE FROM models WHERE path = ? AND id != ?", (record.path, record.id))
        tx.execute(
            f"INSERT INTO models ({_MODEL_COLUMNS}) VALUES ({', '.join('?' * 22)}) "
            "ON CONFLICT(id) DO UPDATE SET name=excluded.name, format=excluded.format, "
            "path=excluded.path, source=excluded.source, source_ref=excluded.source_ref, "
            "revision=excluded.revision, catalog_id=excluded.catalog_id, status=excluded.status, "
            "architecture=excluded.architecture, quantization=excluded.quantization, "
            "parameters=excluded.parameters, context_length=excluded.context_length, "
            "size_bytes=excluded.size_bytes, metadata=excluded.metadata, kind=excluded.kind",
            (
                record.id, record.name, record.format, record.path, record.source,
                record.source_ref, record.revision, record.catalog_id, record.status,
                record.architecture, record.quantization, parameters,
                context_length, size_bytes, meta, record.installed_at,
                record.last_used_at, record.load_seconds, record.tokens_per_s,
                record.prompt_tokens_per_s, record.ttft_ms, normalise_kind(record.kind),
            ),
        )
        tx.execute("DELETE FROM model_files WHERE model_id = ?", (record.id,))
        tx.executemany(
            "INSERT INTO model_files (model_id, path, size, sha256, mtime_ns, dev, ino, verified) "
            "VALUES (?,?,?,?,?,?,?,?)",
            [
                (record.id, f.path, f.size, f.sha256, f.mtime_ns, _i64(f.dev), _i64(f.ino),
                 f.verified)
                for f in record.files
            ],
        )

    def upsert_models(self, records: Iterable[ModelRecord]) -> None:
        """Insert or replace many models in one transaction."""
        now = time.time()
        with self.db.write() as tx:
            for record in records:
                if not record.installed_at:
                    record.installed_at = now
                self._upsert(tx, record)

    def get_model(self, model_id: str) -> ModelRecord | None:
        """The model with this id, or None (also for text SQLite cannot hold, such as a
        command-line argument with bytes that are not UTF-8)."""
        if not _is_utf8(model_id):
            return None
        with self.db.read() as conn:
            row = conn.execute(
                f"SELECT {_MODEL_COLUMNS} FROM models WHERE id = ?", (model_id,)
            ).fetchone()
            if row is None:
                return None
            return self._hydrate(conn, [row])[0]

    def require_model(self, model_id: str) -> ModelRecord:
        """The model with this id; :class:`NotFoundError` if there is none."""
        record = self.get_model(model_id)
        if record is None:
            raise NotFoundError(
                f"no installed model with id {model_id!r}", hint="see 'modeldeck ls' for ids"
            )
        return record

    def find_by_path(self, path: str) -> ModelRecord | None:
        """The model whose main path or one of whose files is ``path``."""
        if not _is_utf8(path):
            return None
        with self.db.read() as conn:
            row = conn.execute(
                f"SELECT {_MODEL_COLUMNS} FROM models WHERE path = ?", (path,)
            ).fetchone()
            if row is None:
                row = conn.execute(
                    f"SELECT {_MODEL_COLUMNS} FROM models WHERE id = "
                    "(SELECT model_id FROM model_files WHERE path = ? LIMIT 1)",
                    (path,),
                ).fetchone()
            return self._hydrate(conn, [row])[0] if row else None

    def list_models(self, *, status: str | None = None) -> list[ModelRecord]:
        """All models (optionally of one status), ordered by name."""
        with self.db.read() as conn:
            if status:
                rows = conn.execute(
                    f"SELECT {_MODEL_COLUMNS} FROM models WHERE status = ? ORDER BY name, id",
                    (status,),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_MODEL_COLUMNS} FROM models ORDER BY name, id"
                ).fetchall()
            return self._hydrate(conn, rows)

    def model_ids(self) -> set[str]:
        """Every model id in the inventory."""
        with self.db.read() as conn:
            return {r[0] for r in conn.execute("SELECT id FROM models")}

    def set_status(self, model_id: str, status: str) -> None:
        """Change one model's status."""
        with self.db.write() as tx:
            cur = tx.execute("UPDATE models SET status = ? WHERE id = ?", (status, model_id))
            if cur.rowcount == 0:
                raise NotFoundError(f"no installed model with id {model_id!r}")

    def delete_model(self, model_id: str) -> None:
        """Remove a model row and its file rows (files on disk are the caller's business)."""
        with self.db.write() as tx:
            tx.execute("DELETE FROM models WHERE id = ?", (model_id,))

    def delete_models(self, model_ids: Iterable[str]) -> None:
        """Remove several model rows in one transaction."""
        with self.db.write() as tx:
            tx.executemany("DELETE FROM models WHERE id = ?", [(m,) for m in model_ids])

    def touch_last_used(self, model_id: str, when: float | None = None) -> None:
        """Record that a model was just used."""
        with self.db.write() as tx:
            tx.execute(
                "UPDATE models SET last_used_at = ? WHERE id = ?",
                (when if when is not None else time.time(), model_id),
            )

    def record_metrics(
        self,
        model_id: str,
        *,
        load_seconds: float | None = None,
        tokens_per_s: float | None = None,
        prompt_tokens_per_s: float | None = None,
        ttft_ms: float | None = None,
    ) -> None:
        """Save measured performance; ``None`` leaves a value as it was."""
        with self.db.write() as tx:
            tx.execute(
                "UPDATE models SET load_seconds = COALESCE(?, load_seconds), "
                "tokens_per_s = COALESCE(?, tokens_per_s), "
                "prompt_tokens_per_s = COALESCE(?, prompt_tokens_per_s), "
                "ttft_ms = COALESCE(?, ttft_ms) WHERE id = ?",
                (load_seconds, tokens_per_s, prompt_tokens_per_s, ttft_ms, model_id),
            )

    def file_owners(self, paths: Iterable[str], *, exclude: str) -> dict[str, str]:
        """path -> the id of another model (not ``exclude``) that also records it (a vision
        projector shared by two quantizations of one model)."""
        out: dict[str, str] = {}
        with self.db.read() as conn:
            for path in paths:
                row = conn.execute(
                    "SELECT model_id FROM model_files WHERE path = ? AND model_id != ? "
                    "ORDER BY model_id LIMIT 1", (path, exclude),
                ).fetchone()
                if row is not None:
                    out[path] = row[0]
        return out

    def files_by_sha256(self) -> dict[str, list[tuple[str, str]]]:
        """sha256 -> [(model_id, path)] for every file whose hash is known."""
        out: dict[str, list[tuple[str, str]]] = {}
        with self.db.read() as conn:
            for model_id, path, sha in conn.execute(
                "SELECT model_id, path, sha256 FROM model_files WHERE sha256 IS NOT NULL"
            ):
                out.setdefault(sha, []).append((model_id, path))
        return out

    @staticmethod
    def _hydrate(conn: sqlite3.Connection, rows: list[sqlite3.Row]) -> list[ModelRecord]:
        records: list[ModelRecord] = []
        for row in rows:
            record = model_from_row(dict(row))
            record.files = [
                ModelFile(path=_text(f[0]), size=_int(f[1]) or 0, sha256=_opt_text(f[2]),
                          mtime_ns=_int(f[3]), dev=_u64(_int(f[4])), ino=_u64(_int(f[5])),
                          verified=_opt_text(f[6]))
                for f in conn.execute(
                    "SELECT path, size, sha256, mtime_ns, dev, ino, verified FROM model_files "
                    "WHERE model_id = ? ORDER BY path",
                    (record.id,),
                )
            ]
            records.append(record)
        return records

    # -- folders ModelDeck created -------------------------------------------------------

    def add_owned_dirs(self, dirs: Iterable[tuple[str, int, int]]) -> None:
        """Record folders ModelDeck created: (path, st_dev, st_ino). Known paths are updated."""
        now = time.time()
        with self.db.write() as tx:
            tx.executemany(
                "INSERT INTO owned_dirs (path, dev, ino, created_at) VALUES (?,?,?,?) "
                "ON CONFLICT(path) DO UPDATE SET dev=excluded.dev, ino=excluded.ino",
                [(p, _i64(dev), _i64(ino), now) for p, dev, ino in dirs],
            )

    def owned_dirs(self) -> dict[str, tuple[int, int]]:
        """Folders ModelDeck created: path -> (st_dev, st_ino) when it recorded them."""
        with self.db.read() as conn:
            return {
                r[0]: (_u64(r[1]), _u64(r[2]))  # type: ignore[misc]
                for r in conn.execute("SELECT path, dev, ino FROM owned_dirs")
            }

    def forget_owned_dirs(self, paths: Iterable[str]) -> None:
        """Drop folders from the record (they were removed)."""
        with self.db.write() as tx:
            tx.executemany("DELETE FROM owned_dirs WHERE path = ?", [(p,) for p in paths])

    # -- custom catalog entries ---------------------------------------------------------

    def add_custom(self, entry: CustomEntry) -> None:
        """Add a custom catalog entry; its id must be new."""
        entry.created_at = entry.created_at or time.time()
        with self.db.write() as tx:
            try:
                tx.execute(
                    "INSERT INTO custom_entries (id, kind, data, created_at) VALUES (?,?,?,?)",
                    (entry.id, entry.kind, json.dumps(entry.data), entry.created_at),
                )
            except sqlite3.IntegrityError:
                raise InvalidInputError(
                    f"a custom entry with id {entry.id!r} already exists",
                    hint="pick another --id or remove it first",
                ) from None

    def list_custom(self) -> list[CustomEntry]:
        """All custom entries, oldest first."""
        with self.db.read() as conn:
            return [
                CustomEntry(id=_text(r[0]), kind=_text(r[1]), data=_json_dict(r[2]) or {},
                            created_at=_float(r[3]) or 0.0)
                for r in conn.execute(
                    "SELECT id, kind, data, created_at FROM custom_entries ORDER BY created_at, id"
                )
            ]

    def remove_custom(self, entry_id: str) -> bool:
        """Remove a custom entry; True if one was removed."""
        with self.db.write() as tx:
            return tx.execute("DELETE FROM custom_entries WHERE id = ?", (entry_id,)).rowcount > 0

    # -- scan cache ---------------------------------------------------------------------

    def scan_cache_get(self, path: str) -> dict[str, Any] | None:
        """The cached scan result for ``path`` (size, mtime_ns, sample_hash, metadata, error)."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT size, mtime_ns, sample_hash, metadata, error FROM scan_cache "
                "WHERE path = ?",
                (path,),
            ).fetchone()
        return _cache_item(*row) if row is not None else None

    def scan_cache_all(self) -> dict[str, dict[str, Any]]:
        """Every cached scan result keyed by path."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT path, size, mtime_ns, sample_hash, metadata, error FROM scan_cache"
            ).fetchall()
        out = {}
        for r in rows:
            item = _cache_item(*r[1:])
            if item is not None and isinstance(r[0], str):
                out[r[0]] = item
        return out

    def scan_cache_put_many(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Store scan results: (path, {size, mtime_ns, sample_hash, metadata, error})."""
        now = time.time()
        with self.db.write() as tx:
            tx.executemany(
                "INSERT OR REPLACE INTO scan_cache "
                "(path, size, mtime_ns, sample_hash, metadata, error, scanned_at) "
                "VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        path,
                        item["size"],
                        item["mtime_ns"],
                        item.get("sample_hash"),
                        (
                            json.dumps(bounded_json(item["metadata"]))
                            if item.get("metadata")
                            else None
                        ),
                        item.get("error"),
                        now,
                    )
                    for path, item in items
                ],
            )


def _storable(record: ModelRecord) -> tuple[Any, Any, Any, str | None]:
    """The record's integer columns and metadata JSON as SQLite can hold them.

    The last line of defence behind the readers' own bounds: an int outside SQLite's signed
    64-bit range is stored as NULL (0 where the column is NOT NULL) and the metadata notes
    it; the metadata JSON never holds such an int, NaN or infinity.
    """
    dropped: dict[str, str] = {}

    def fit(name: str, value: Any, default: int | None) -> Any:
        if isinstance(value, int) and not SQLITE_INT_MIN <= value <= SQLITE_INT_MAX:
            dropped[name] = describe(value)
            return default
        return value

    parameters = fit("parameters", record.parameters, None)
    context_length = fit("context_length", record.context_length, None)
    size_bytes = fit("size_bytes", record.size_bytes, 0)
    meta = None
    if record.metadata is not None:
        copy = replace(record.metadata, extra=dict(record.metadata.extra or {}))
        data = sanitize(copy).to_dict()
        if dropped:
            notes = data["extra"].get(IGNORED_KEY)
            data["extra"][IGNORED_KEY] = {**(notes if isinstance(notes, dict) else {}), **dropped}
        meta = json.dumps(data)
    return parameters, context_length, size_bytes, meta


def _i64(n: int | None) -> int | None:
    """An unsigned 64-bit number (st_dev, st_ino) as SQLite's signed INTEGER."""
    return n - (1 << 64) if n is not None and n >= 1 << 63 else n


def _u64(n: int | None) -> int | None:
    """The inverse of :func:`_i64`."""
    return n + (1 << 64) if n is not None and n < 0 else n


# -- reading rows back: a garbage value becomes unknown, never an exception ---------------
# The file may have been edited or damaged by something other than ModelDeck.

_INT_COLUMNS = ("parameters", "context_length", "size_bytes")
_FLOAT_COLUMNS = ("installed_at", "last_used_at", "load_seconds", "tokens_per_s",
                  "prompt_tokens_per_s", "ttft_ms")
_TEXT_COLUMNS = ("source_ref", "revision", "catalog_id", "architecture", "quantization")


def model_from_row(data: dict[str, Any]) -> ModelRecord:
    """A :class:`ModelRecord` from a ``models`` row, with every column type-checked."""
    record = ModelRecord(
        id=_text(data["id"]), name=_text(data["name"]) or _text(data["id"]),
        format=_text(data["format"]), path=_text(data["path"]), source=_text(data["source"]),
        status=_text(data["status"]) or "installed",
    )
    for key in _TEXT_COLUMNS:
        setattr(record, key, _opt_text(data.get(key)))
    for key in _INT_COLUMNS:
        setattr(record, key, _int(data.get(key)))
    for key in _FLOAT_COLUMNS:
        setattr(record, key, _float(data.get(key)))
    record.size_bytes = record.size_bytes or 0
    record.installed_at = record.installed_at or 0.0
    record.metadata = metadata_from_json(data.get("metadata"), record.format)
    kind = data.get("kind")
    # Rows written before kinds existed (NULL) get theirs from their metadata.
    record.kind = kind if kind in KINDS else kind_of(record.metadata, record.format)
    return record


def metadata_from_json(text: Any, fmt: str = "") -> ModelMetadata | None:
    """Stored metadata JSON as :class:`ModelMetadata`; None if it is not readable."""
    data = _json_dict(text)
    if data is None:
        return None
    fields = ModelMetadata.__dataclass_fields__
    clean = {k: v for k, v in data.items() if k in fields and _fits(str(fields[k].type), v)}
    clean.setdefault("format", fmt or "gguf")
    return ModelMetadata.from_dict(clean)


def _fits(kind: str, value: Any) -> bool:
    if kind.startswith("int"):
        return _int(value) is not None and value >= 0
    if kind.startswith("str"):
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    return kind.startswith("dict") and isinstance(value, dict)


def _cache_item(size: Any, mtime_ns: Any, sample: Any, meta: Any, error: Any
                ) -> dict[str, Any] | None:
    """A scan-cache row as a dict; None (a cache miss: read the file again) if damaged."""
    metadata = metadata_from_json(meta) if meta else None
    if _int(size) is None or _int(mtime_ns) is None or (meta and metadata is None):
        return None
    return {
        "size": size, "mtime_ns": mtime_ns, "sample_hash": _opt_text(sample),
        "metadata": metadata.to_dict() if metadata else None, "error": _opt_text(error),
    }


def _json_dict(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str | bytes):
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _is_utf8(text: str) -> bool:
    """Can SQLite store ``text``? (Not if it holds lone surrogates: undecodable bytes.)"""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _opt_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
