"""Managed engines: a local OpenAI-compatible server (``vllm serve …``, ``llama-server …``,
``python -m llama_cpp.server …``) that ``modeldeck serve`` starts, watches and restarts.

Supervision lives in ``modeldeck serve``'s process (its event loop): an engine lives as long as
the server that started it, and is stopped with it. Each engine:

* runs its command as given (no shell), in its own process group, with the server's
  environment (keys belong there, never on the command line: a command passing one with
  ``--api-key``-like flags is refused);
* is healthy once ``/health`` or ``/v1/models`` answers 200, within ``health_timeout``;
* is registered as the remote ``<name>`` (``managed = true`` in ``remotes.toml``) once healthy,
  and unregistered when it stops;
* is restarted when it exits or never becomes healthy, after a growing pause, at most
  ``max_restarts`` times in a row (a healthy start resets the count), then marked failed;
* writes its output to ``<state>/engines/<name>.log``, rotated to ``.log.1`` at 1 MiB (two
  files at most);
* stops with SIGTERM to its process group, then SIGKILL after ``stop_grace`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import re
import secrets
import shlex
import signal
import stat
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tui.errors import InvalidInputError, NotFoundError
from tui.remote.registry import add_remote, check_name, check_url, load_remotes, save_remotes
from tui.terminal_text import clean_line

log = logging.getLogger("tui.serve")

ENGINE_DIR = "engines"
TOKEN_FILE = "engine.token"
LOG_LIMIT = 1 << 20
MAX_ARGS = 256
MAX_ARG_CHARS = 4096
MAX_ENGINES = 16
HEALTH_TIMEOUT = 600.0
HEALTH_POLL = 0.5
STOP_GRACE = 10.0
MAX_RESTARTS = 5
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
# flags that put a secret on the command line (visible in ps, the log, engine ls)
_SECRET_FLAG = re.compile(r"^--?[\w-]*(api[-_]?key|token|password|secret)(=.*)?$", re.I)


def check_command(command: list[str]) -> list[str]:
    """The engine's argv, checked: not empty, bounded, printable, no key on it."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise InvalidInputError("give the engine's command after --",
                                hint="e.g. modeldeck engine start lc -- python -m "
                                "llama_cpp.server --model m.gguf --port 8001")
    if len(command) > MAX_ARGS or any(not isinstance(a, str) or len(a) > MAX_ARG_CHARS
                                      for a in command):
        raise InvalidInputError(f"the command is too long (at most {MAX_ARGS} arguments of "
                                f"{MAX_ARG_CHARS} characters)")
    for arg in command:
        if not arg.isprintable():
            raise InvalidInputError("the command holds control characters")
        if _SECRET_FLAG.match(arg):
            flag = arg.split("=", 1)[0]
            raise InvalidInputError(
                f"the command passes a secret with {clean_line(flag, 40)}, where ps, the log "
                "and engine ls show it",
                hint="put it in modeldeck serve's environment instead (vLLM reads "
                "VLLM_API_KEY, llama-server LLAMA_API_KEY)")
    return command


def engine_url(command: list[str], url: str | None = None) -> str:
    """The engine's base URL: ``url``, else ``http://<--host or 127.0.0.1>:<--port>``."""
    if url:
        return check_url(url)
    values: dict[str, str] = {}
    for i, arg in enumerate(command):
        for flag in ("--port", "--host"):
            if arg == flag and i + 1 < len(command):
                values[flag] = command[i + 1]
            elif arg.startswith(flag + "="):
                values[flag] = arg.split("=", 1)[1]
    port = values.get("--port", "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError("cannot tell where the engine will listen (no --port N in its "
                                "command)", hint="give its base URL with --url")
    host = values.get("--host", "127.0.0.1")
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return check_url(f"http://{host}:{port}")


# -- the token that lets a caller start commands ---------------------------------------------


def token_path(state_dir: Path) -> Path:
    return Path(state_dir) / TOKEN_FILE


def read_token(state_dir: Path, *, create: bool = False) -> str | None:
    """The engine token (``engine.token`` in the state dir, mode 0600, this user's): whoever
    can read it may start commands through ``modeldeck serve``. None when absent or unsafe."""
    path = token_path(state_dir)
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_hex(32).encode())
            finally:
                os.close(fd)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        text = os.read(fd, 256).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return text if re.fullmatch(r"[0-9a-f]{64}", text) else None


def token_ok(state_dir: Path, given: str | None) -> bool:
    """Whether ``given`` is the engine token."""
    token = read_token(state_dir)
    return bool(token and given and hmac.compare_digest(token.encode(), given.encode()))


# -- the log ----------------------------------------------------------------------------------


def log_path(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / ENGINE_DIR / f"{check_name(name)}.log"


def log_tail(state_dir: Path, name: str, lines: int = 50) -> list[str]:
    """The last ``lines`` lines of an engine's log (cleaned, each at most 500 characters)."""
    path = log_path(state_dir, name)
    chunks = []
    for part in (path.with_name(path.name + ".1"), path):
        with contextlib.suppress(FileNotFoundError), open(part, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - LOG_LIMIT))
            chunks.append(f.read(LOG_LIMIT))
    if not chunks:
        raise NotFoundError(f"no log of an engine named {name!r}",
                            hint="see modeldeck engine ls")
    text = b"".join(chunks).decode("utf-8", "replace")
    return [clean_line(line, 500) for line in text.splitlines()[-lines:]]


class _Log:
    """Append-only, rotated at :data:`LOG_LIMIT` (the current file and one older)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - closed by close()
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        if self._size + len(data) > LOG_LIMIT:
            self._file.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._file = open(self.path, "ab")  # noqa: SIM115
            self._size = 0
        self._file.write(data)
        self._file.flush()
        self._size += len(data)

    def note(self, text: str) -> None:
        self.write(f"--- modeldeck {time.strftime('%Y-%m-%d %H:%M:%S')}: {text} ---\n"
                   .encode())

    def close(self) -> None:
        self._file.close()


# -- one engine -------------------------------------------------------------------------------


@dataclass(eq=False)
class Engine:
    """One managed engine and its supervisor task."""

    name: str
    command: list[str]
    url: str
    state_dir: Path
    key_env: str | None = None
    health_timeout: float = HEALTH_TIMEOUT
    max_restarts: int = MAX_RESTARTS
    backoff: tuple[float, ...] = BACKOFF
    stop_grace: float = STOP_GRACE
    sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep
    state: str = "starting"  # starting, running, restarting, failed, stopping, stopped
    pid: int | None = None
    restarts: int = 0
    last_exit: int | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = None
    _proc: asyncio.subprocess.Process | None = None
    _pump_task: asyncio.Future[None] | None = None
    _stopping: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "command": shlex.join(self.command),
                "state": self.state, "pid": self.pid, "restarts": self.restarts,
                "last_exit": self.last_exit, "error": self.error,
                "log": str(log_path(self.state_dir, self.name))}

    async def run(self) -> None:
        """Start, watch, restart; until stopped (or failed)."""
        out = _Log(log_path(self.state_dir, self.name))
        failures = 0
        try:
            while True:
                healthy = await self._start_once(out)
                if healthy:
                    failures = 0
                    self.state, self.error = "running", None
                    await asyncio.to_thread(self._register)
                    assert self._proc is not None
                    self.last_exit = await self._proc.wait()
                if self._stopping:
                    return
                await self._terminate()
                out.note(f"exited with code {self.last_exit}")
                failures += 1
                if failures > self.max_restarts:
                    self.state = "failed"
                    self.error = (f"gave up after {self.max_restarts} restarts in a row "
                                  f"(last exit code {self.last_exit}); see modeldeck engine "
                                  f"log {self.name}")
                    log.warning("engine %s: %s", self.name, self.error)
                    return
                self.state = "restarting"
                await self.sleep(self.backoff[min(failures, len(self.backoff)) - 1])
                self.restarts += 1
        finally:
            self._stopping = True
            await self._terminate()
            if self.state != "failed":
                self.state = "stopped"
            out.note("stopped")
            out.close()
            await asyncio.to_thread(self._unregister)

    async def _start_once(self, out: _Log) -> bool:
        """Spawn the command and wait until it is healthy; False when it exits or never is."""
        self.state = "starting" if not self.restarts else "restarting"
        out.note(f"starting {shlex.join(self.command)}")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True)
        except OSError as exc:
            self.error = f"cannot start {clean_line(self.command[0], 80)}: {exc.strerror or exc}"
            self.last_exit = None
            out.note(self.error)
            self._proc = None
            return False
        self.pid = self._proc.pid
        self._pump_task = asyncio.ensure_future(self._pump(self._proc, out))
        health = asyncio.ensure_future(self._wait_healthy())
        exited = asyncio.ensure_future(self._proc.wait())
        try:
            await asyncio.wait({health, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (health, exited):
                task.cancel()
        if exited.done() and not exited.cancelled():
            self.last_exit = exited.result()
            return False
        if health.done() and not health.cancelled() and health.result():
            return True
        self.error = f"not healthy within {self.health_timeout:g} s"
        out.note(self.error)
        return False

    async def _wait_healthy(self) -> bool:
        root = self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.health_timeout
        async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
            while loop.time() < deadline:
                for path in ("/health", "/v1/models"):
                    with contextlib.suppress(httpx.HTTPError):
                        r = await client.get(root + path)
                        if r.status_code == 200:
                            return True
                await asyncio.sleep(HEALTH_POLL)
        return False

    @staticmethod
    async def _pump(proc: asyncio.subprocess.Process, out: _Log) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            while chunk := await proc.stdout.read(65536):
                out.write(chunk)

    async def _terminate(self) -> None:
        """SIGTERM to the engine's process group, SIGKILL after ``stop_grace``."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), self.stop_grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        else:  # the leader exited: what it left in its group goes too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        pump = self._pump_task
        if pump is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(pump, 5)
        if self.last_exit is None:
            self.last_exit = proc.returncode
        self._proc = None
        self.pid = None

    def _register(self) -> None:
        try:
            add_remote(self.state_dir, self.name, self.url, self.key_env, replace=True,
                       managed=True)
        except InvalidInputError as exc:
            self.error = str(exc)
            log.warning("engine %s: not registered as a remote: %s", self.name, exc)

    def _unregister(self) -> None:
        with contextlib.suppress(InvalidInputError, OSError):
            remotes = load_remotes(self.state_dir)
            entry = remotes.get(self.name)
            if entry is not None and entry.managed and entry.url == self.url:
                del remotes[self.name]
                save_remotes(self.state_dir, remotes)

    async def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL) and forget its remote (a failed one is left
        failed: it stopped already)."""
        if self.task is None or self.task.done():
            return
        self._stopping = True
        self.state = "stopping"
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class Engines:
    """The engines of one ``modeldeck serve``; ``spawn`` runs a coroutine as a task the server
    cancels when it stops (which stops the engines)."""

    def __init__(self, state_dir: Path, spawn: Callable[[Any], asyncio.Task[Any]],
                 **engine_options: Any) -> None:
        self.state_dir = Path(state_dir)
        self._spawn = spawn
        self._options = engine_options
        self.engines: dict[str, Engine] = {}

    def start(self, name: str, command: list[str], url: str | None = None,
              key_env: str | None = None, **options: Any) -> Engine:
        check_name(name)
        command = check_command(command)
        where = engine_url(command, url)
        current = self.engines.get(name)
        if current is not None and current.state not in ("stopped", "failed"):
            raise InvalidInputError(f"an engine named {name!r} is running already",
                                    hint=f"modeldeck engine stop {name} first")
        existing = load_remotes(self.state_dir).get(name)
        if existing is not None and not existing.managed:
            raise InvalidInputError(f"a remote named {name!r} exists already",
                                    hint="pick another engine name")
        if len([e for e in self.engines.values() if e.state not in ("stopped", "failed")]) \
                >= MAX_ENGINES:
            raise InvalidInputError(f"at most {MAX_ENGINES} engines run at once")
        engine = Engine(name, command, where, self.state_dir, key_env,
                        **{**self._options, **options})
        self.engines[name] = engine
        engine.task = self._spawn(engine.run())
        return engine

    async def stop(self, name: str) -> Engine:
        engine = self.engines.get(name)
        if engine is None:
            raise NotFoundError(f"no engine named {clean_line(name, 80)!r}",
                                hint="see modeldeck engine ls")
        await engine.stop()
        return engine

    def get(self, name: str) -> Engine | None:
        return self.engines.get(name)
