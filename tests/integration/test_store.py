"""The SQLite inventory: migrations, records, and two processes writing at once."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from tui.errors import InvalidInputError, NotFoundError, StoreError
from tui.metadata.types import ModelMetadata
from tui.store import CustomEntry, Database, Inventory, ModelFile, ModelRecord
from tui.store.schema import MIGRATIONS


def _record(i: int, root: str = "/models") -> ModelRecord:
    return ModelRecord(
        id=f"m{i}", name=f"Model {i}", format="gguf", path=f"{root}/m{i}.gguf", source="scan",
        quantization="Q4_K_M", parameters=1000 + i, size_bytes=10 * i,
        metadata=ModelMetadata(format="gguf", architecture="llama", n_layers=2),
        files=[ModelFile(path=f"{root}/m{i}.gguf", size=10 * i, sha256="ab" * 32)],
    )


def test_schema_is_migrated_with_wal(tmp_path: Path) -> None:
    db = Database(tmp_path / "s" / "x.db")
    assert db.schema_version == len(MIGRATIONS)
    with db.read() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000
    db.close()
    # Re-opening does not re-run migrations.
    db2 = Database(tmp_path / "s" / "x.db")
    assert db2.schema_version == len(MIGRATIONS)
    db2.close()


def test_file_identity_and_owned_folders_round_trip(tmp_path: Path) -> None:
    inv = Inventory(Database(tmp_path / "x.db"))
    big = (1 << 64) - 5  # an inode number above SQLite's signed 64-bit range
    record = _record(1)
    record.files[0].dev, record.files[0].ino, record.files[0].mtime_ns = 2049, big, 7
    inv.upsert_model(record)
    (f,) = inv.require_model("m1").files
    assert (f.dev, f.ino, f.mtime_ns) == (2049, big, 7)
    inv.add_owned_dirs([("/models/acme", 2049, big), ("/models/acme/x", 2049, 12)])
    assert inv.owned_dirs() == {"/models/acme": (2049, big), "/models/acme/x": (2049, 12)}
    inv.forget_owned_dirs(["/models/acme/x"])
    assert set(inv.owned_dirs()) == {"/models/acme"}


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    Database(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this ModelDeck"):
        Database(path)


def test_model_round_trip_and_metrics(tmp_path: Path) -> None:
    inv = Inventory(Database(tmp_path / "x.db"))
    inv.upsert_model(_record(1))
    got = inv.require_model("m1")
    assert got.metadata is not None and got.metadata.architecture == "llama"
    assert got.files[0].sha256 == "ab" * 32 and got.installed_at > 0
    inv.record_metrics("m1", load_seconds=1.5, tokens_per_s=40.0)
    inv.record_metrics("m1", ttft_ms=12.0)  # None leaves earlier values alone
    got = inv.require_model("m1")
    assert (got.load_seconds, got.tokens_per_s, got.ttft_ms) == (1.5, 40.0, 12.0)
    inv.touch_last_used("m1", when=123.0)
    assert inv.require_model("m1").last_used_at == 123.0
    assert inv.find_by_path("/models/m1.gguf").id == "m1"
    inv.delete_model("m1")
    assert inv.get_model("m1") is None
    with pytest.raises(NotFoundError, match="modeldeck ls"):
        inv.require_model("m1")
    with inv.db.read() as conn:  # file rows went with the model (foreign key cascade)
        assert conn.execute("SELECT COUNT(*) FROM model_files").fetchone()[0] == 0


def test_write_rolls_back_on_error(tmp_path: Path) -> None:
    inv = Inventory(Database(tmp_path / "x.db"))
    with pytest.raises(RuntimeError), inv.db.write() as tx:
        tx.execute("INSERT INTO custom_entries VALUES ('a','hf','{}',1)")
        raise RuntimeError("boom")
    assert inv.list_custom() == []


def test_custom_entries(tmp_path: Path) -> None:
    inv = Inventory(Database(tmp_path / "x.db"))
    inv.add_custom(CustomEntry(id="a", kind="url", data={"url": "https://x/y.gguf"}))
    with pytest.raises(InvalidInputError, match="already exists"):
        inv.add_custom(CustomEntry(id="a", kind="url", data={}))
    assert [c.id for c in inv.list_custom()] == ["a"]
    assert inv.remove_custom("a") and not inv.remove_custom("a")


def _writer(db_path: str, start: int, count: int, errors) -> None:
    try:
        inv = Inventory(Database(Path(db_path)))
        for i in range(start, start + count):
            inv.upsert_model(_record(i))
            inv.record_metrics(f"m{i}", tokens_per_s=float(i))
            inv.list_models()
    except Exception as exc:  # reported to the parent
        errors.put(repr(exc))


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    db_path = tmp_path / "shared.db"  # neither process has created it yet
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(db_path), n * 1000, 150, errors))
             for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert errors.empty(), errors.get()
    inv = Inventory(Database(db_path))
    models = inv.list_models()
    assert len(models) == 300
    assert all(m.tokens_per_s == float(m.id[1:]) for m in models)
