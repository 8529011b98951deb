"""A job lifecycle a user can follow: ``jobs`` shows the live state of a pull in another
process, ending an ended job says so, ``jobs clear`` and ``prune`` (dry run first), retries
shown as they happen and a failure said once, a pull of something installed does nothing, and
URL file names that are long or not ASCII."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from tui.cli import main
from tui.download import JobSpec
from tui.download import service as service_mod
from tui.download.http import RetryPolicy
from tui.download.jobs import JobRecord
from tui.download.service import DownloadService
from tui.settings import Settings

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes, make_service, part_files, sha256
from tests.support.checks import REPO, tree_digest


@pytest.fixture
def home(tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The CLI (in this process) and a service share one models dir and state dir."""
    monkeypatch.setenv("MODELDECK_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MODELDECK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MODELDECK_SCAN_HF_CACHE", "0")
    return Settings(models_dir=tmp_path / "models", state_dir=tmp_path / "state",
                    scan_hf_cache=False, stall_timeout=1.0, connections_per_download=2)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``modeldeck ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("modeldeck: error:")]


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.05)


def service_run(settings: Settings, specs: list[JobSpec], *, pause_after: int | None = None,
                hub: FakeHub | None = None, match: str = "", max_tries: int | None = None
                ) -> list[JobRecord]:
    """Run jobs on a fresh service (fast retries); with ``pause_after`` bytes served for
    ``match``, pause them there."""

    async def go() -> list[JobRecord]:
        svc = make_service(settings)
        if max_tries:
            svc.policy.max_tries = max_tries
        try:
            ids = [svc.enqueue(s) for s in specs]
            runner = asyncio.create_task(svc.run_until_complete(ids))
            if pause_after is not None:
                assert hub is not None
                while hub.bytes_served(match) < pause_after:
                    assert not runner.done(), "finished before it could be paused"
                    await asyncio.sleep(0.02)
                for job_id in ids:
                    await svc.pause(job_id)
            return await runner
        finally:
            await svc.stop()
            svc.db.close()

    return asyncio.run(go())


def allocated(st: os.stat_result) -> int:
    """Bytes a file holds on disk (what prune counts)."""
    return min(st.st_size, st.st_blocks * 512)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- live state ----------------------------------------------------------------------------


def test_jobs_shows_the_live_state_of_a_pull_in_another_process(
        hub: FakeHub, home: Settings, capsys, tmp_path: Path) -> None:
    data = gguf_bytes(8 << 20, 1)
    url = hub.add_file("live.gguf", data)
    hub.add_fault("live.gguf", "slow", times=None, rate=512 << 10)
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_ENDPOINT=hub.url)
    proc = subprocess.Popen([sys.executable, "-m", "tui", "pull", url, "--quiet"], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def listed() -> dict:
        code, out, _ = cli(capsys, "jobs", "--json")
        assert code == 0
        jobs = json.loads(out)
        return jobs[0] if jobs else {}

    try:
        # Running elsewhere: the row holds the real state and bytes, never "connecting".
        wait_until(lambda: listed().get("state") == "downloading"
                   and listed()["done_bytes"] > 0, what="downloading with bytes")
        first = listed()["done_bytes"]
        wait_until(lambda: listed()["done_bytes"] > first, what="progress persisted")
        code, out, _ = cli(capsys, "jobs")
        assert code == 0 and " downloading " in out and "connecting" not in out
        # Paused from here: the command waits for that process to pause it, then says so.
        job_id = listed()["id"]
        code, out, err = cli(capsys, "jobs", "pause", job_id)
        assert code == 0 and out.strip() == f"{job_id} paused", err
        assert proc.wait(15) == 130
        assert listed()["state"] == "paused"
        # Resumed in another process again, which then dies.
        proc = subprocess.Popen([sys.executable, "-m", "tui", "jobs", "resume", job_id, "-q"],
                                env=env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        done = listed()["done_bytes"]
        wait_until(lambda: listed().get("state") == "downloading"
                   and listed()["done_bytes"] > done, what="resumed elsewhere")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Nobody runs it now: not shown as downloading, and how to go on is said.
    job = listed()
    assert job["state"] == "queued" and job["interrupted"] is True
    code, out, _ = cli(capsys, "jobs")
    assert f"not running; `modeldeck jobs resume {job['id']}` continues it" in out


# -- ending jobs that ended ----------------------------------------------------------------


def test_cancel_or_pause_of_an_ended_job_says_so(hub: FakeHub, home: Settings, capsys) -> None:
    url = hub.add_file("done.gguf", gguf_bytes(100_000, 2))
    code, _, err = cli(capsys, "pull", url, "--quiet")
    assert code == 0, err
    code, out, _ = cli(capsys, "jobs", "--json")
    job_id = json.loads(out)[0]["id"]
    for action in ("cancel", "pause"):
        code, out, err = cli(capsys, "jobs", action, job_id[:6])
        assert code == 1 and out == ""
        assert err.strip() == (f"modeldeck: error: job {job_id} already finished (done); "
                               f"nothing to {action}")
    # A paused job cannot be paused again; cancelling it drops its partial.
    data = gguf_bytes(3 << 20, 3)
    slow = hub.add_file("paused.gguf", data)
    hub.add_fault("paused.gguf", "slow", times=None, rate=1 << 20)
    [paused] = service_run(home, [JobSpec(kind="url", url=slow)], pause_after=len(data) // 4,
                           hub=hub, match="paused.gguf")
    assert paused.state == "paused"
    code, _, err = cli(capsys, "jobs", "pause", paused.id)
    assert code == 1 and errors(err) == [
        f"modeldeck: error: job {paused.id} is already paused; nothing to pause "
        f"(`modeldeck jobs resume {paused.id}` continues it)"]
    code, out, _ = cli(capsys, "jobs", "cancel", paused.id)
    assert code == 0 and out.strip() == f"{paused.id} cancelled"
    assert not Path(paused.files[0].dest + ".part").exists()
    code, _, err = cli(capsys, "jobs", "cancel", paused.id)
    assert code == 1 and "already finished (cancelled); nothing to cancel" in err


# -- jobs clear ----------------------------------------------------------------------------


def _four_jobs(hub: FakeHub, home: Settings) -> dict[str, JobRecord]:
    """A done, a failed (partial kept), a cancelled and a paused (partial kept) job."""
    done_url = hub.add_file("keep.gguf", gguf_bytes(100_000, 4))
    [done] = service_run(home, [JobSpec(kind="url", url=done_url)])
    failed_url = hub.add_file("fail.gguf", gguf_bytes(400_000, 5))
    hub.add_fault("fail.gguf", "drop_after", times=1, nbytes=150_000)
    hub.add_fault("fail.gguf", "status", times=None, skip=1, status=500)
    [failed] = service_run(home, [JobSpec(kind="url", url=failed_url)], max_tries=2)
    data = gguf_bytes(3 << 20, 6)
    paused_url = hub.add_file("wait.gguf", data)
    hub.add_fault("wait.gguf", "slow", times=None, rate=1 << 20)
    [paused] = service_run(home, [JobSpec(kind="url", url=paused_url)],
                           pause_after=len(data) // 4, hub=hub, match="wait.gguf")

    async def cancelled_job() -> JobRecord:
        svc = make_service(home)
        try:
            job_id = svc.enqueue(JobSpec(kind="url", url=f"{hub.url}/files/never.gguf"))
            return await svc.cancel(job_id)
        finally:
            await svc.stop()
            svc.db.close()

    cancelled = asyncio.run(cancelled_job())
    assert (done.state, failed.state, paused.state, cancelled.state) == (
        "done", "failed", "paused", "cancelled")
    assert Path(failed.files[0].dest + ".part").exists()
    assert Path(paused.files[0].dest + ".part").exists()
    return {"done": done, "failed": failed, "paused": paused, "cancelled": cancelled}


def test_jobs_clear_removes_job_records_never_a_model(hub: FakeHub, home: Settings,
                                                      capsys) -> None:
    jobs = _four_jobs(hub, home)
    model_file = Path(jobs["done"].files[0].dest)
    model_before = (model_file.stat().st_ino, model_file.read_bytes())

    def states() -> dict[str, str]:
        code, out, _ = cli(capsys, "jobs", "--json")
        assert code == 0
        return {j["id"]: j["state"] for j in json.loads(out)}

    code, out, _ = cli(capsys, "jobs", "clear", "--failed")
    assert code == 0 and f"cleared {jobs['failed'].id}" in out and "cleared 1 job;" in out
    assert set(states().values()) == {"done", "paused", "cancelled"}
    assert not Path(jobs["failed"].files[0].dest + ".part").exists()

    code, out, _ = cli(capsys, "jobs", "clear")
    assert code == 0 and "cleared 2 jobs" in out
    assert list(states().values()) == ["paused"]
    assert Path(jobs["paused"].files[0].dest + ".part").exists()  # kept: still resumable

    code, out, _ = cli(capsys, "jobs", "clear", "--all")
    assert code == 0 and "cleared 1 job;" in out and states() == {}
    assert part_files(home.models_dir) == []
    # The installed model is untouched and still listed.
    code, out, _ = cli(capsys, "ls", "--json")
    assert [m["id"] for m in json.loads(out)] == [jobs["done"].model_id]
    assert (model_file.stat().st_ino, model_file.read_bytes()) == model_before
    code, out, _ = cli(capsys, "jobs", "clear", "--done")
    assert code == 0 and out.strip() == "cleared 0 jobs"
    code, _, err = cli(capsys, "jobs", "pause", "x", "--failed")
    assert code == 1 and "go with `jobs clear`" in err


# -- prune ---------------------------------------------------------------------------------


def test_prune_dry_run_lists_bytes_and_changes_nothing_then_prunes_only_orphans(
        hub: FakeHub, home: Settings, capsys, tmp_path: Path) -> None:
    jobs = _four_jobs(hub, home)
    models = home.models_dir
    # An orphan partial: its job record is gone (as after a crash of an older version).
    orphan = Path(jobs["paused"].files[0].dest + ".part")
    orphan_size = allocated(orphan.stat())
    code, _, _ = cli(capsys, "jobs", "clear", "--cancelled")
    service = make_service(home)
    service.jobs.delete(jobs["paused"].id)
    service.db.close()
    stale_lock = models / "direct" / "ghost.gguf.lock"
    stale_lock.write_text("4242\n")
    # Things that are not ModelDeck's leftovers, or not leftovers at all.
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x" * 5000)
    mine = {
        models / "top.part": b"at the top of the models dir",
        models / "direct" / "notes.lock": b"not a pid",
        models / ".cache" / "deep" / "x.part": b"hidden folder",
        models / "models--a--b" / "blobs" / "y.part": b"a Hugging Face cache folder",
        models / "mine" / "weights.gguf": b"a user's file",
    }
    for path, data in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (models / "direct" / "link.gguf.part").symlink_to(outside)
    code, _, err = cli(capsys, "add", "url", f"{hub.url}/files/entry.gguf", "--id", "unused")
    assert code == 0, err
    used_url = hub.add_file("used.gguf", gguf_bytes(50_000, 7))
    code, _, err = cli(capsys, "add", "url", used_url, "--id", "used")
    assert code == 0, err
    code, _, err = cli(capsys, "pull", "used", "--quiet")
    assert code == 0, err
    failed_part = Path(jobs["failed"].files[0].dest + ".part")
    failed_size = allocated(failed_part.stat())

    before = tree_digest(models)
    code, out, err = cli(capsys, "prune", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert any(line.startswith("partial") and str(orphan) in line for line in lines), out
    assert any(line.startswith("lock") and str(stale_lock) in line for line in lines), out
    assert any(line.startswith("failed job") and jobs["failed"].id in line for line in lines)
    assert any(line.startswith("custom entry") and "unused (url)" in line for line in lines)
    assert not any("used (url)" in line and "unused" not in line for line in lines)
    for path in [*mine, models / "direct" / "link.gguf.part"]:
        assert str(path) not in out
    assert "dry run: nothing removed" in out
    code, js, _ = cli(capsys, "prune", "--dry-run", "--json")
    listed = json.loads(js)
    assert listed["bytes"] == orphan_size + failed_size and listed["removed"] is False
    assert tree_digest(models) == before  # nothing changed
    code, out, _ = cli(capsys, "jobs", "--json")
    assert {j["state"] for j in json.loads(out)} == {"done", "failed"}

    code, _, err = cli(capsys, "prune")  # not a terminal, no -y: refused
    assert code == 1 and errors(err) == [
        "modeldeck: error: refusing to prune without confirmation (pass -y)"]
    assert tree_digest(models) == before

    code, out, err = cli(capsys, "prune", "-y")
    assert code == 0, err
    assert "removed 5 items" in out  # and the orphan job lock in the state dir
    assert not orphan.exists() and not stale_lock.exists() and not failed_part.exists()
    for path, data in mine.items():
        assert path.read_bytes() == data
    assert os.readlink(models / "direct" / "link.gguf.part") == str(outside)
    assert outside.read_bytes() == b"x" * 5000
    code, out, _ = cli(capsys, "jobs", "--json")
    assert {j["state"] for j in json.loads(out)} == {"done"}
    code, out, _ = cli(capsys, "catalog", "--custom", "--json")
    assert [e["id"] for e in json.loads(out)] == ["used"]
    code, out, _ = cli(capsys, "ls", "--json")
    for model in json.loads(out):
        for f in model["files"]:
            assert sha256(Path(f["path"]).read_bytes()) == f["sha256"]
    code, out, _ = cli(capsys, "prune", "--dry-run")
    assert out.strip() == "nothing to prune"


# -- retries shown live, failure said once -------------------------------------------------


def test_a_refused_connection_shows_each_try_and_fails_once(
        home: Settings, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    # Seven tries, quickly (the real budget is ``give_up_after`` minutes without progress).
    monkeypatch.setattr(service_mod, "RetryPolicy",
                        lambda **kw: RetryPolicy(base_delay=0.01, max_delay=0.02, max_tries=7))
    url = f"http://127.0.0.1:{closed_port()}/models/refused-Q4_K_M.gguf"
    code, out, err = cli(capsys, "pull", url, "--quiet")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    tries = [line for line in lines if ", try " in line]
    assert tries == [f"refused-Q4_K_M.gguf: connecting, try {n}, connection refused"
                     for n in range(2, 8)], lines
    [failure] = errors(err)
    assert failure == lines[-1]
    assert failure.count("refused-Q4_K_M.gguf") == 1
    assert failure.count("jobs retry") == 1
    assert "giving up after 7 failed attempts in " in failure
    assert "without progress (connection refused)" in failure
    code, out, _ = cli(capsys, "jobs", "--json")
    [job] = json.loads(out)
    assert f"`modeldeck jobs retry {job['id']}`" in failure
    code, out, _ = cli(capsys, "jobs")
    assert out.count("refused-Q4_K_M.gguf") == 1 and out.count("jobs retry") == 1

    # The same in --json: each retry is an event with its try and reason.
    code, out, _ = cli(capsys, "jobs", "retry", job["id"], "--json")
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    retried = list(dict.fromkeys((e["attempt"], e["detail"]) for e in events
                                 if e.get("attempt")))
    assert retried == [(n, "connection refused") for n in range(2, 8)]


# -- already installed ---------------------------------------------------------------------


def test_pulling_what_is_installed_does_nothing(hub: FakeHub, home: Settings, capsys) -> None:
    hub.add_repo("acme/inst", {"inst-Q4_K_M.gguf": gguf_bytes(300_000, 8),
                               "inst-Q8_0.gguf": gguf_bytes(1000, 9)}, commit="c" * 40)
    code, _, err = cli(capsys, "pull", "acme/inst:Q4_K_M", "--quiet")
    assert code == 0, err
    path = home.models_dir / "acme/inst/inst-Q4_K_M.gguf"
    st = path.stat()
    hub.reset_counters()
    code, out, err = cli(capsys, "pull", "acme/inst:Q4_K_M", "--quiet")
    assert code == 0, err
    _, listing, _ = cli(capsys, "ls", "--json")
    [model] = json.loads(listing)
    assert out.strip() == (f"acme/inst:Q4_K_M: already installed as {model['id']} "
                           "(commit ccccccc); nothing to do")
    assert hub.requests_for("inst-Q4_K_M.gguf") == []  # no HEAD, no GET of the weights
    now = path.stat()
    assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    code, jobs, _ = cli(capsys, "jobs", "--json")
    assert len(json.loads(jobs)) == 1  # the no-op left no job behind

    data = gguf_bytes(200_000, 10)
    url = hub.add_file("same.gguf", data)
    code, _, err = cli(capsys, "pull", url, "--sha256", sha256(data), "--quiet")
    assert code == 0, err
    hub.reset_counters()
    code, out, err = cli(capsys, "pull", url, "--sha256", sha256(data), "--quiet")
    assert code == 0, err
    assert "already installed as same (sha256 " in out and out.strip().endswith(
        "; nothing to do")
    assert hub.requests_for("same.gguf") == []


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("remote", "expected_id"), [
    ("模型-Q4_K_M.gguf", "模型-q4_k_m"),
    ("b" * 250 + ".gguf", "b" * 80),
    ("L" * 300 + "-Q4_K_M.gguf", "l" * 80),
    ("模" * 100 + ".gguf", "模" * 80),
])
def test_long_and_non_ascii_url_names_download_and_register(
        hub: FakeHub, home: Settings, capsys, remote: str, expected_id: str) -> None:
    data = gguf_bytes(50_000, 11)
    hub.add_file(remote, data)
    url = f"{hub.url}/files/{quote(remote)}"
    code, _, err = cli(capsys, "pull", url, "--quiet")
    assert code == 0, err
    [model] = json.loads(cli(capsys, "ls", "--json")[1])
    [f] = model["files"]
    name = Path(f["path"]).name
    assert len(name.encode()) <= 250 and name.endswith(".gguf")  # room for ".part"
    assert name.startswith(remote[:20]) and "%" not in name
    assert Path(f["path"]).read_bytes() == data and f["sha256"] == sha256(data)
    assert model["id"] == expected_id
    assert part_files(home.models_dir) == []


def test_url_names_are_made_safe(hub: FakeHub, home: Settings, capsys) -> None:
    """A decoded name with a slash, a control character or only dots still downloads, under a
    name that is one plain component."""
    data = gguf_bytes(20_000, 12)
    hub.add_file("a/b\x07c.gguf", data)
    code, _, err = cli(capsys, "pull", f"{hub.url}/files/a%2Fb%07c.gguf", "--quiet")
    assert code == 0, err
    [model] = json.loads(cli(capsys, "ls", "--json")[1])
    assert Path(model["files"][0]["path"]).name == "a_b_c.gguf"
    # A custom entry of such a URL gets a readable id too.
    code, out, err = cli(capsys, "add", "url", f"{hub.url}/x/%E6%A8%A1%E5%9E%8B-Q4_K_M.gguf")
    assert code == 0 and out.strip() == "Added url entry 模型-q4_k_m.", err


async def test_retry_events_stop_once_bytes_flow(hub: FakeHub, service: DownloadService) -> None:
    """``attempt`` is set while tries fail and cleared once bytes arrive again."""
    data = gguf_bytes(600_000, 13)
    url = hub.add_file("flaky.gguf", data)
    hub.add_fault("flaky.gguf", "status", times=2, status=503)
    seen = []
    service.subscribe(lambda e: seen.append((e.state, e.attempt, e.detail)))
    [job] = await service.run_until_complete([service.enqueue(JobSpec(kind="url", url=url))])
    assert job.state == "done", job.error
    tries = list(dict.fromkeys(s[1:] for s in seen if s[1] is not None))
    assert [t[0] for t in tries] == [2, 3] and all("HTTP 503" in t[1] for t in tries)
    assert seen[-1] == ("done", None, None)


def test_a_job_record_pointing_outside_the_models_dir_deletes_nothing(
        hub: FakeHub, home: Settings, capsys, tmp_path: Path) -> None:
    """A damaged (or planted) job row whose file lies outside the models dir: cancelling and
    clearing it never delete that ``.part``."""
    import sqlite3

    url = hub.add_file("out.gguf", gguf_bytes(300_000, 14))
    hub.add_fault("out.gguf", "drop_after", times=1, nbytes=100_000)
    hub.add_fault("out.gguf", "status", times=None, skip=1, status=500)
    [failed] = service_run(home, [JobSpec(kind="url", url=url)], max_tries=2)
    assert failed.state == "failed"
    victim = tmp_path / "elsewhere" / "notes"
    victim.parent.mkdir()
    Path(str(victim) + ".part").write_text("mine")
    conn = sqlite3.connect(home.db_path)
    with conn:
        conn.execute("UPDATE job_files SET dest = ?", (str(victim),))
    conn.close()
    code, out, err = cli(capsys, "jobs", "cancel", failed.id)
    assert code == 0, err
    code, out, err = cli(capsys, "jobs", "clear")
    assert code == 0 and "cleared 1 job" in out, err
    assert Path(str(victim) + ".part").read_text() == "mine"
