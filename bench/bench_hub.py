#!/usr/bin/env python
"""Hub-flow benchmark: ModelDeck vs ``hf_hub_download`` against the faithful fake Hub.

Runs ``python -m tests.fakehub`` (the Hub and its CDN on two local ports: a 302 with the
file's metadata to a signed CDN URL) in its own process, with a per-connection cap on the CDN
(``--cap``, default 25M: what one connection to a real CDN often gets), and one file of
``--size`` (default 1G). Then, once each, in child processes on the same machine:

* ``modeldeck pull`` (default settings: 8 connections, sha256 checked, fsynced) vs
  ``huggingface_hub.hf_hub_download`` of the same file from the same server: the time ratio;
* the resolver calls ModelDeck made for it, per GiB (the fake counts them);
* ``kill -9`` of a ``modeldeck pull`` at 40% with the CDN sending no ETag, then the pull run
  again: the bytes the fake served in all, as a multiple of the file.

Usage: ``python bench/bench_hub.py [--size 1G] [--cap 25M] [--workdir DIR]``. Ratios from one
run; the machine's own noise is large on a small box (see README, Benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tui.settings import parse_rate  # noqa: E402

REPO = "acme/bench"
NAME = "bench-Q4_K_M.gguf"
GIB = 1 << 30


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")])), HF_HUB_DISABLE_TELEMETRY="1")
    out.update(extra)
    return out


class Fake:
    """``python -m tests.fakehub`` in a child process."""

    def __init__(self, size: int, cap: int, etag: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakehub", "--port", "0", "--cdn-etag", etag,
             "--random", f"{REPO}/{NAME}={size}", "--cap", str(cap)],
            cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip() if self.proc.stdout else ""
        if not line.startswith("HF_ENDPOINT="):
            self.stop()
            sys.exit("the fake Hub did not start")
        self.url = line.split("=", 1)[1]
        self.stats()  # the first listing hashes the file: not part of any timing
        with urllib.request.urlopen(f"{self.url}/api/models/{REPO}?blobs=true", timeout=600):
            pass

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_fakehub/stats", timeout=30) as resp:
            return json.load(resp)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def modeldeck(fake: Fake, work: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tui", "pull", f"{REPO}:Q4_K_M", "--quiet"],
        env=env(HF_ENDPOINT=fake.url, MODELDECK_MODELS_DIR=str(work / "models"),
                MODELDECK_STATE_DIR=str(work / "state"), MODELDECK_SCAN_HF_CACHE="0"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def timed_modeldeck(fake: Fake, work: Path) -> float:
    start = time.perf_counter()
    proc = modeldeck(fake, work)
    _, err = proc.communicate()
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"modeldeck pull failed: {err.strip()}")
    return took


def timed_hf(fake: Fake, work: Path) -> float:
    code = ("from huggingface_hub import hf_hub_download; "
            f"hf_hub_download({REPO!r}, {NAME!r}, cache_dir={str(work / 'hf')!r})")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env(HF_ENDPOINT=fake.url, HF_HUB_DISABLE_XET="1",
                                  HF_HUB_DISABLE_PROGRESS_BARS="1"))
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"hf_hub_download failed: {done.stderr.strip()[-500:]}")
    return took


def kill_at_40(fake: Fake, work: Path, size: int) -> float:
    before = fake.stats()["bytes_served"]
    proc = modeldeck(fake, work)
    while fake.stats()["bytes_served"] - before < 0.4 * size:
        if proc.poll() is not None:
            sys.exit("the pull ended before 40%")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    timed_modeldeck(fake, work)
    return (fake.stats()["bytes_served"] - before) / size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--cap", default="25M", help="CDN bytes/s per connection")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    size, cap = parse_rate(args.size), parse_rate(args.cap)
    work = Path(tempfile.mkdtemp(prefix="bench-hub-", dir=args.workdir))
    print(f"file {size / GIB:.2f} GiB, CDN capped at {cap / 1e6:.0f} MB/s per connection, "
          f"work dir {work}", flush=True)
    try:
        fake = Fake(size, cap, "strong")
        try:
            s0 = fake.stats()
            md = timed_modeldeck(fake, work / "md")
            s1 = fake.stats()
            shutil.rmtree(work / "md")
            hf = timed_hf(fake, work / "hf")
            shutil.rmtree(work / "hf")
        finally:
            fake.stop()
        calls = (s1["resolver_calls"] - s0["resolver_calls"]) / (size / GIB)
        print(f"modeldeck pull        {md:7.1f} s  {size / md / 1e6:7.1f} MB/s")
        print(f"hf_hub_download       {hf:7.1f} s  {size / hf / 1e6:7.1f} MB/s")
        print(f"ratio                 {hf / md:7.1f}x faster (target >= 6x)")
        print(f"resolver calls / GiB  {calls:7.1f}   (target <= 2)")
        fake = Fake(size, cap, "none")
        try:
            served = kill_at_40(fake, work / "k9", size)
        finally:
            fake.stop()
        print(f"kill -9 at 40%, CDN without ETag, pull again: {served:.2f}x the file served "
              "(target <= 1.1x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
