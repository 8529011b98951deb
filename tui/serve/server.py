"""Run the server inside the caller's event loop: ``modeldeck serve``, or the dashboard.

:func:`start_server` binds the socket itself (so a port in use, an address that is not this
machine's or a privileged port is one line before anything starts), builds the app over the
caller's services and runs :class:`uvicorn.Server` as a task of the running loop; the handle's
:meth:`ServerHandle.stop` shuts it down gracefully (open answers get a few seconds, then are
cancelled, which stops their generation). Signals stay with the caller (the CLI turns Ctrl-C
into a stop; the dashboard has its own), and so does logging (uvicorn's config is not applied).

While it runs, ``serve.json`` in the state dir says where it listens (see :mod:`.state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from tui.errors import InvalidInputError
from tui.serve.app import create_app
from tui.serve.auth import check_bind, load_api_key
from tui.serve.context import MAX_BODY
from tui.serve.state import ServerInfo, connect_host, new_info, remove_state, write_state
from tui.serve.stats import ServeStats
from tui.settings import Settings
from tui.terminal_text import clean_line

GRACEFUL_SECONDS = 5.0  # open answers get this long at shutdown before they are cancelled
STARTUP_SECONDS = 30.0


class _Server(uvicorn.Server):
    """uvicorn without its signal handling: the host of the server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ServerHandle:
    """A running server: where it listens, and how to stop it."""

    def __init__(self, server: _Server, task: asyncio.Task[None], info: ServerInfo,
                 app: Any, state_dir: Any, wrote_state: bool, unsubscribe: Any) -> None:
        self.server = server
        self.task = task
        self.info = info
        self.app = app
        self._state_dir = state_dir
        self._wrote_state = wrote_state
        self._unsubscribe = unsubscribe
        self._stopped = False

    @property
    def host(self) -> str:
        return self.info.host

    @property
    def port(self) -> int:
        return self.info.port

    @property
    def url(self) -> str:
        """The base URL from this machine (``http://127.0.0.1:8765``)."""
        return self.info.url

    @property
    def stats(self) -> ServeStats:
        """The live numbers (requests in flight, per minute, per model, last error)."""
        return self.app.state.serve.metrics.stats

    @property
    def running(self) -> bool:
        return not self.task.done()

    async def wait(self) -> None:
        """Until the server stops (by :meth:`stop`, or a failure)."""
        await asyncio.shield(self.task)

    async def stop(self, timeout: float = GRACEFUL_SECONDS) -> None:
        """Stop accepting, give open requests ``timeout`` seconds, cancel the rest; remove
        ``serve.json``. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout + 5)
        except (TimeoutError, Exception):
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        finally:
            await self.app.state.serve.aclose()
            self._unsubscribe()
            if self._wrote_state:
                remove_state(self._state_dir)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening non-blocking socket on ``host:port`` (0: any free port); one line for
    what goes wrong."""
    where = f"{clean_line(host, 60)}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInputError(f"cannot listen on {where}: unknown host ({exc})",
                                hint="give an IP address of this machine, or 127.0.0.1"
                                ) from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            hint = "another server (another modeldeck serve?) uses it: pick another --port"
        elif exc.errno == errno.EADDRNOTAVAIL:
            hint = "that is not an address of this machine"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            hint = "ports below 1024 need root: pick another --port"
        else:
            hint = "check --host and --port"
        raise InvalidInputError(f"cannot listen on {where}: {exc.strerror or exc}",
                                hint=hint) from None
    return sock


async def start_server(
    services: Any,
    settings: Settings | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    api_key: str | None = None,
    cors_origins: tuple[str, ...] | None = None,
    max_body: int = MAX_BODY,
    write_state_file: bool = True,
) -> ServerHandle:
    """Start serving ``services`` in the running loop; returns once it accepts connections.

    ``host``/``port``/``cors_origins`` default to the settings; ``api_key`` to the key the
    settings point at (``serve_api_key_env`` / ``serve_api_key_file``). Binding beyond
    loopback without a key raises InvalidInputError, as does a socket that cannot be bound.
    """
    settings = settings or services.settings
    host = host if host is not None else settings.serve_host
    port = port if port is not None else settings.serve_port
    if api_key is None:
        api_key = load_api_key(env_name=settings.serve_api_key_env,
                               key_file=settings.serve_api_key_file)
    check_bind(host, api_key, settings.serve_api_key_env)
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    app = create_app(services, api_key=api_key,
                     cors_origins=settings.serve_cors_origins if cors_origins is None
                     else cors_origins, max_body=max_body)
    metrics = app.state.serve.metrics
    unsubscribe = services.downloads.subscribe(metrics.on_download)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                            server_header=False, ws="none", proxy_headers=False,
                            timeout_graceful_shutdown=int(GRACEFUL_SECONDS), loop="none")
    server = _Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_SECONDS
    while not server.started and not task.done() and loop.time() < deadline:
        await asyncio.sleep(0.005)
    if not server.started:
        server.should_exit = True
        unsubscribe()
        with contextlib.suppress(BaseException):
            task.cancel()
            await task
        sock.close()
        raise InvalidInputError(f"the server on {connect_host(host)}:{bound_port} did not start")
    info = new_info(host, bound_port, auth=api_key is not None)
    wrote = False
    if write_state_file:
        with contextlib.suppress(OSError):
            write_state(settings.state_dir, info)
            wrote = True
    return ServerHandle(server, task, info, app, settings.state_dir, wrote, unsubscribe)
