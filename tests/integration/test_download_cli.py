"""``modeldeck pull`` / ``jobs`` as real processes: kill -9 and resume, Ctrl-C pauses,
a second process on the same job fails clearly, JSON lines, token never in ``ps``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes, sha256
from tests.support.checks import REPO

TOKEN = "hf_CliSecretCliSecretCliSecret77"

pytestmark = pytest.mark.slow


def _env(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_ENDPOINT=hub.url,
        HF_TOKEN=TOKEN,
        MODELDECK_STATE_DIR=str(tmp_path / "state"),
        MODELDECK_MODELS_DIR=str(tmp_path / "models"),
        MODELDECK_CONNECTIONS_PER_DOWNLOAD="4",
        MODELDECK_STALL_TIMEOUT="2",
        PYTHONPATH=str(REPO),
    )
    return env


def _modeldeck(*args: str) -> list[str]:
    return [sys.executable, "-m", "tui", *args]


def _wait_bytes(hub: FakeHub, match: str, amount: int, proc: subprocess.Popen,
                timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while hub.bytes_served(match) < amount:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "download did not progress"
        time.sleep(0.05)


def test_kill_9_then_resume_in_new_process(hub: FakeHub, tmp_path: Path) -> None:
    data = gguf_bytes(12 << 20, 1)
    hub.add_repo("acme/kill", {"k-Q4_K_M.gguf": data, "k-Q8_0.gguf": b"GGUF" + bytes(100)})
    hub.add_fault("k-Q4_K_M.gguf", "slow", times=None, rate=512 << 10)
    env = _env(hub, tmp_path)
    proc = subprocess.Popen(_modeldeck("pull", "acme/kill:Q4_K_M", "--json"), env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_bytes(hub, "k-Q4_K_M.gguf", int(len(data) * 0.35), proc)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert TOKEN.encode() not in cmdline
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    dest = tmp_path / "models/acme/kill/k-Q4_K_M.gguf"
    assert not dest.exists() and dest.with_name(dest.name + ".part").exists()

    hub.clear_faults()
    done = subprocess.run(_modeldeck("pull", "acme/kill:Q4_K_M", "--json"), env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert events and events[-1]["state"] == "done"
    assert all({"job_id", "state", "done_bytes", "total_bytes", "speed", "eta"} <= set(e)
               for e in events)
    assert sha256(dest.read_bytes()) == sha256(data)
    served = hub.bytes_served("k-Q4_K_M.gguf")
    assert served < 1.2 * len(data), served / len(data)
    assert TOKEN not in done.stdout + done.stderr
    for f in (tmp_path / "state").rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes()

    jobs = subprocess.run(_modeldeck("jobs", "--json"), env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    listed = json.loads(jobs.stdout)
    assert len(listed) == 1 and listed[0]["state"] == "done" and listed[0]["model_id"]


def test_ctrl_c_pauses_and_second_process_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    data = gguf_bytes(6 << 20, 2)
    url = hub.add_file("ctrlc.gguf", data)
    hub.add_fault("ctrlc.gguf", "slow", times=None, rate=512 << 10)
    env = _env(hub, tmp_path)
    proc = subprocess.Popen(_modeldeck("pull", url, "--quiet"), env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_bytes(hub, "ctrlc.gguf", len(data) // 5, proc)
        second = subprocess.run(_modeldeck("pull", url, "--quiet"), env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=30)
        assert second.returncode != 0
        assert f"already running in another process (pid {proc.pid})" in second.stderr
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "modeldeck jobs resume" in err
    listed = json.loads(subprocess.run(_modeldeck("jobs", "--json"), env=env, cwd=REPO,
                                       capture_output=True, text=True).stdout)
    assert listed[0]["state"] == "paused" and listed[0]["done_bytes"] > 0
    part = tmp_path / "models/direct/ctrlc.gguf.part"
    assert part.exists()

    hub.clear_faults()
    resumed = subprocess.run(_modeldeck("jobs", "resume", listed[0]["id"][:6], "--quiet"),
                             env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "models/direct/ctrlc.gguf").read_bytes() == data
    assert hub.bytes_served("ctrlc.gguf") < 1.2 * len(data)


def test_pull_errors_are_one_line(hub: FakeHub, tmp_path: Path) -> None:
    env = _env(hub, tmp_path)
    bad = subprocess.run(_modeldeck("pull", "not a source"), env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0
    assert bad.stderr.strip().startswith("modeldeck: error:")
    assert len(bad.stderr.strip().splitlines()) == 1
    hub.add_repo("acme/g", {"g-Q4_0.gguf": b"GGUF" + bytes(100)}, gated=True)
    gated = subprocess.run(_modeldeck("pull", "acme/g", "--quiet"), env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=30)
    assert gated.returncode == 1
    assert "accept the licence at https://huggingface.co/acme/g" in gated.stderr
    assert TOKEN not in gated.stderr
