"""Updates of Hub models: ``outdated`` sees a new commit, ``update`` fetches only the changed
files and swaps them in once all are verified (the old ones kept), ``--rollback`` swaps back,
a failed update leaves the model as it was, ``pull`` of a newer commit is an update, and the
dashboard marks an outdated model."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from tui.cli import main
from tui.settings import Settings

from tests.fakehub import FakeHub
from tests.fakehub.testing import sha256
from tests.support.checks import tree_digest
from tests.support.safetensors import write_safetensors_folder

OLD, NEW = "a" * 40, "b" * 40
SHARD1, SHARD2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


@pytest.fixture
def home(tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MODELDECK_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MODELDECK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MODELDECK_SCAN_HF_CACHE", "0")
    return Settings(models_dir=tmp_path / "models", state_dir=tmp_path / "state",
                    scan_hf_cache=False)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def repo_files(tmp_path: Path) -> dict[str, bytes]:
    """A real two-shard safetensors model with its config files."""
    folder = write_safetensors_folder(tmp_path / "src", shards=2, shapes={
        "model.embed_tokens.weight": (64, 16), "lm_head.weight": (64, 16)})
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def changed(data: bytes) -> bytes:
    """The same shard with other weights (same length, same header)."""
    return data[:-8] + b"\x01" * 8


@pytest.fixture
def installed(hub: FakeHub, home: Settings, capsys, tmp_path: Path) -> dict:
    """``acme/st`` pulled at commit OLD; returns its files and model id."""
    files = repo_files(tmp_path)
    hub.add_repo("acme/st", files, commit=OLD)
    code, _, err = cli(capsys, "pull", "acme/st", "--quiet")
    assert code == 0, err
    [model] = json.loads(cli(capsys, "ls", "--json")[1])
    assert model["revision"] == OLD
    return {"files": files, "id": model["id"], "root": home.models_dir / "acme/st"}


def model_of(capsys, model_id: str) -> dict:
    return next(m for m in json.loads(cli(capsys, "ls", "--json")[1]) if m["id"] == model_id)


def test_outdated_sees_a_new_commit(hub: FakeHub, installed: dict, capsys,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = cli(capsys, "outdated", "--json")
    assert code == 0, err
    assert json.loads(out) == [{"id": installed["id"], "repo": "acme/st", "tracked": "main",
                                "installed": OLD, "current": OLD, "outdated": False,
                                "status": "up to date"}]
    files = dict(installed["files"], **{SHARD2: changed(installed["files"][SHARD2])})
    hub.add_repo("acme/st", files, commit=NEW)
    code, out, err = cli(capsys, "outdated")
    assert code == 0, err
    assert "acme/st" in out and "aaaaaaa" in out and "bbbbbbb" in out
    assert "update available" in out and f"modeldeck update {installed['id']}" in out
    [row] = json.loads(cli(capsys, "outdated", "--json")[1])
    assert row["current"] == NEW and row["outdated"] is True
    # Offline: one line, nothing else.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    code, out, err = cli(capsys, "outdated")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        f"modeldeck: error: cannot reach the Hub at http://127.0.0.1:{port}: ConnectError "
        "(check the network or HF_ENDPOINT)"]


def test_update_fetches_only_changed_files_then_rollback_swaps_back(
        hub: FakeHub, installed: dict, capsys) -> None:
    root, model_id, files = installed["root"], installed["id"], installed["files"]
    code, out, _ = cli(capsys, "update", model_id)
    assert code == 0 and out.strip() == f"{model_id} is up to date (commit aaaaaaa of main)"
    before = {name: os.stat(root / name) for name in files}
    new_files = dict(files, **{SHARD2: changed(files[SHARD2])})
    hub.add_repo("acme/st", new_files, commit=NEW)
    hub.reset_counters()
    code, out, err = cli(capsys, "update", model_id, "--quiet")
    assert code == 0, err
    assert out.strip().startswith(f"updated {model_id} from commit aaaaaaa to bbbbbbb: 1 file "
                                  "fetched")
    # Only the changed file crossed the wire; the others were not even asked for.
    assert hub.bytes_served(SHARD2) == len(new_files[SHARD2])
    for name in files:
        if name != SHARD2:
            assert hub.requests_for(f"/{name}") == []
            assert os.stat(root / name).st_ino == before[name].st_ino  # untouched
    assert (root / SHARD2).read_bytes() == new_files[SHARD2]
    kept = root / ".modeldeck-prev" / OLD[:12] / SHARD2
    assert kept.read_bytes() == files[SHARD2] and kept.stat().st_ino == before[SHARD2].st_ino
    assert not (root / ".modeldeck-update").exists()
    model = model_of(capsys, model_id)
    assert model["revision"] == NEW
    assert {Path(f["path"]).name: f["sha256"] for f in model["files"]} == {
        n: sha256(d) for n, d in new_files.items()}
    assert json.loads(cli(capsys, "outdated", "--json")[1])[0]["status"] == "up to date"
    assert json.loads(cli(capsys, "jobs", "--json")[1])[-1]["name"] != f"update {model_id}"

    code, out, err = cli(capsys, "update", "--rollback", model_id)
    assert code == 0, err
    assert f"rolled {model_id} back from commit bbbbbbb to aaaaaaa (1 file swapped" in out
    assert (root / SHARD2).read_bytes() == files[SHARD2]
    assert (root / ".modeldeck-prev" / NEW[:12] / SHARD2).read_bytes() == new_files[SHARD2]
    assert not kept.exists()
    assert model_of(capsys, model_id)["revision"] == OLD
    code, out, _ = cli(capsys, "update", "--rollback", model_id)  # and forward again
    assert code == 0 and (root / SHARD2).read_bytes() == new_files[SHARD2]
    assert model_of(capsys, model_id)["revision"] == NEW
    # Removing the model takes the kept copies and ModelDeck's folders with it.
    code, out, err = cli(capsys, "rm", model_id, "-y")
    assert code == 0, err
    assert not root.exists(), tree_digest(root)


def test_a_failed_update_leaves_the_model_as_it_was(hub: FakeHub, installed: dict,
                                                     capsys) -> None:
    root, model_id, files = installed["root"], installed["id"], installed["files"]
    before = tree_digest(root)
    inodes = {name: os.stat(root / name).st_ino for name in files}
    new_files = dict(files, **{SHARD2: changed(files[SHARD2])})
    hub.add_repo("acme/st", new_files, commit=NEW)
    # The Hub lists one sha256 but serves other bytes: they never verify.
    hub.add_fault(SHARD2, "change", data=files[SHARD2][:-8] + b"\x02" * 8)
    code, out, err = cli(capsys, "update", model_id, "--quiet")
    assert code == 1
    failures = [line for line in err.splitlines() if line.startswith("modeldeck: error:")]
    assert len(failures) == 1 and "failed verification twice" in failures[0]
    staged = {k for k in tree_digest(root) if k.startswith(".modeldeck-update")}
    assert {k: v for k, v in tree_digest(root).items() if k not in staged} == before
    assert {name: os.stat(root / name).st_ino for name in files} == inodes
    model = model_of(capsys, model_id)
    assert model["revision"] == OLD and model["status"] == "installed"
    assert {Path(f["path"]).name: f["sha256"] for f in model["files"]} == {
        n: sha256(d) for n, d in files.items()}
    assert not (root / ".modeldeck-prev").exists()
    code, _, err = cli(capsys, "update", "--rollback", model_id)
    assert code == 1 and "has no previous commit to roll back to" in err
    # Giving the update up removes its (empty) staging folder too.
    code, out, _ = cli(capsys, "jobs", "clear", "--failed")
    assert code == 0 and "cleared 1 job" in out
    assert tree_digest(root) == before


def test_pull_of_a_newer_commit_is_an_update(hub: FakeHub, installed: dict, capsys) -> None:
    root, model_id, files = installed["root"], installed["id"], installed["files"]
    new_files = dict(files, **{SHARD1: changed(files[SHARD1])})
    hub.add_repo("acme/st", new_files, commit=NEW)
    hub.reset_counters()
    code, out, err = cli(capsys, "pull", "acme/st", "--quiet")
    assert code == 0, err
    assert hub.bytes_served(SHARD1) == len(new_files[SHARD1])
    assert hub.requests_for(f"/{SHARD2}") == []
    assert (root / SHARD1).read_bytes() == new_files[SHARD1]
    assert (root / ".modeldeck-prev" / OLD[:12] / SHARD1).read_bytes() == files[SHARD1]
    [model] = json.loads(cli(capsys, "ls", "--json")[1])
    assert model["id"] == model_id and model["revision"] == NEW
    # The same commit again: nothing to do.
    hub.reset_counters()
    code, out, err = cli(capsys, "pull", "acme/st", "--quiet")
    assert code == 0 and "already installed as" in out and "(commit bbbbbbb)" in out
    assert hub.requests_for("/resolve/") == []


async def test_dashboard_marks_an_outdated_model(hub: FakeHub, installed: dict,
                                                 tmp_path: Path, home: Settings) -> None:
    from tui.app.views import UPDATE_LABEL
    from tui.services import build_services

    from tests.support.app import make_app, wait_for, wait_ready

    files = dict(installed["files"], **{SHARD2: changed(installed["files"][SHARD2])})
    hub.add_repo("acme/st", files, commit=NEW)
    services = build_services(home)
    app = make_app(services, check_updates=True)
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            await wait_ready(app, pilot)
            key = next(k for k, r in app.model_table.all_rows.items()
                       if r.model_id == installed["id"])
            assert await wait_for(pilot, lambda: str(
                app.model_table.get_cell(key, "status")) == UPDATE_LABEL)
    finally:
        services.close()


def test_an_interrupted_swap_is_finished_by_the_next_update(
        hub: FakeHub, installed: dict, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import tui.updates as updates

    root, model_id, files = installed["root"], installed["id"], installed["files"]
    new_files = dict(files, **{SHARD1: changed(files[SHARD1]), SHARD2: changed(files[SHARD2])})
    hub.add_repo("acme/st", new_files, commit=NEW)
    real_replace, calls = os.replace, []

    def crash_after_first(src, dst):  # the process dies between two swaps
        if ".modeldeck-update" not in str(dst):  # a swap, not a download's own rename
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(5, "simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(updates.os, "replace", crash_after_first)
    code, _, err = cli(capsys, "update", model_id, "--quiet")
    assert code == 1 and "simulated crash" in err
    monkeypatch.setattr(updates.os, "replace", real_replace)
    assert model_of(capsys, model_id)["revision"] == OLD  # not recorded: half done
    code, out, err = cli(capsys, "update", model_id)
    assert code == 0, err
    assert f"finished the interrupted update of {model_id}" in out
    assert f"{model_id} is up to date (commit bbbbbbb" in out
    for name, data in new_files.items():
        assert (root / name).read_bytes() == data
    for name in (SHARD1, SHARD2):
        assert (root / ".modeldeck-prev" / OLD[:12] / name).read_bytes() == files[name]
    assert model_of(capsys, model_id)["revision"] == NEW
    assert json.loads(cli(capsys, "jobs", "--json")[1])[-1]["name"] != f"update {model_id}"
    assert not (root / ".modeldeck-update").exists()
    code, _, err = cli(capsys, "update", "--rollback", model_id)
    assert code == 0, err
    for name, data in files.items():
        assert (root / name).read_bytes() == data


def test_a_damaged_update_journal_changes_nothing(installed: dict, home: Settings, capsys,
                                                   tmp_path: Path) -> None:
    import sqlite3

    root, model_id = installed["root"], installed["id"]
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    hostile = {"commit": NEW, "swaps": [{
        "final": str(victim), "staged": str(root / ".modeldeck-update" / "x"),
        "kept": str(root / ".modeldeck-prev" / "x"), "size": 4, "sha256": None}]}
    conn = sqlite3.connect(home.db_path)
    with conn:
        conn.execute("UPDATE model_history SET pending = ? WHERE model_id = ?",
                     (json.dumps(hostile), model_id))
    conn.close()
    before = tree_digest(tmp_path, skip=(home.state_dir,))
    for args in (("update", model_id), ("update", "--rollback", model_id)):
        code, out, err = cli(capsys, *args)
        assert code == 1 and out == ""
        assert err.strip().splitlines() == [
            f"modeldeck: error: the unfinished update of {model_id} recorded in the inventory "
            f"is damaged (check its files, then `modeldeck rm {model_id}` and pull it again)"]
    assert tree_digest(tmp_path, skip=(home.state_dir,)) == before
