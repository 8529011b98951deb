"""Where a file's bytes are: the resolve step, done as ``huggingface_hub`` does it.

The Hub answers ``HEAD /{repo}/resolve/{commit}/{path}`` of an LFS file with a ``302`` whose
headers are the file's identity (``X-Repo-Commit``, ``X-Linked-Etag`` = the sha256,
``X-Linked-Size``) and whose ``Location`` is a signed, expiring URL on a CDN; none of that is
on the CDN's own answer. :func:`resolve` therefore follows redirects one hop at a time, without
the token off the Hub's origin, and stops at the hop that carries that metadata (or at a 2xx,
or at a hop that refuses ``HEAD``, as a presigned-for-GET URL does). The result is reused for
every piece of the file until it nears its expiry or the CDN refuses it
(:class:`ResolveCache`), so a file costs a handful of resolver calls, not one per piece.

A signed URL is a credential: it is kept in memory only, never stored or shown with its query.
"""

from __future__ import annotations

import calendar
import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx

from tui.download.errors import DownloadError
from tui.download.http import MAX_REDIRECTS, HttpStatusError, Transport, strip_query
from tui.download.validate import parse_content_range, parse_length

HEAD_REFUSED = (401, 403, 405, 501)  # a hop that will not answer HEAD: probe with a GET
MAX_TTL = 7 * 86_400.0  # presigned URLs live at most a week (S3's limit)
REFRESH_MARGIN = 60.0  # re-resolve this long before a URL expires (at most a tenth of its life)
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGITS = re.compile(r"[0-9]{1,12}")


@dataclass(slots=True)
class ProbeResult:
    """What a probe (``HEAD``, or a ``GET`` of byte 0) of the bytes' URL told us."""

    size: int | None
    etag: str | None
    last_modified: str | None
    ranges: bool
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class Resolved:
    """A resolved file: ``url`` serves its bytes (``source`` is the URL that was resolved).

    ``commit``/``sha256``/``size`` are the Hub's metadata when it sent them; ``probe`` the
    2xx answer to ``HEAD`` at ``url`` when the chain ended there; ``head_refused`` when
    ``url`` would not answer ``HEAD``. ``expires`` is on the resolver's monotonic clock.
    """

    url: str
    source: str
    commit: str | None = None
    sha256: str | None = None
    size: int | None = None
    probe: ProbeResult | None = None
    head_refused: bool = False
    ttl: float | None = None
    expires: float | None = None

    @property
    def redirected(self) -> bool:
        """The bytes are elsewhere than the resolved URL (a CDN)."""
        return self.url != self.source

    @property
    def shown(self) -> str:
        """Where the bytes are, fit for a log line (no query: it may be a signature)."""
        return strip_query(self.url)


def probe_from(status: int, headers: httpx.Headers) -> ProbeResult:
    """A :class:`ProbeResult` from a 2xx answer's headers (``206`` to ``bytes=0-0``: the size
    is the ``Content-Range`` total)."""
    size = None
    ranges = "bytes" in headers.get("accept-ranges", "").lower()
    if status == 206:
        parsed = parse_content_range(headers.get("content-range"))
        if parsed is not None and parsed[0] == 0:
            size, ranges = parsed[2], True
    elif headers.get("content-encoding", "identity").lower() in ("identity", ""):
        size = parse_length(headers.get("content-length"))
    return ProbeResult(size=size, etag=headers.get("etag"),
                       last_modified=headers.get("last-modified"), ranges=ranges)


def hub_metadata(headers: httpx.Headers) -> tuple[str | None, str | None, int | None] | None:
    """``(commit, sha256, size)`` from a Hub answer's ``X-Repo-Commit``, ``X-Linked-Etag``
    and ``X-Linked-Size`` (each validated; a malformed one is unknown), or None if it has
    none of them."""
    names = ("x-repo-commit", "x-linked-etag", "x-linked-size")
    if not any(n in headers for n in names):
        return None
    commit = headers.get("x-repo-commit", "").strip().lower()
    etag = headers.get("x-linked-etag", "").strip()
    etag = (etag[2:] if etag.startswith("W/") else etag).strip('"').lower()
    return (commit if _HEX40.fullmatch(commit) else None,
            etag if _HEX64.fullmatch(etag) else None,
            parse_length(headers.get("x-linked-size")))


def url_ttl(url: str, date_header: str | None = None, wall: Callable[[], float] = time.time
            ) -> float | None:
    """Seconds a signed URL stays valid from now, or None if it does not say.

    S3-style ``X-Amz-Date`` + ``X-Amz-Expires`` give its life (less the age the answer's
    ``Date`` shows); CloudFront/GCS-style ``Expires=<epoch>`` is measured against the answer's
    ``Date`` (the server's clock, so a skewed local clock does not matter). Bounded to a week.
    """
    query = {k.lower(): v for k, v in parse_qsl(urlsplit(url).query[:8192])}
    server_now = _http_date(date_header)
    ttl: float | None = None
    expires_in, signed_at = query.get("x-amz-expires", ""), query.get("x-amz-date", "")
    if _DIGITS.fullmatch(expires_in):
        ttl = float(expires_in)
        signed = _amz_date(signed_at)
        if signed is not None and server_now is not None:
            ttl -= max(0.0, server_now - signed)
    elif _DIGITS.fullmatch(query.get("expires", "")):
        now = server_now if server_now is not None else wall()
        ttl = float(query["expires"]) - now
    if ttl is None:
        return None
    return max(0.0, min(ttl, MAX_TTL))


def _amz_date(value: str) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(value, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return None


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value[:64]).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


async def resolve(transport: Transport, url: str, *, token: Callable[[], str | None] | None,
                  auth_origin: str | None, clock: Callable[[], float] = time.monotonic
                  ) -> Resolved:
    """Follow ``url``'s redirects with ``HEAD``, one hop at a time (the token only to
    ``auth_origin``), up to the answer that says where the bytes are.

    Stops at a redirect carrying the Hub's metadata (its ``Location`` is the bytes' URL), at
    a 2xx (the bytes are here; its headers are the probe), or at a hop other than the first
    that refuses ``HEAD`` (401/403/405/501: probe it with a ranged GET). Raises
    :class:`HttpStatusError` for any other error answer.
    """
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        try:
            async with transport.open(current, method="HEAD", token=token,
                                      auth_origin=auth_origin, follow_redirects=False) as resp:
                headers = resp.headers
                status = resp.status_code
                now = clock()
        except HttpStatusError as exc:
            if exc.status in HEAD_REFUSED and current != url:
                return Resolved(url=current, source=url, head_refused=True)
            if exc.status in (405, 501):  # no HEAD at all here: the GET path decides
                return Resolved(url=current, source=url, head_refused=True)
            raise
        meta = hub_metadata(headers)
        if resp.is_redirect and "location" in headers:
            target = urljoin(current, headers["location"])
            if urlsplit(target).scheme not in ("http", "https"):
                raise DownloadError(f"{strip_query(url)} redirects to a non-HTTP URL",
                                    hint="check the URL or HF_ENDPOINT")
            if meta is None:
                current = target  # a mirror or a renamed repo: keep following
                continue
            commit, sha256, size = meta
            ttl = url_ttl(target, headers.get("date"))
            return Resolved(url=target, source=url, commit=commit, sha256=sha256, size=size,
                            ttl=ttl, expires=None if ttl is None else now + ttl)
        commit = meta[0] if meta else None
        ttl = url_ttl(current, headers.get("date")) if current != url else None
        return Resolved(url=current, source=url, commit=commit, probe=probe_from(status, headers),
                        ttl=ttl, expires=None if ttl is None else now + ttl)
    raise HttpStatusError(310, current, httpx.Headers())


class ResolveCache:
    """Resolved URLs by the URL resolved, until they near expiry or are refused.

    ``clock`` is the monotonic clock :attr:`Resolved.expires` is on.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._entries: dict[str, Resolved] = {}

    def fresh(self, url: str, stale: Resolved | None = None) -> Resolved | None:
        """The entry for ``url`` unless it is ``stale`` (refused) or expires soon."""
        entry = self._entries.get(url)
        if entry is None or (stale is not None and entry.url == stale.url):
            return None
        if entry.expires is not None and self.clock() >= entry.expires - self.margin(entry):
            return None
        return entry

    def put(self, entry: Resolved) -> None:
        """Remember a redirected ``entry`` (and forget expired ones). Its probe is not kept:
        the next transfer asks the CDN afresh. An answer at the URL itself is not kept:
        resolving it again is the probe."""
        if not entry.redirected:
            return
        entry = dataclasses.replace(entry, probe=None)
        now = self.clock()
        for key in [k for k, e in self._entries.items()
                    if e.expires is not None and e.expires <= now]:
            del self._entries[key]
        self._entries[entry.source] = entry

    def drop(self, url: str) -> None:
        """Forget ``url``'s entry."""
        self._entries.pop(url, None)

    @staticmethod
    def margin(entry: Resolved) -> float:
        """How long before its expiry an entry is resolved again."""
        return min(REFRESH_MARGIN, (entry.ttl or 0.0) / 10)


__all__ = ["ProbeResult", "ResolveCache", "Resolved", "hub_metadata", "probe_from", "resolve",
           "url_ttl"]
