#!/usr/bin/env python
"""Download benchmark: ModelDeck vs aria2c, hf_hub_download and curl on a local nginx.

Needs ``nginx``, ``aria2c``, ``curl`` and ``openssl`` on PATH (``apt-get install -y nginx
aria2 curl openssl``). Creates a random file (reused across runs), serves it from nginx on 127.0.0.1
on two ports — one with ``limit_rate 25m`` per connection, one uncapped — and times:

* capped:   ModelDeck (service API, 8 connections, sha256 verified, fsynced) vs ``aria2c -x8
            -s8`` alone and + ``openssl dgst -sha256`` vs ``huggingface_hub.hf_hub_download``
            (nginx mimics ``resolve``);
* uncapped: ModelDeck vs ``curl -o`` alone, + ``openssl dgst -sha256``, and + that + ``sync
            FILE`` — the last has ModelDeck's guarantees (sha256 checked, bytes on disk before
            "done"). openssl, not coreutils ``sha256sum`` (8x slower here), is the fair hash.
            Also a floor: :func:`minimal_pipeline`, the least a hashed download costs in
            Python here (one socket, recv_into + pwrite, mmap sha256 in a second thread).

Each measurement is repeated ``--reps`` times (page cache dropped before each) and the
median is reported, with the spread; ``hf_hub_download`` runs once (it is slow).

Usage: ``python bench/bench_download.py [--size 2G] [--reps 3] [--only capped|uncapped]
[--workdir DIR] [--skip-hf]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOOLS = {"nginx": "nginx", "aria2c": "aria2", "curl": "curl", "openssl": "openssl"}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1] if text and text[-1] in units else ""
    return int(float(text[: len(text) - len(unit)]) * units[unit])


def check_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pkgs = " ".join(sorted({TOOLS[t] for t in missing}))
        sys.exit(f"missing {', '.join(missing)}: install with `apt-get install -y {pkgs}`")


def make_file(path: Path, size: int, prefix: bytes = b"") -> str:
    """``prefix`` then random bytes, ``size`` in all (reused if present); returns its sha256."""
    sidecar = path.with_suffix(".sha256")
    if path.exists() and path.stat().st_size == size and sidecar.exists():
        return sidecar.read_text().strip()
    print(f"creating {path} ({size} bytes)…", flush=True)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        h.update(prefix)
        f.write(prefix)
        left = size - len(prefix)
        while left > 0:
            chunk = os.urandom(min(left, 16 << 20))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    sidecar.write_text(h.hexdigest())
    return h.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_conf(prefix: Path, data_dir: Path, name: str, sha: str, capped: int, free: int) -> Path:
    def server(port: int, limit: str) -> str:
        return f"""
    server {{
        listen 127.0.0.1:{port};
        {limit}
        location /files/ {{ alias {data_dir}/; }}
        location ~ ^/bench/model/resolve/[^/]+/(.+)$ {{
            alias {data_dir}/$1;
            etag off;
            add_header ETag '"{sha}"' always;
            add_header X-Repo-Commit {COMMIT} always;
            add_header X-Linked-Etag '"{sha}"' always;
        }}
    }}"""

    conf = f"""
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    max_ranges 1;
    keepalive_requests 10000;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
{server(capped, "limit_rate 25m;")}
{server(free, "")}
}}
"""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(conf)
    return path


@contextlib.contextmanager
def run_nginx(prefix: Path, conf: Path, ports: list[int]) -> Iterator[None]:
    proc = subprocess.Popen(
        ["nginx", "-g", "daemon off;", "-p", str(prefix), "-c", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        for port in ports:
            while True:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"nginx failed: {proc.stderr.read().decode()}")
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def drop_caches() -> None:
    subprocess.run(["sync"], check=False)
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(label: str, fn: Callable[[], None], cleanup: Callable[[], None], reps: int = 1
          ) -> list[float]:
    """Run ``fn`` ``reps`` times (caches dropped before each); the elapsed seconds."""
    times = []
    for _ in range(reps):
        drop_caches()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        cleanup()
    print(f"  {label}: " + " / ".join(f"{t:.2f}" for t in times) + " s", flush=True)
    return times


def sha_ok(path: Path, sha: str, tool: str = "sha256sum") -> None:
    cmd = ["sha256sum", str(path)] if tool == "sha256sum" else \
        ["openssl", "dgst", "-sha256", "-r", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    if out.stdout.split()[0] != sha:
        raise SystemExit(f"sha256 mismatch for {path}")


def minimal_pipeline(url: str, sha: str, dest: Path) -> None:
    """The floor for a hashed download in Python on this box: one connection, a thread doing
    ``recv_into`` + ``pwrite`` into a pre-sized file, another hashing the written prefix in
    place through ``mmap``. No HTTP parsing to speak of, no retries, no state, no fsync."""
    import mmap
    import threading
    from urllib.parse import urlsplit

    u = urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port or 80))
    sock.sendall(f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    size = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")))
    fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(fd, size)
    done = [len(body)]
    os.pwrite(fd, body, 0)

    def receive() -> None:
        buf = bytearray(256 << 10)
        view = memoryview(buf)
        pos, fill = done[0], 0
        while pos < size:
            n = sock.recv_into(view[fill:min(len(buf), size - pos)])
            if not n:
                raise SystemExit("minimal pipeline: connection closed early")
            fill += n
            if fill == len(buf) or pos + fill >= size:
                os.pwrite(fd, view[:fill], pos)
                pos += fill
                fill = 0
                done[0] = pos

    thread = threading.Thread(target=receive)
    thread.start()
    h, pos, window = hashlib.sha256(), 0, 64 << 20
    while pos < size:
        end = done[0]
        if end <= pos:
            time.sleep(0.002)
            continue
        base = pos - pos % window
        with mmap.mmap(fd, min(window, size - base), prot=mmap.PROT_READ, offset=base) as m:
            stop = min(end, base + len(m))
            with memoryview(m) as view:
                h.update(view[pos - base:stop - base])
            pos = stop
    thread.join()
    os.close(fd)
    sock.close()
    if h.hexdigest() != sha:
        raise SystemExit("minimal pipeline: sha256 mismatch")


def modeldeck_download(url: str, sha: str, out_dir: Path, connections: int = 8) -> None:
    from tui.download import JobSpec
    from tui.download.service import DownloadService
    from tui.settings import Settings
    from tui.store import Database, Inventory

    settings = Settings(models_dir=out_dir / "models", state_dir=out_dir / "state",
                        connections_per_download=connections, connections_per_host=16)

    async def go() -> None:
        db = Database(settings.db_path)
        svc = DownloadService(settings, db, Inventory(db))
        try:
            job_id = svc.enqueue(JobSpec(kind="url", url=url, sha256=sha))
            [job] = await svc.run_until_complete([job_id])
            if job.state != "done":
                raise SystemExit(f"ModelDeck failed: {job.error}")
        finally:
            await svc.stop()
            db.close()

    asyncio.run(go())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2G", help="file size, e.g. 2G or 256M")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/modeldeck-bench"))
    parser.add_argument("--skip-hf", action="store_true", help="skip hf_hub_download (slow)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--only", choices=("capped", "uncapped"), help="one server only")
    args = parser.parse_args()
    check_tools()
    size = parse_size(args.size)
    work = args.workdir
    data_dir = work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    name = "bench.bin"
    sha = make_file(data_dir / name, size)
    capped, free = free_port(), free_port()
    prefix = work / "nginx"
    conf = nginx_conf(prefix, data_dir, name, sha, capped, free)
    out = work / "out"
    results: list[tuple[str, str, list[float]]] = []
    reps = max(1, args.reps)

    def clean() -> None:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)

    clean()
    mb = size / 1e6
    with run_nginx(prefix, conf, [capped, free]):
        cap_url = f"http://127.0.0.1:{capped}/files/{name}"
        free_url = f"http://127.0.0.1:{free}/files/{name}"
        if args.only != "uncapped":
            print(f"capped server (25 MB/s per connection), {mb:.0f} MB:")
            t = timed("ModelDeck", lambda: modeldeck_download(cap_url, sha, out, args.connections),
                      clean, reps)
            results.append(("capped", "ModelDeck", t))

            def aria() -> None:
                subprocess.run(["aria2c", "-q", "-x8", "-s8", "-k1M", "--file-allocation=none",
                                "-d", str(out), "-o", name, cap_url], check=True)
                sha_ok(out / name, sha, tool="openssl")

            results.append(("capped", "aria2c -x8 -s8 + openssl sha256",
                            timed("aria2c", aria, clean, reps)))

            def aria_only() -> None:
                subprocess.run(["aria2c", "-q", "-x8", "-s8", "-k1M", "--file-allocation=none",
                                "-d", str(out), "-o", name, cap_url], check=True)

            results.append(("capped", "aria2c -x8 -s8 (no verify)",
                            timed("aria2c only", aria_only, clean, reps)))

            if not args.skip_hf:
                def hf() -> None:
                    # A child process, so HF_ENDPOINT is set before huggingface_hub is imported
                    # (it bakes the endpoint into URL templates at import).
                    endpoint = f"http://127.0.0.1:{capped}"
                    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_HUB_DISABLE_PROGRESS_BARS="1",
                               HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(out / "hfhome"))
                    code = (
                        "import sys, os\n"
                        "from huggingface_hub import hf_hub_download\n"
                        f"p = hf_hub_download('bench/model', {name!r},"
                        f" cache_dir={str(out / 'hf')!r}, token=False)\n"
                        f"assert os.path.getsize(p) == {size}\n"
                    )
                    subprocess.run([sys.executable, "-c", code], env=env, check=True)

                results.append(("capped", "hf_hub_download", timed("hf_hub_download", hf, clean)))

        if args.only != "capped":
            print("uncapped server:")
            t = timed("ModelDeck", lambda: modeldeck_download(free_url, sha, out, args.connections),
                      clean, reps)
            results.append(("uncapped", "ModelDeck", t))

            def curl() -> None:
                subprocess.run(["curl", "-s", "-f", "-o", str(out / name), free_url], check=True)
                sha_ok(out / name, sha, tool="openssl")

            results.append(("uncapped", "curl -o + openssl sha256",
                            timed("curl + openssl", curl, clean, reps)))

            def curl_only() -> None:
                subprocess.run(["curl", "-s", "-f", "-o", str(out / name), free_url], check=True)

            results.append(("uncapped", "curl -o (no verify)",
                            timed("curl only", curl_only, clean, reps)))

            def curl_same_guarantees() -> None:
                subprocess.run(["curl", "-s", "-f", "-o", str(out / name), free_url], check=True)
                sha_ok(out / name, sha, tool="openssl")
                subprocess.run(["sync", str(out / name)], check=True)

            results.append(("uncapped", "curl -o + openssl sha256 + sync",
                            timed("curl + openssl + sync", curl_same_guarantees, clean, reps)))

            def floor() -> None:
                minimal_pipeline(free_url, sha, out / name)

            results.append(("uncapped", "floor: minimal recv+mmap-hash",
                            timed("minimal pipeline", floor, clean, reps)))

    med = {(g, n): statistics.median(t) for g, n, t in results}
    md_cap = med.get(("capped", "ModelDeck"), 0.0)
    md_free = med.get(("uncapped", "ModelDeck"), 0.0)
    print()
    dropped = "ok" if os.access("/proc/sys/vm/drop_caches", os.W_OK) else "not permitted"
    print(f"size {mb:.0f} MB; nproc {os.cpu_count()}; runs per row {reps} (median; hf once); "
          f"page-cache drop {dropped}")
    print(f"{'server':<9} {'tool':<33} {'median s':>8} {'range s':>11} {'MB/s':>7}  ratio")
    for group, tool, times in results:
        t = med[(group, tool)]
        spread = f"{min(times):.2f}-{max(times):.2f}"
        if tool == "ModelDeck":
            ratio = ""
        elif group == "capped":
            ratio = f"ModelDeck speed / this = {t / md_cap:.2f}x"
        else:
            ratio = f"ModelDeck time / this = {md_free / t:.2f}"
        print(f"{group:<9} {tool:<33} {t:>8.2f} {spread:>11} {mb / t:>7.1f}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
