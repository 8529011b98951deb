"""HTTP plumbing for downloads: one pooled ``httpx.AsyncClient``, per-host connection limits,
redirects followed by hand (the token is sent only to the Hub's own origin, never to the host
a redirect points at), status mapping and retry timing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import re
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import httpx

from tui import __version__
from tui.download.errors import redact

log = logging.getLogger(__name__)

MAX_REDIRECTS = 10
RATE_LIMIT_MARGIN = 1.0  # seconds added to a RateLimit reset time
_DECIMAL_RE = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?")
_RATELIMIT_RE = re.compile(
    r'"?[\w-]*"?\s*;\s*r\s*=\s*(?P<r>[0-9]{1,9})\s*;\s*t\s*=\s*(?P<t>[0-9]{1,9})(?![0-9])')


@dataclass(slots=True)
class RetryPolicy:
    """Retries until ``give_up_after`` seconds pass without progress (and, if set, at most
    ``max_tries`` failures in a row), exponential backoff between them, or the wait a server
    asks for (``Retry-After`` / ``RateLimit``, up to ``max_retry_after``).

    ``clock`` (monotonic seconds) and ``sleep`` are injectable for tests.
    """

    give_up_after: float = 600.0
    max_tries: int | None = None
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 3600.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt`` (1-based count of failures so far)."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        # The exponent is capped: retries go on for minutes, 2**1100 is no float.
        base = min(self.max_delay, self.base_delay * (2 ** min(max(0, attempt - 1), 32)))
        return base * (0.75 + random.random() / 2)

    def exhausted(self, failures: int, since: float, delay: float) -> bool:
        """True when waiting ``delay`` more seconds would pass ``give_up_after`` since the
        last progress (at ``since`` on :attr:`clock`), or after ``max_tries`` failures."""
        if self.max_tries is not None and failures >= self.max_tries:
            return True
        return self.clock() + delay - since > self.give_up_after


class HttpStatusError(Exception):
    """A final (non-redirect) response with an error status."""

    def __init__(self, status: int, url: str, headers: httpx.Headers) -> None:
        self.status = status
        self.url = url
        self.headers = headers
        self.error_code = headers.get("x-error-code")
        self.rate_limit = parse_ratelimit(headers.get("ratelimit")) if status == 429 else None
        if self.rate_limit is not None and self.rate_limit[0] == 0:
            # The window's end, plus a second for rounding (as huggingface_hub does).
            self.retry_after: float | None = self.rate_limit[1] + RATE_LIMIT_MARGIN
        else:
            self.retry_after = parse_retry_after(headers.get("retry-after"))
        super().__init__(f"HTTP {status} from {redact(strip_query(url))}")

    @property
    def retryable(self) -> bool:
        """429 and 5xx are worth retrying."""
        return self.status == 429 or self.status >= 500


def strip_query(url: str) -> str:
    """A URL without query and fragment (signed CDN URLs carry credentials there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with default ports filled in."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()[:64]
    if _DECIMAL_RE.fullmatch(value):
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_ratelimit(value: str | None) -> tuple[int, float] | None:
    """``RateLimit: "name";r=<remaining>;t=<seconds to reset>`` (the IETF draft the Hub
    sends; huggingface_hub reads the same) as ``(remaining, seconds)``, or None."""
    if not value:
        return None
    match = _RATELIMIT_RE.search(value[:512])
    if not match:
        return None
    return int(match.group("r")), float(match.group("t"))


def ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context (certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``),
    built once per process and CA setting: loading the bundle costs ~40 ms."""
    return _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _ssl_context(_cert_file: str | None, _cert_dir: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context(trust_env=True)


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What :func:`make_client` gave its client: the engine's own socket code
    (:mod:`tui.download.rawfetch`) opens its connections with the same settings."""

    user_agent: str
    connect_timeout: float
    stall_timeout: float
    ssl_context: ssl.SSLContext


_client_settings: weakref.WeakKeyDictionary[httpx.AsyncClient, ClientSettings] = (
    weakref.WeakKeyDictionary()
)


def make_client(*, pool_size: int, stall_timeout: float) -> httpx.AsyncClient:
    """The shared client: HTTP/1.1, sized pool, read timeout = stall timeout, no total timeout.

    Everything is set through httpx's public constructor; nothing in httpx or httpcore is
    patched. Environment proxies (``HTTPS_PROXY``…) still apply: httpx mounts its own proxy
    transports for them.
    """
    settings = ClientSettings(
        user_agent=f"modeldeck/{__version__}",
        connect_timeout=min(30.0, max(stall_timeout, 5.0)),
        stall_timeout=stall_timeout,
        ssl_context=ssl_context(),
    )
    limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
    client = httpx.AsyncClient(
        http2=False,
        verify=settings.ssl_context,
        timeout=httpx.Timeout(connect=settings.connect_timeout, read=stall_timeout,
                              write=30.0, pool=None),
        limits=limits,
        headers={"User-Agent": settings.user_agent, "Accept-Encoding": "identity"},
        follow_redirects=False,
        trust_env=True,
    )
    _client_settings[client] = settings
    return client


def client_settings(client: httpx.AsyncClient) -> ClientSettings | None:
    """The settings :func:`make_client` built ``client`` with; None for any other client."""
    return _client_settings.get(client)


class Transport:
    """Opens streaming responses with per-host limits and token-safe redirects."""

    def __init__(self, client: httpx.AsyncClient, per_host: int) -> None:
        self.client = client
        self.per_host = per_host
        self._sems: dict[str, asyncio.Semaphore] = {}

    def _sem(self, url: str) -> asyncio.Semaphore:
        key = "{}://{}:{}".format(*origin(url))
        sem = self._sems.get(key)
        if sem is None:
            sem = self._sems[key] = asyncio.Semaphore(self.per_host)
        return sem

    @asynccontextmanager
    async def open(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        token: Callable[[], str | None] | None = None,
        auth_origin: str | None = None,
        follow_redirects: bool = True,
    ) -> AsyncIterator[httpx.Response]:
        """Yield the final response (status < 300 or 206), raising :class:`HttpStatusError`.

        ``token()`` is called per request and sent as ``Authorization`` only while the request
        URL has the same scheme/host/port as ``auth_origin``. With ``follow_redirects=False``
        a redirect is yielded as it is (its headers are the Hub's file metadata).
        """
        async with self._sem(url):
            current = url
            for _ in range(MAX_REDIRECTS + 1):
                hdrs = dict(headers or {})
                if token is not None and auth_origin and origin(current) == origin(auth_origin):
                    value = token()
                    if value:
                        hdrs["Authorization"] = f"Bearer {value}"
                request = self.client.build_request(method, current, headers=hdrs)
                response = await self.client.send(request, stream=True)
                if follow_redirects and response.is_redirect and "location" in response.headers:
                    await response.aclose()
                    current = urljoin(current, response.headers["location"])
                    log.debug("redirect to %s", strip_query(current))
                    continue
                try:
                    if response.status_code >= 400:
                        raise HttpStatusError(response.status_code, current, response.headers)
                    yield response
                finally:
                    await response.aclose()
                return
            raise HttpStatusError(310, current, httpx.Headers())
