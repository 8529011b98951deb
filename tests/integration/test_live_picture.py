"""One live picture across processes: the inventory change feed (two connections, then a real
``modeldeck pull`` in another process) and discovery that follows the folders (a copy in two
halves, a delete, partials and in-flight downloads left alone, polling)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tui.discovery import Scanner
from tui.discovery_watch import FolderWatcher
from tui.download.jobs import JobFile, JobStore
from tui.download.sources import JobSpec
from tui.registration import register_download
from tui.settings import Settings
from tui.store import Database, Inventory, ModelRecord
from tui.store.changes import Changes, ChangeWatcher

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes
from tests.support.checks import REPO
from tests.support.clock import FakeClock
from tests.support.gguf import write_gguf


def _wait(predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition"
          ) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached"
        time.sleep(0.02)


@pytest.fixture
def two(settings: Settings):
    """Two connections on one inventory: the watcher's and a writer's."""
    watcher_db, writer_db = Database(settings.db_path), Database(settings.db_path)
    yield watcher_db, writer_db
    watcher_db.close()
    writer_db.close()


# -- the change feed ------------------------------------------------------------------------


def test_change_watcher_reports_what_another_connection_changed(two) -> None:
    watcher_db, writer_db = two
    watcher = ChangeWatcher(watcher_db)
    jobs, inventory = JobStore(writer_db), Inventory(writer_db)
    old = jobs.create(JobSpec(kind="url", url="http://x.invalid/old.gguf"))
    watcher.prime()
    assert not watcher.poll()  # nothing since the baseline; the old job is not "new"

    job = jobs.create(JobSpec(kind="catalog", catalog_id="tiny-entry", quant="Q4_K_M"))
    changes = watcher.poll()
    assert [j.id for j in changes.jobs] == [job.id] and not changes.models
    assert changes.jobs[0].state == "queued" and changes.jobs[0].catalog_id == "tiny-entry"

    jobs.set_plan(job.id, "/m", [JobFile(path="a.gguf", url="http://x.invalid/a", dest="/m/a",
                                         size=100)])
    jobs.save_files(job.id, [JobFile(path="a.gguf", url="http://x.invalid/a", dest="/m/a",
                                     size=100, done_bytes=40)], "downloading")
    (snap,) = watcher.poll().jobs
    assert (snap.state, snap.done_bytes, snap.total_bytes) == ("downloading", 40, 100)

    jobs.request(old.id, "cancel")  # a control request from another process is a change too
    assert [(j.id, j.control) for j in watcher.poll().jobs] == [(old.id, "cancel")]

    inventory.upsert_model(ModelRecord(id="m1", name="m1", format="gguf", path="/m/a",
                                       source="scan"))
    changes = watcher.poll()
    assert changes.models and not changes.jobs
    inventory.set_status("m1", "missing")
    assert watcher.poll().models
    inventory.delete_model("m1")
    assert watcher.poll().models

    jobs.delete(old.id)
    changes = watcher.poll()
    assert changes.removed_jobs == [old.id] and not changes.jobs
    assert not watcher.poll()


def test_change_watcher_bounds_what_a_row_says(two, settings: Settings) -> None:
    watcher_db, _ = two
    watcher = ChangeWatcher(watcher_db)
    watcher.prime()
    conn = sqlite3.connect(settings.db_path)
    with conn:
        conn.execute(
            "INSERT INTO jobs (id, kind, spec, state, name, done_bytes, total_bytes, error, "
            "control, created_at, updated_at) VALUES ('evil', 'url', '{\"catalog_id\": [1]', "
            "'exploding', ?, -5, 'lots', ?, 'detonate', 1, 'yesterday')",
            ("x" * 10_000, "\x1b[2J" * 1000),
        )
    conn.close()
    (snap,) = watcher.poll().jobs
    assert snap.state == "failed" and snap.done_bytes == 0 and snap.total_bytes is None
    assert len(snap.name) <= 500 and len(snap.error or "") <= 500
    assert snap.control is None and snap.updated_at == 0.0 and snap.catalog_id is None


def test_change_watcher_thread_reports_once_when_the_inventory_is_deleted(two, settings
                                                                           ) -> None:
    watcher_db, writer_db = two
    watcher = ChangeWatcher(watcher_db, interval=0.02)
    seen: list[Changes] = []
    errors: list[str] = []
    watcher.prime()
    watcher.start(seen.append, errors.append)
    try:
        JobStore(writer_db).create(JobSpec(kind="url", url="http://x.invalid/a.gguf"))
        _wait(lambda: seen, what="the new job reported")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{settings.db_path}{suffix}").unlink(missing_ok=True)
        _wait(lambda: errors, what="the error reported")
        time.sleep(0.1)
        assert len(errors) == 1 and "deleted while ModelDeck was running" in errors[0]
    finally:
        watcher.stop()


def test_a_late_flush_never_overwrites_a_stopped_state(two) -> None:
    _, writer_db = two
    jobs = JobStore(writer_db)
    job = jobs.create(JobSpec(kind="url", url="http://x.invalid/a.gguf"))
    jobs.set_state(job.id, "connecting")
    jobs.save_files(job.id, [], "downloading")
    assert jobs.require(job.id).state == "downloading"
    jobs.set_state(job.id, "cancelled")
    jobs.save_files(job.id, [], "downloading")
    assert jobs.require(job.id).state == "cancelled"


def _pull_env(hub: FakeHub, settings: Settings) -> dict[str, str]:
    return dict(
        os.environ, HF_ENDPOINT=hub.url, MODELDECK_STATE_DIR=str(settings.state_dir),
        MODELDECK_MODELS_DIR=str(settings.models_dir), MODELDECK_CONNECTIONS_PER_DOWNLOAD="2",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )


@pytest.mark.slow
def test_a_pull_in_another_process_is_seen_progressing_and_done(hub: FakeHub, settings
                                                                 ) -> None:
    data = gguf_bytes(3 << 20, 3)
    hub.add_repo("acme/live", {"live-Q4_K_M.gguf": data})
    hub.add_fault("live-Q4_K_M.gguf", "slow", times=None, rate=512 << 10)
    db = Database(settings.db_path)
    watcher = ChangeWatcher(db, interval=0.05)
    watcher.prime()
    seen: list[Changes] = []
    lock = threading.Lock()

    def record(changes: Changes) -> None:
        with lock:
            seen.append(changes)

    def states() -> list[tuple[str, int]]:
        with lock:
            return [(j.state, j.done_bytes) for c in seen for j in c.jobs]

    watcher.start(record)
    proc = subprocess.Popen([sys.executable, "-m", "tui", "pull", "acme/live:Q4_K_M", "--quiet"],
                            env=_pull_env(hub, settings), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: len({d for s, d in states() if s == "downloading" and d}) >= 2,
              what="two progress readings while downloading")
        _wait(lambda: ("done", len(data)) in states(), what="the job done")
        _wait(lambda: any(c.models for c in seen), what="the model registered")
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        watcher.stop()
        db.close()
    downloading = [d for s, d in states() if s == "downloading"]
    assert downloading == sorted(downloading) and 0 < downloading[0] < len(data)


# -- discovery that follows the folders -----------------------------------------------------


def _gguf_bytes(tmp_path: Path) -> bytes:
    src = write_gguf(tmp_path / "src" / "source.gguf", n_vocab=500,
                     tensor_shapes=((128, 128), (128,)))
    return src.read_bytes()


def test_a_growing_file_is_read_only_once_it_settles(settings: Settings, tmp_path: Path
                                                     ) -> None:
    """Driven step by step with an injected clock: the file is never read while it grows."""
    settings.models_dir.mkdir(parents=True)
    inventory = Inventory(Database(settings.db_path))
    clock = FakeClock()
    watcher = FolderWatcher(settings, inventory, settle=1.0, clock=clock,
                            wall=lambda: time.time() + 100)
    watcher.split_roots()
    data = _gguf_bytes(tmp_path)
    dest = settings.models_dir / "copied-Q4_K_M.gguf"
    with open(dest, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        watcher.note([str(dest)])
        assert watcher.step() is None  # first look: size recorded
        clock.advance(0.6)
        f.write(data[len(data) // 2:])
        f.flush()
        clock.advance(0.6)
        assert watcher.step() is None  # it grew: the wait starts again
    clock.advance(0.6)
    assert watcher.step() is None and watcher.pending == [str(dest)]
    assert inventory.scan_cache_all() == {} and not inventory.list_models()
    clock.advance(0.5)
    report = watcher.step()
    assert report is not None and report.files_read == 1
    (model,) = inventory.list_models()
    assert model.path == str(dest) and model.status == "installed"
    assert watcher.pending == []


def test_partials_hidden_files_and_downloads_in_flight_are_left_alone(settings: Settings,
                                                                       tmp_path: Path) -> None:
    settings.models_dir.mkdir(parents=True)
    inventory = Inventory(Database(settings.db_path))
    clock = FakeClock()
    busy = {str(settings.models_dir / "acme" / "busy-Q4_K_M.gguf")}
    watcher = FolderWatcher(settings, inventory, settle=0.5, clock=clock, busy=lambda: busy,
                            wall=lambda: time.time() + 100)
    watcher.split_roots()
    data = _gguf_bytes(tmp_path)
    ignored = [settings.models_dir / n for n in (
        "a.gguf.part", "a.gguf.lock", "blob.incomplete", ".hidden.gguf", ".cache/x.gguf")]
    for path in ignored:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    watcher.note(str(p) for p in ignored)
    assert watcher.pending == []
    in_flight = Path(next(iter(busy)))
    in_flight.parent.mkdir(parents=True)
    in_flight.write_bytes(data)
    watcher.note([str(in_flight)])
    watcher.step()
    clock.advance(1)
    report = watcher.step()
    assert report is not None and report.files_read == 0
    assert not inventory.list_models() and inventory.scan_cache_all() == {}


def test_a_rescan_keeps_what_a_download_recorded(settings: Settings, tmp_path: Path) -> None:
    """The watcher sees a finished download's file: it must not re-register it as a plain
    scan (its hashes, how it was verified, and a file the user put beside it stay as they
    were)."""
    inventory = Inventory(Database(settings.db_path))
    root = settings.models_dir / "acme" / "tiny"
    weights = write_gguf(root / "tiny-Q4_K_M.gguf")
    (record,) = register_download(
        inventory, model_root=root, files=[(weights, weights.stat().st_size, "ab" * 32)],
        source="hf", source_ref="acme/tiny", revision="c" * 40,
        verified={weights: "sha256"},
    )
    report = Scanner(settings, inventory).scan()
    assert report.updated == [] and report.files_read == 0
    (again,) = inventory.list_models()
    assert again.source == "hf" and again.revision == "c" * 40
    assert [(f.sha256, f.verified) for f in again.files] == [("ab" * 32, "sha256")]
    assert again.id == record.id


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_the_watcher_thread_registers_a_copy_and_marks_a_delete_missing(
        settings: Settings, tmp_path: Path, polling: bool) -> None:
    settings.models_dir.mkdir(parents=True)
    inventory = Inventory(Database(settings.db_path))
    scans: list[list[str]] = []
    watcher = FolderWatcher(settings, inventory, settle=2.5, tick=0.05, poll_interval=0.1,
                            force_polling=polling, on_scan=lambda r, changed: scans.append(changed))
    watcher.start()
    try:
        _wait(lambda: scans, what="the first scan")
        assert (watcher.polled if polling else watcher.watched) == watcher.roots
        data = _gguf_bytes(tmp_path)
        dest = settings.models_dir / "sub" / "copied-Q4_K_M.gguf"
        dest.parent.mkdir()
        with open(dest, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            _wait(lambda: watcher.pending, what="the half file noticed")
            time.sleep(0.3)
            assert inventory.scan_cache_all() == {} and not inventory.list_models()
            f.write(data[len(data) // 2:])
        _wait(lambda: inventory.list_models(), what="the copy registered")
        (model,) = inventory.list_models()
        assert model.path == str(dest) and model.status == "installed"
        dest.unlink()
        _wait(lambda: inventory.list_models()[0].status == "missing", what="marked missing")
    finally:
        watcher.stop()
        inventory.db.close()
