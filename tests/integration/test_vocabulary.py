"""One vocabulary on the command line: the same file reads the same in ``pull`` (its progress
on a terminal), ``jobs``, ``ls``, ``info``, ``rm`` and ``fit``; ids from full-width and
Chinese file names are readable."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tui import formatting as fmt

from tests.fakehub import FakeHub
from tests.support.checks import REPO, run_modeldeck
from tests.support.gguf import write_gguf

pytestmark = pytest.mark.slow
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def _env(tmp_path: Path, hub: FakeHub | None = None) -> dict[str, str]:
    env = {
        "MODELDECK_STATE_DIR": str(tmp_path / "state"),
        "MODELDECK_MODELS_DIR": str(tmp_path / "models"),
        "MODELDECK_SCAN_HF_CACHE": "0",
        "COLUMNS": "200", "TERM": "xterm-256color",
    }
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    return env


def _on_a_terminal(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str]:
    """``modeldeck ARGS`` with stderr on a pseudo-terminal 200 columns wide (so ``pull`` draws
    its progress bars); the exit code and what the terminal showed, escapes removed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    full = dict(os.environ, **env, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "tui", *args], env=full, cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(OSError):
            os.close(master)
    return code, ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def test_one_file_reads_the_same_in_every_command(hub: FakeHub, tmp_path: Path) -> None:
    source = write_gguf(tmp_path / "v-Q4_K_M.gguf", tensor_shapes=((1600, 2016),))
    size = source.stat().st_size  # 12.3 MiB: "12 MiB" (it was 12.9 MB, 12.3 MiB, 12.3M)
    text = fmt.size(size)
    assert text == "12 MiB" and fmt.size_compact(size) == "12Mi"
    hub.add_repo("acme/vocab", {source.name: source.read_bytes()})
    env = _env(tmp_path, hub)

    code, screen = _on_a_terminal(env, "pull", "acme/vocab:Q4_K_M")
    assert code == 0, screen
    assert f"{text}/{text}" in screen  # the progress bar's bytes, done
    assert "ETA" in screen

    jobs = run_modeldeck("jobs", env=env)
    assert jobs.returncode == 0, jobs.stderr
    assert re.search(rf"done\s+{re.escape(text)} / {re.escape(text)} ", jobs.stdout), jobs.stdout

    listing = run_modeldeck("ls", "--json", env=env)
    [model] = json.loads(listing.stdout)
    assert model["size_bytes"] == size
    ls = run_modeldeck("ls", env=env).stdout
    row = next(line for line in ls.splitlines() if line.startswith(model["id"]))
    assert f"  {text}  " in row and ls.rstrip().endswith(f"1 models, {text}")

    info = run_modeldeck("info", model["id"], env=env).stdout
    assert re.search(rf"^size:\s+{re.escape(text)}$", info, re.M), info

    fit_json = json.loads(run_modeldeck("fit", model["id"], "--json", env=env).stdout)
    fit = run_modeldeck("fit", model["id"], env=env).stdout
    estimate = fit_json["estimate"]
    for key in ("total_bytes", "weights_bytes", "kv_cache_bytes", "compute_bytes"):
        assert fmt.size(estimate[key]) in fit, (key, fit)
    assert f"free RAM {fmt.size(fit_json['ram_free'])}" in fit

    asked = run_modeldeck("rm", model["id"], env=env)  # no terminal, no -y: shows, refuses
    assert asked.returncode == 1 and f"frees {text}" in asked.stdout
    assert re.search(rf"delete\s+{re.escape(text)}  \S+{re.escape(source.name)}", asked.stdout)
    done = run_modeldeck("rm", model["id"], "-y", env=env)
    assert done.returncode == 0 and f"freed {text}." in done.stdout


def test_ids_from_full_width_and_chinese_names_are_readable(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    write_gguf(folder / "ＱＷＥＮ２．５-Q4_K_M.gguf", seed=1)
    write_gguf(folder / "通义千问-7B-Q4_K_M.gguf", seed=2)
    write_gguf(folder / "Ünïcödé Modél.gguf", seed=3)
    env = _env(tmp_path)
    scan = run_modeldeck("scan", env=env)
    assert scan.returncode == 0, scan.stderr
    ids = sorted(m["id"] for m in json.loads(run_modeldeck("ls", "--json", env=env).stdout))
    assert ids == ["qwen2.5-q4_k_m", "ünïcödé-modél", "通义千问-7b-q4_k_m"], ids
