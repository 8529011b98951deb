"""Blocking HTTP/1.1 GETs for piece bodies, run in worker threads.

At hundreds of MB/s the event loop cannot keep up with per-chunk Python work (h11, httpcore,
``bytes`` objects, queue hand-offs). For the body of a piece :class:`FileTransfer` therefore
opens a plain socket in a thread: it sends a minimal ``GET`` (``Range``/``If-Range``,
``Accept-Encoding: identity``, ``Authorization`` only for the auth origin, redirects followed
by hand exactly like :class:`~tui.download.http.Transport`), parses the status line and
headers, and hands the open socket back so the body can be received with ``recv_into`` into a
preallocated buffer and ``pwrite``-n from it — both release the GIL.

Only used without proxies (``*_PROXY`` variables make :func:`connector_for` return None, and
the httpx path is used) and for clients :func:`~tui.download.http.make_client` built.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urljoin

import httpx

from tui.download.http import MAX_REDIRECTS, HttpStatusError, client_settings, origin
from tui.download.http import ssl_context as http_ssl_context
from tui.download.validate import parse_length

T = TypeVar("T")

MAX_HEADER_BYTES = 64 << 10
REDIRECTS = (301, 302, 303, 307, 308)
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")
DISABLE_ENV = "MODELDECK_HTTPX_BODY"  # set to 1 to keep bodies on the httpx path
MAX_IDLE_PER_ORIGIN = 16  # kept-alive sockets per origin (pieces reuse them)
MAX_DRAIN = 64 << 10  # a redirect's body up to this size is read so its socket can be reused

PoolKey = tuple[str, str, int]


def proxies_configured() -> bool:
    """True if any proxy variable is set (httpx would route through it)."""
    return any(os.environ.get(v) or os.environ.get(v.upper()) for v in PROXY_VARS)


class Aborted(Exception):
    """The controlling coroutine gave up on this request."""


class _Stale(Exception):
    """A kept-alive connection failed before any answer: retry on a new one."""


@dataclass(slots=True)
class Handle:
    """Shared between a request thread and its coroutine: :meth:`abort` unblocks the thread."""

    sock: socket.socket | None = None
    aborted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_sock(self, sock: socket.socket | None) -> None:
        with self.lock:
            if self.aborted and sock is not None:
                _shutdown(sock)
                raise Aborted()
            self.sock = sock

    def abort(self) -> None:
        """Shut the socket down (a blocked ``recv`` returns at once); safe from any thread."""
        with self.lock:
            self.aborted = True
            if self.sock is not None:
                _shutdown(self.sock)


def _shutdown(sock: socket.socket) -> None:
    # The base-class method on purpose: SSLSocket.shutdown drops its SSL object, which a
    # thread blocked in recv_into may still be using.
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


@dataclass(slots=True)
class RawResponse:
    """A final response whose body is still on ``sock`` (``head`` holds its first bytes)."""

    status_code: int
    headers: httpx.Headers
    url: str
    sock: socket.socket
    head: bytes
    handle: Handle
    key: PoolKey | None = None
    keep_alive: bool = False  # HTTP/1.1 without ``Connection: close``
    body_done: bool = False  # set by the reader once exactly the whole body was read

    @property
    def body_length(self) -> int | None:
        """Content-Length (strictly parsed), or None (then the body ends at EOF)."""
        return parse_length(self.headers.get("content-length"))

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    @property
    def reusable(self) -> bool:
        """The whole body was read and the server keeps the connection open."""
        return self.keep_alive and self.body_done and self.key is not None

    def close(self) -> None:
        self.handle.set_sock(None)
        try:
            self.sock.close()
        except OSError:
            pass


class Connector:
    """Opens :class:`RawResponse` objects (blocking; call from a worker thread).

    Connections are kept alive between requests (per origin, like httpx's pool): a piece, a
    redirect hop or the next file reuses an idle socket instead of a new TCP + TLS handshake.
    """

    def __init__(self, *, user_agent: str, connect_timeout: float | None,
                 stall_timeout: float | None, ssl_context: ssl.SSLContext | None) -> None:
        self.user_agent = user_agent
        self.connect_timeout = connect_timeout
        self.stall_timeout = stall_timeout
        self._ssl_context = ssl_context
        self._idle: dict[PoolKey, list[socket.socket]] = {}
        self._idle_lock = threading.Lock()
        self.connects = 0  # new connections opened (for tests and stats)

    def release(self, resp: RawResponse) -> None:
        """Done with ``resp``: keep its connection for reuse if the body was read whole and
        the server allows it, else close it."""
        resp.handle.set_sock(None)
        if resp.reusable and not resp.handle.aborted:
            assert resp.key is not None
            with self._idle_lock:
                idle = self._idle.setdefault(resp.key, [])
                if len(idle) < MAX_IDLE_PER_ORIGIN:
                    idle.append(resp.sock)
                    return
        resp.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._idle_lock:
            socks = [s for idle in self._idle.values() for s in idle]
            self._idle.clear()
        for sock in socks:
            try:
                sock.close()
            except OSError:
                pass

    def _checkout(self, key: PoolKey) -> socket.socket | None:
        """An idle connection to ``key`` the server has not closed meanwhile, or None."""
        while True:
            with self._idle_lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                sock = idle.pop()
            try:
                # Readable while idle means EOF (the server closed it) or stray bytes.
                readable, _, _ = select.select([sock], [], [], 0)
            except (OSError, ValueError):
                readable = [sock]
            if not readable:
                return sock
            try:
                sock.close()
            except OSError:
                pass

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = http_ssl_context()
        return self._ssl_context

    def open(self, handle: Handle, url: str, headers: dict[str, str],
             token: str | None, auth_origin: str | None) -> RawResponse:
        """GET ``url`` following redirects; raises :class:`HttpStatusError` for >= 400."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            hdrs = dict(headers)
            if token and auth_origin and origin(current) == origin(auth_origin):
                hdrs["Authorization"] = f"Bearer {token}"
            resp = self._request(handle, current, hdrs)
            if resp.status_code in REDIRECTS and "location" in resp.headers:
                self._drain(resp)
                self.release(resp)
                current = urljoin(current, resp.headers["location"])
                continue
            if resp.status_code >= 400:
                resp.close()
                raise HttpStatusError(resp.status_code, current, resp.headers)
            return resp
        raise HttpStatusError(310, current, httpx.Headers())

    def _drain(self, resp: RawResponse) -> None:
        """Read a short body (a redirect's) so the connection can be reused; else leave it
        marked unusable."""
        length = resp.body_length
        if length is None or resp.chunked or length > MAX_DRAIN or len(resp.head) > length:
            return
        left = length - len(resp.head)
        try:
            while left > 0:
                chunk = resp.sock.recv(min(left, 65536))
                if not chunk:
                    return
                left -= len(chunk)
        except OSError:
            return
        resp.body_done = True

    def _request(self, handle: Handle, url: str, headers: dict[str, str]) -> RawResponse:
        u = httpx.URL(url)
        if u.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {u.scheme!r}")
        port = u.port or (443 if u.scheme == "https" else 80)
        key: PoolKey = (u.scheme, u.host, port)
        lines = [f"GET {u.raw_path.decode('ascii')} HTTP/1.1",
                 f"Host: {u.netloc.decode('ascii')}",
                 f"User-Agent: {self.user_agent}",
                 "Accept: */*",
                 "Accept-Encoding: identity"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        sock = self._checkout(key)
        if sock is not None:
            # A kept-alive socket can still have been closed by the server a moment ago:
            # then (nothing of an answer received) ask again on a new connection.
            handle.set_sock(sock)
            try:
                return self._exchange(handle, sock, request, url, key, reused=True)
            except _Stale:
                pass
        sock = self._connect(handle, u, port)
        return self._exchange(handle, sock, request, url, key, reused=False)

    def _exchange(self, handle: Handle, sock: socket.socket, request: bytes, url: str,
                  key: PoolKey, *, reused: bool) -> RawResponse:
        """Send ``request`` on ``sock`` and read the answer's head. Any failure closes the
        socket; on a ``reused`` one, a failure other than a stall raises :class:`_Stale`."""
        try:
            sock.settimeout(self.stall_timeout)
            sock.sendall(request)
            status, version, hdrs, head = _read_head(sock)
        except BaseException as exc:
            handle.set_sock(None)
            sock.close()
            if isinstance(exc, TimeoutError):
                raise httpx.ReadTimeout("no response within the stall timeout") from None
            if isinstance(exc, (OSError, httpx.RemoteProtocolError)):
                if handle.aborted:
                    raise Aborted() from None
                if reused:
                    raise _Stale() from None
                if isinstance(exc, OSError):
                    raise httpx.ReadError(str(exc) or type(exc).__name__) from None
            raise
        return self._response(status, version, hdrs, url, sock, head, handle, key)

    @staticmethod
    def _response(status: int, version: str, hdrs: httpx.Headers, url: str,
                  sock: socket.socket, head: bytes, handle: Handle, key: PoolKey
                  ) -> RawResponse:
        keep_alive = version == "HTTP/1.1" and "close" not in hdrs.get("connection", "").lower()
        return RawResponse(status, hdrs, url, sock, head, handle, key=key, keep_alive=keep_alive)

    def _connect(self, handle: Handle, u: httpx.URL, port: int) -> socket.socket:
        """A new connection (TLS for https), registered with ``handle``."""
        self.connects += 1
        try:
            sock = socket.create_connection((u.host, port), timeout=self.connect_timeout)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {u.host}:{port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if u.scheme == "https":
                try:
                    sock = self.ssl_context().wrap_socket(sock, server_hostname=u.host)
                except (OSError, ssl.SSLError) as exc:
                    raise httpx.ConnectError(str(exc)) from None
            handle.set_sock(sock)
            sock.settimeout(self.stall_timeout)
            return sock
        except BaseException:
            handle.set_sock(None)
            sock.close()
            raise


def _read_head(sock: socket.socket) -> tuple[int, str, httpx.Headers, bytes]:
    """Status, HTTP version, headers and the body bytes received with them (1xx skipped)."""
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        while end < 0:
            if len(data) > MAX_HEADER_BYTES:
                raise httpx.RemoteProtocolError("response header too large")
            chunk = sock.recv(65536)
            if not chunk:
                raise httpx.RemoteProtocolError("server closed the connection before answering")
            data += chunk
            end = data.find(b"\r\n\r\n")
        head, data = data[:end].decode("latin-1"), data[end + 4:]
        status_line, *rest = head.split("\r\n")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise httpx.RemoteProtocolError(f"bad status line {status_line[:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:
            continue
        headers = []
        for line in rest:
            name, sep, value = line.partition(":")
            if not sep:
                raise httpx.RemoteProtocolError("malformed header line")
            # As bytes: a hostile non-ASCII value must not crash httpx's (ASCII) encoding.
            headers.append((name.strip().encode("latin-1"), value.strip().encode("latin-1")))
        return status, parts[0], httpx.Headers(headers), data


_connectors: weakref.WeakKeyDictionary[httpx.AsyncClient, Connector] = (
    weakref.WeakKeyDictionary()
)


def connector_for(client: httpx.AsyncClient) -> Connector | None:
    """The :class:`Connector` (one per client, so its kept-alive sockets are shared by every
    transfer) matching ``client``'s timeouts, User-Agent and TLS context; None when bodies
    must stay on httpx (proxies, a client not built by ``make_client``, opt-out)."""
    if os.environ.get(DISABLE_ENV) == "1" or proxies_configured():
        return None
    connector = _connectors.get(client)
    if connector is None:
        connector = _new_connector(client)
        if connector is not None:
            _connectors[client] = connector
    return connector


def close_connector(client: httpx.AsyncClient) -> None:
    """Close the idle sockets of ``client``'s connector (when the client is closed)."""
    connector = _connectors.pop(client, None)
    if connector is not None:
        connector.close()


def _new_connector(client: httpx.AsyncClient) -> Connector | None:
    """A connector with the settings :func:`~tui.download.http.make_client` gave ``client``
    (its User-Agent, timeouts and TLS context); None for a client built any other way."""
    settings = client_settings(client)
    if settings is None:
        return None
    return Connector(
        user_agent=settings.user_agent,
        connect_timeout=settings.connect_timeout,
        stall_timeout=settings.stall_timeout,
        ssl_context=settings.ssl_context,
    )


def start_thread(fn: Callable[..., T], *args: Any, name: str = "modeldeck-fetch"
                 ) -> Any:
    """Run ``fn(*args)`` in a new daemon thread; returns an asyncio future for its result."""
    import asyncio

    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, False, exc)
        else:
            loop.call_soon_threadsafe(settle, True, result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut
