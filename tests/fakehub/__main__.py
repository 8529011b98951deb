"""Run the fake Hub by hand: ``python -m tests.fakehub --repo acme/tiny=./model.gguf``.

Serves the Hub (API + resolver) and its CDN on two local ports, as :mod:`.server` describes,
so the whole Hub flow can be tried without internet::

    python -m tests.fakehub --repo acme/tiny=./models/ --random acme/big/big-Q4_K_M.gguf=1G
    HF_ENDPOINT=http://127.0.0.1:8000 modeldeck pull acme/tiny

Run from the repository root (``tests`` must be importable). ``GET /_fakehub/stats`` on the
Hub port returns the counters (resolver calls, bytes served…) as JSON.
"""

from __future__ import annotations

import argparse
import mmap
import random
import signal
import struct
import sys
import threading
from pathlib import Path
from typing import Any

from tui.settings import parse_rate

from .server import ETAG_STYLES, FakeHub


def _files(spec: str) -> tuple[str, dict[str, Any]]:
    """``owner/name=PATH``: a file (served under its name) or a folder (every file in it)."""
    repo, sep, where = spec.partition("=")
    if not sep or repo.count("/") != 1:
        raise SystemExit(f"--repo wants owner/name=PATH, got {spec!r}")
    path = Path(where).expanduser()
    if path.is_file():
        return repo, {path.name: _map(path)}
    if path.is_dir():
        found = {str(p.relative_to(path)): _map(p) for p in sorted(path.rglob("*"))
                 if p.is_file() and not any(part.startswith(".") for part in
                                            p.relative_to(path).parts)}
        if found:
            return repo, found
    raise SystemExit(f"--repo {spec!r}: no file at {path}")


def _map(path: Path) -> Any:
    """The file's bytes, memory-mapped (a big model is not read into memory)."""
    if path.stat().st_size == 0:
        return b""
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _random(spec: str) -> tuple[str, str, bytearray]:
    """``owner/name/path=SIZE``: SIZE pseudo-random bytes (a GGUF header for ``*.gguf``)."""
    target, sep, size = spec.partition("=")
    parts = target.split("/", 2)
    if not sep or len(parts) != 3:
        raise SystemExit(f"--random wants owner/name/path=SIZE, got {spec!r}")
    n = parse_rate(size)
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 0) if parts[2].endswith(".gguf") else b""
    data = bytearray(head[:n])
    rnd = random.Random(n)
    while len(data) < n:
        data += rnd.randbytes(min(16 << 20, n - len(data)))
    return f"{parts[0]}/{parts[1]}", parts[2], data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fakehub", description=__doc__.split("\n")[0])
    p.add_argument("--repo", action="append", default=[], metavar="OWNER/NAME=PATH",
                   help="serve a file or a folder as a repo (repeatable)")
    p.add_argument("--random", action="append", default=[], metavar="OWNER/NAME/PATH=SIZE",
                   help="add a file of SIZE random bytes, e.g. acme/big/big-Q4_K_M.gguf=1G")
    p.add_argument("--gated", action="append", default=[], metavar="OWNER/NAME",
                   help="make a repo gated (access only with --token)")
    p.add_argument("--token", action="append", default=[], help="a token gated repos accept")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="the Hub (0: any free port)")
    p.add_argument("--cdn-port", type=int, default=0, help="the CDN (default: any free port)")
    p.add_argument("--cdn-etag", choices=ETAG_STYLES, default="strong")
    p.add_argument("--cdn-head", type=int, choices=(200, 403), default=200)
    p.add_argument("--url-ttl", type=float, default=3600.0, help="signed URLs' life, seconds")
    p.add_argument("--rate-limit", metavar="N/SECONDS",
                   help="resolver budget, e.g. 3000/300 (the Hub's anonymous one)")
    p.add_argument("--retry-after", action="store_true",
                   help="send Retry-After with a rate-limit 429 too")
    p.add_argument("--cap", metavar="RATE", help="CDN bytes/s per connection, e.g. 25M")
    p.add_argument("--xet", action="store_true",
                   help="send X-Xet-Hash and the xet Link (clients with hf_xet then try CAS, "
                        "which this fake does not serve: set HF_HUB_DISABLE_XET=1)")
    args = p.parse_args(argv)

    repos: dict[str, dict[str, Any]] = {}
    for spec in args.repo:
        repo, files = _files(spec)
        repos.setdefault(repo, {}).update(files)
    for spec in args.random:
        repo, path, data = _random(spec)
        repos.setdefault(repo, {})[path] = data
    if not repos:
        p.error("give at least one --repo or --random")
    limit = None
    if args.rate_limit:
        n, _, seconds = args.rate_limit.partition("/")
        try:
            limit = (int(n), float(seconds or 300))
        except ValueError:
            p.error(f"--rate-limit wants N/SECONDS, got {args.rate_limit!r}")
    hub = FakeHub(cdn_etag=args.cdn_etag, cdn_head=args.cdn_head, url_ttl=args.url_ttl,
                  xet=args.xet, cdn_rate=parse_rate(args.cap) if args.cap else None,
                  host=args.host, port=args.port, cdn_port=args.cdn_port)
    for repo, files in repos.items():
        hub.add_repo(repo, files, gated=repo in args.gated, tokens=set(args.token))
    if limit:
        hub.rate_limit(*limit, retry_after=args.retry_after)
    try:
        hub.start()
    except OSError as exc:
        print(f"fakehub: cannot listen: {exc}", file=sys.stderr)
        return 1
    print(f"HF_ENDPOINT={hub.url}", flush=True)
    print(f"fake Hub on {hub.url}, its CDN on {hub.cdn_url}", file=sys.stderr)
    for repo, files in repos.items():
        names = ", ".join(f"{k} ({len(v)} B{', LFS' if len(v) >= 1024 else ''})"
                          for k, v in files.items())
        print(f"  {repo}{' (gated)' if repo in args.gated else ''}: {names}", file=sys.stderr)
    first = next(iter(repos))
    print(f"try: HF_ENDPOINT={hub.url} modeldeck pull {first} --include '*'\n"
          f"counters: curl {hub.url}/_fakehub/stats   (Ctrl-C stops)", file=sys.stderr)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] if len(sys.argv) > 1 else None))
