"""``serve.json``: where a running ``modeldeck serve`` listens (host, port, pid).

Written atomically once the server listens, removed when it stops (only by the process that
wrote it). A reader trusts nothing in it: the file is bounded, every field type-checked, and
the pid must be alive (the client then asks the server itself, see :mod:`tui.serve.client`).
It never holds the API key.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "serve.json"
MAX_STATE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """A running server as ``serve.json`` describes it."""

    host: str
    port: int
    pid: int
    started_at: float
    auth: bool  # whether it asks for an API key
    version: str = ""

    @property
    def url(self) -> str:
        """The base URL to reach it from this machine (a wildcard bind via loopback)."""
        return f"http://{connect_host(self.host)}:{self.port}"


def connect_host(host: str) -> str:
    """The address that reaches a server bound to ``host`` from this machine, URL-ready."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    return host


def state_path(state_dir: Path) -> Path:
    """Where ``serve.json`` lives."""
    return Path(state_dir) / STATE_FILE


def write_state(state_dir: Path, info: ServerInfo) -> Path:
    """Write ``serve.json`` atomically (mode 0600); returns its path."""
    path = state_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    data = json.dumps(asdict(info), ensure_ascii=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def remove_state(state_dir: Path, pid: int | None = None) -> None:
    """Remove ``serve.json`` if it is this process's (or ``pid``'s)."""
    info = read_state(state_dir, check_pid=False)
    if info is not None and info.pid == (pid if pid is not None else os.getpid()):
        with contextlib.suppress(OSError):
            state_path(state_dir).unlink()


def read_state(state_dir: Path, *, check_pid: bool = True) -> ServerInfo | None:
    """The server ``serve.json`` names, or None (absent, unreadable, malformed, or its
    process gone when ``check_pid``)."""
    path = state_path(state_dir)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_STATE_BYTES + 1)
        if len(raw) > MAX_STATE_BYTES:
            return None
        data = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    info = _parse(data)
    if info is None or (check_pid and not pid_alive(info.pid)):
        return None
    return info


def _parse(data: Any) -> ServerInfo | None:
    if not isinstance(data, dict):
        return None
    host, port, pid = data.get("host"), data.get("port"), data.get("pid")
    started, auth, version = data.get("started_at", 0), data.get("auth"), data.get("version", "")
    if not (isinstance(host, str) and 0 < len(host) <= 253 and host.isprintable()):
        return None
    if not _is_int(port) or not 0 < port < 65536 or not _is_int(pid) or not 0 < pid < 1 << 31:
        return None
    if not isinstance(auth, bool) or not isinstance(started, int | float):
        return None
    if not isinstance(version, str) or len(version) > 64:
        version = ""
    return ServerInfo(host, port, pid, float(started), auth, version)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    except OSError:
        return False
    return True


def new_info(host: str, port: int, auth: bool) -> ServerInfo:
    """This process's entry."""
    from tui import __version__

    return ServerInfo(host, port, os.getpid(), time.time(), auth, __version__)
