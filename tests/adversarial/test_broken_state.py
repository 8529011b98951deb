"""A broken inventory is one line and a non-zero exit, never a traceback, and loses nothing.

Damaged files (cut short, random bytes, a page of garbage, a foreign or newer database, a
missing table) are refused before anything is written: the file stays byte-identical and the
models folder untouched until ``modeldeck doctor --repair`` sets it aside and rebuilds the
inventory. Garbage JSON in a column costs that field, never the row. A read-only state
directory and an inventory deleted under a running pull are one line too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tui.cli import main
from tui.store.schema import MIGRATIONS

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes
from tests.support.checks import REPO, assert_one_line_error, run_modeldeck, tree_digest
from tests.support.gguf import write_gguf


@pytest.fixture
def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two models on disk, scanned into a healthy inventory (closed, WAL checkpointed)."""
    models, state = tmp_path / "models", tmp_path / "state"
    monkeypatch.setenv("MODELDECK_MODELS_DIR", str(models))
    monkeypatch.setenv("MODELDECK_STATE_DIR", str(state))
    monkeypatch.setenv("MODELDECK_SCAN_HF_CACHE", "0")
    write_gguf(models / "acme" / "tiny-Q4_K_M.gguf", name="Tiny")
    write_gguf(models / "other.gguf", name="Other", seed=1)
    assert main(["scan"]) == 0
    assert main(["add", "url", "https://example.com/x.gguf", "--id", "custom-x"]) == 0
    assert not (state / "modeldeck.db-wal").exists()
    return tmp_path


def _db(pod: Path) -> Path:
    return pod / "state" / "modeldeck.db"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _root_page(db: Path, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                            (table,)).fetchone()[0]
    finally:
        conn.close()


def _garble_page(db: Path, page: int) -> None:
    data = bytearray(db.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    data[(page - 1) * size:page * size] = b"\xa5" * size
    db.write_bytes(bytes(data))


def _cut(at: int) -> Callable[[Path], None]:
    def damage(db: Path) -> None:
        db.write_bytes(db.read_bytes()[:at])

    return damage


def _random(db: Path) -> None:
    db.write_bytes(os.urandom(20_000))


def _foreign(db: Path) -> None:
    db.unlink()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    conn.commit()
    conn.close()


def _newer(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 3}")
    conn.close()


def _drop_jobs(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE job_files")
    conn.execute("DROP TABLE jobs")
    conn.commit()
    conn.close()


def _garble_models(db: Path) -> None:
    _garble_page(db, _root_page(db, "models"))


DAMAGES = {
    "cut-in-header": (_cut(50), ["damaged", "doctor --repair"]),
    "cut-after-header": (_cut(100), ["damaged", "cut short", "doctor --repair"]),
    "cut-mid-page": (_cut(4096 + 777), ["damaged", "cut short"]),
    "cut-at-page": (_cut(3 * 4096), ["damaged", "cut short"]),
    "random-bytes": (_random, ["damaged", "not a SQLite database"]),
    "foreign-sqlite": (_foreign, ["not a ModelDeck inventory", "invoices"]),
    "newer-schema": (_newer, ["newer than this ModelDeck", "upgrade"]),
    "missing-table": (_drop_jobs, ["damaged", "missing", "doctor --repair"]),
    "garbage-page": (_garble_models, ["damaged", "malformed", "doctor --repair"]),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_inventory_is_one_line_and_left_as_it_is(pod: Path, damage: str) -> None:
    make, needles = DAMAGES[damage]
    db = _db(pod)
    make(db)
    before_db = _sha(db)
    before = tree_digest(pod, skip=(pod / "state",))
    proc = run_modeldeck("ls")
    assert_one_line_error(proc, str(db), *needles)
    assert _sha(db) == before_db
    assert tree_digest(pod, skip=(pod / "state",)) == before


def test_doctor_diagnoses_in_one_line(pod: Path) -> None:
    db = _db(pod)
    healthy = run_modeldeck("doctor")
    line = [x for x in healthy.stdout.splitlines() if " inventory " in x]
    assert len(line) == 1 and line[0].startswith("[ok") and "2 models" in line[0]
    _garble_models(db)
    before = _sha(db)
    sick = run_modeldeck("doctor")
    assert sick.returncode == 1 and "Traceback" not in sick.stderr
    line = [x for x in sick.stdout.splitlines() if " inventory " in x]
    assert len(line) == 1 and line[0].startswith("[fail")
    assert "damaged" in line[0] and "doctor --repair" in line[0]
    assert _sha(db) == before


def test_dashboard_start_with_a_damaged_inventory_is_one_line(pod: Path) -> None:
    """The dashboard reads every page before Textual takes the terminal."""
    db = _db(pod)
    _garble_page(db, _root_page(db, "custom_entries"))
    before = _sha(db)
    proc = run_modeldeck(timeout=30)
    assert_one_line_error(proc, "damaged", "doctor --repair")
    assert _sha(db) == before


@pytest.mark.parametrize("damage", ["garbage-page", "cut-at-page"])
def test_repair_keeps_the_broken_file_and_rebuilds_from_disk(pod: Path, damage: str) -> None:
    db = _db(pod)
    part = pod / "models" / "half.gguf.part"
    part.write_bytes(b"GGUF" + bytes(1000))
    DAMAGES[damage][0](db)
    broken = _sha(db)
    models_before = tree_digest(pod / "models")

    repaired = run_modeldeck("doctor", "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert "Traceback" not in repaired.stderr
    kept = sorted((pod / "state").glob("modeldeck.db.broken-*[0-9]"))
    assert len(kept) == 1 and _sha(kept[0]) == broken
    assert str(kept[0]) in repaired.stdout
    assert "1 partial downloads" in repaired.stdout and str(part) in repaired.stdout
    assert tree_digest(pod / "models") == models_before

    listed = run_modeldeck("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    paths = sorted(m["path"] for m in json.loads(listed.stdout))
    assert paths == sorted(str(p) for p in (pod / "models").rglob("*.gguf"))
    if damage == "garbage-page":  # the custom entry's page was readable: it came back
        catalog = run_modeldeck("catalog", "--custom", "--json")
        assert [e["id"] for e in json.loads(catalog.stdout)] == ["custom-x"]
    again = run_modeldeck("doctor", "--repair")
    assert again.returncode == 0 and "healthy" in again.stdout


def test_repair_leaves_a_newer_inventory_alone(pod: Path) -> None:
    db = _db(pod)
    _newer(db)
    before = tree_digest(pod)
    proc = run_modeldeck("doctor", "--repair")
    assert_one_line_error(proc, "newer than this ModelDeck", "--repair leaves it alone")
    assert tree_digest(pod) == before


def test_garbage_json_costs_the_field_not_the_row(pod: Path) -> None:
    db = _db(pod)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE models SET metadata = '{not json' WHERE path LIKE '%other.gguf'")
        conn.execute("UPDATE models SET metadata = '[1, 2]', parameters = 'many' "
                     "WHERE path LIKE '%tiny-Q4_K_M.gguf'")
        conn.execute("UPDATE custom_entries SET data = 'nope{'")
        conn.execute("UPDATE scan_cache SET metadata = '{\"format\": '")
        conn.execute(
            "INSERT INTO jobs (id, kind, spec, state, done_bytes, created_at, updated_at) "
            "VALUES ('badjob000001', 'hf', '{\"kind\": ', 'queued', 0, 1, 1)"
        )
    conn.close()

    listed = run_modeldeck("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    models = {Path(m["path"]).name: m for m in json.loads(listed.stdout)}
    assert set(models) == {"other.gguf", "tiny-Q4_K_M.gguf"}
    assert all(m["metadata"] is None for m in models.values())
    assert models["tiny-Q4_K_M.gguf"]["parameters"] is None

    catalog = run_modeldeck("catalog", "--custom", "--json")
    assert catalog.returncode == 0, catalog.stderr
    assert [e["id"] for e in json.loads(catalog.stdout)] == ["custom-x"]

    jobs = run_modeldeck("jobs", "--json")
    assert jobs.returncode == 0, jobs.stderr
    (job,) = json.loads(jobs.stdout)
    assert job["state"] == "failed" and "unreadable" in job["error"]
    resumed = run_modeldeck("jobs", "resume", "badjob000001")
    assert_one_line_error(resumed, "unreadable", "jobs cancel badjob000001")

    scanned = run_modeldeck("scan", "--json")  # the damaged cache entry is read again
    assert scanned.returncode == 0, scanned.stderr
    assert json.loads(scanned.stdout)["files_read"] >= 1
    info = json.loads(run_modeldeck("ls", "--json").stdout)
    assert all(m["metadata"] for m in info)


def _readonly_run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tui ARGS`` in a private mount namespace where ``folder`` is read-only
    (a read-only bind mount: root ignores permission bits, not a read-only mount)."""
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
         str(folder), *args], capture_output=True, text=True, env=env, timeout=60,
    )


def _require_readonly_mounts(folder: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed: cannot make a read-only folder as root")
    probe = _readonly_run(folder, "sh", "-c", 'touch "$0/probe"', str(folder))
    if probe.returncode == 0 or (folder / "probe").exists():
        pytest.skip(f"cannot mount a read-only bind mount here: {probe.stderr.strip()[:200]}")
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"read-only bind mount unavailable: {probe.stderr.strip()[:200]}")


@pytest.mark.parametrize("with_inventory", [True, False], ids=["existing", "fresh"])
def test_read_only_state_dir_is_one_line(pod: Path, with_inventory: bool) -> None:
    state = pod / "state"
    if not with_inventory:
        shutil.rmtree(state)
        state.mkdir()
    _require_readonly_mounts(state)
    before = tree_digest(pod)
    proc = _readonly_run(state, sys.executable, "-m", "tui", "ls")
    assert_one_line_error(proc, str(state), "read-only file system", "MODELDECK_STATE_DIR")
    assert tree_digest(pod) == before


def test_inventory_deleted_while_a_pull_runs(hub: FakeHub, pod: Path) -> None:
    """The pull notices at its next flush, stops with one line and never reports done."""
    data = gguf_bytes(4 << 20, 7)
    hub.add_repo("acme/gone", {"gone-Q4_K_M.gguf": data})
    hub.add_fault("gone-Q4_K_M.gguf", "slow", times=None, rate=256 << 10)
    env = dict(os.environ, HF_ENDPOINT=hub.url, MODELDECK_CONNECTIONS_PER_DOWNLOAD="2",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                        os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-m", "tui", "pull", "acme/gone:Q4_K_M", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while hub.bytes_served("gone-Q4_K_M.gguf") < 512 << 10:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the download did not start"
            time.sleep(0.05)
        db = _db(pod)
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            p.unlink(missing_ok=True)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc_result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_one_line_error(proc_result, "deleted while ModelDeck was running")
    states = [json.loads(line).get("state") for line in out.splitlines() if line.strip()]
    assert "done" not in states
    dest = pod / "models" / "acme" / "gone" / "gone-Q4_K_M.gguf"
    assert not dest.exists()
    assert hub.bytes_served("gone-Q4_K_M.gguf") < len(data)


def test_last_resort_is_one_line_without_secrets(pod: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """An unexpected exception is one 'internal error' line (token redacted); a file-system
    error names the file; MODELDECK_DEBUG=1 gives the traceback."""
    import errno

    from tui.cli import inventory_cmds

    def boom(args: object, ctx: object) -> int:
        raise RuntimeError("bad state near hf_AbCdEfGhIjKlMnOpQrStUv")

    def readonly(args: object, ctx: object) -> int:
        raise OSError(errno.EROFS, "Read-only file system", "/models/x.gguf")

    monkeypatch.setattr(inventory_cmds, "cmd_ls", boom)
    code = main(["ls"])
    err = capsys.readouterr().err
    proc = subprocess.CompletedProcess(["ls"], code, "", err)
    assert_one_line_error(proc, "internal error: RuntimeError", "MODELDECK_DEBUG=1")
    assert "hf_AbCd" not in err
    monkeypatch.setenv("MODELDECK_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["ls"])
    monkeypatch.setattr(inventory_cmds, "cmd_ls", readonly)
    code = main(["ls"])
    proc = subprocess.CompletedProcess(["ls"], code, "", capsys.readouterr().err)
    assert_one_line_error(proc, "Read-only file system", "/models/x.gguf", "writable")
