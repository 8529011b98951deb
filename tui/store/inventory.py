"""Installed models, custom catalog entries and the discovery scan cache."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from tui.errors import InvalidInputError, NotFoundError
from tui.metadata.types import ModelMetadata
from tui.store.db import Database
from tui.store.records import CustomEntry, ModelFile, ModelRecord

_MODEL_COLUMNS = (
    "id, name, format, path, source, source_ref, revision, catalog_id, status, architecture, "
    "quantization, parameters, context_length, size_bytes, metadata, installed_at, last_used_at, "
    "load_seconds, tokens_per_s, prompt_tokens_per_s, ttft_ms"
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
        meta = json.dumps(record.metadata.to_dict()) if record.metadata else None
        # A different id already at this path (e.g. a rescan after a rename) is replaced.
        tx.execute("DELETE FROM models WHERE path = ? AND id != ?", (record.path, record.id))
        tx.execute(
            f"INSERT INTO models ({_MODEL_COLUMNS}) VALUES ({', '.join('?' * 21)}) "
            "ON CONFLICT(id) DO UPDATE SET name=excluded.name, format=excluded.format, "
            "path=excluded.path, source=excluded.source, source_ref=excluded.source_ref, "
            "revision=excluded.revision, catalog_id=excluded.catalog_id, status=excluded.status, "
            "architecture=excluded.architecture, quantization=excluded.quantization, "
            "parameters=excluded.parameters, context_length=excluded.context_length, "
            "size_bytes=excluded.size_bytes, metadata=excluded.metadata",
            (
                record.id, record.name, record.format, record.path, record.source,
                record.source_ref, record.revision, record.catalog_id, record.status,
                record.architecture, record.quantization, record.parameters,
                record.context_length, record.size_bytes, meta, record.installed_at,
                record.last_used_at, record.load_seconds, record.tokens_per_s,
                record.prompt_tokens_per_s, record.ttft_ms,
            ),
        )
        tx.execute("DELETE FROM model_files WHERE model_id = ?", (record.id,))
        tx.executemany(
            "INSERT INTO model_files (model_id, path, size, sha256, mtime_ns, verified) "
            "VALUES (?,?,?,?,?,?)",
            [(record.id, f.path, f.size, f.sha256, f.mtime_ns, f.verified)
             for f in record.files],
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
        """The model with this id, or None."""
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
            data = dict(row)
            meta = data.pop("metadata")
            record = ModelRecord(**data)
            record.metadata = ModelMetadata.from_dict(json.loads(meta)) if meta else None
            record.files = [
                ModelFile(path=f[0], size=f[1], sha256=f[2], mtime_ns=f[3], verified=f[4])
                for f in conn.execute(
                    "SELECT path, size, sha256, mtime_ns, verified FROM model_files "
                    "WHERE model_id = ? "
                    "ORDER BY path",
                    (record.id,),
                )
            ]
            records.append(record)
        return records

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
                CustomEntry(id=r[0], kind=r[1], data=json.loads(r[2]), created_at=r[3])
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
        if row is None:
            return None
        return {
            "size": row[0],
            "mtime_ns": row[1],
            "sample_hash": row[2],
            "metadata": json.loads(row[3]) if row[3] else None,
            "error": row[4],
        }

    def scan_cache_all(self) -> dict[str, dict[str, Any]]:
        """Every cached scan result keyed by path."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT path, size, mtime_ns, sample_hash, metadata, error FROM scan_cache"
            ).fetchall()
        return {
            r[0]: {
                "size": r[1],
                "mtime_ns": r[2],
                "sample_hash": r[3],
                "metadata": json.loads(r[4]) if r[4] else None,
                "error": r[5],
            }
            for r in rows
        }

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
                        json.dumps(item["metadata"]) if item.get("metadata") else None,
                        item.get("error"),
                        now,
                    )
                    for path, item in items
                ],
            )
