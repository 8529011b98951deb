"""Segmented transfer of one file into a pre-sized ``<dest>.part``.

Large files are split into pieces fetched over ``connections`` connections at once, each
written in place with ``os.pwrite``; a :class:`~tui.download.verify.PrefixHasher` hashes the
contiguous prefix while bytes arrive. Without proxies a piece's request and body go through a
worker thread on a plain socket (:mod:`tui.download.rawfetch`: ``recv_into`` a preallocated
buffer, ``pwrite`` from it, no GIL held for either); otherwise httpx streams the body on the
event loop and a writer thread does the ``pwrite``. Both paths share the response checks.
The bytes' URL comes from the resolve step (:mod:`tui.download.resolve`): a Hub file's
signed CDN URL serves every piece until it nears its expiry or the CDN refuses it (then the
file is resolved again, once per refusal without progress). A Hub file pinned to a commit
whose sha256 the Hub confirms is immutable: its partial resumes whatever the CDN's ETag
(``If-Range`` is sent only with the CDN's strong ETag; the final sha256 is the safety net).
Anything else resumes under ``Range`` + ``If-Range: <strong ETag>``; a ``200`` answer (the file
changed, or the server ignores ranges) restarts from zero. Stalls (no byte for
``stall_timeout``), dropped connections, 429 and 5xx are retried per piece with backoff (or
the wait the server asks for) until ``give_up_after`` passes without progress.

Every answer is checked by :func:`tui.download.validate.check_response` before a byte of it is
written, and every body is counted against what was asked: a piece is counted done only with
exactly its bytes. A server that keeps answering wrong gets one plain GET of the whole file
(checked the same way), then the job fails with one line; the partial keeps its checked bytes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tui import formatting as fmt
from tui.download import rawfetch
from tui.download.aio import in_thread
from tui.download.errors import BadServerError, DiskFullError, DownloadError, failure_reason
from tui.download.http import HttpStatusError, RetryPolicy, Transport, origin, strip_query
from tui.download.jobs import JobFile
from tui.download.preflight import disk_full_error, is_disk_full
from tui.download.ratelimit import TokenBucket
from tui.download.resolve import ProbeResult, Resolved, probe_from, resolve
from tui.download.validate import (
    Accepted,
    Ask,
    BadResponse,
    RangeIgnored,
    body_too_long,
    check_response,
    parse_unsatisfied_range,
)
from tui.download.verify import PrefixHasher

log = logging.getLogger(__name__)

MIN_SEGMENT = 4 << 20  # smallest piece worth its own request
MAX_PIECE = 64 << 20
PIECES_PER_CONNECTION = 4
MAX_RESTARTS = 3
RECV_BUFFER = 256 << 10  # threaded body path: bytes per pwrite (fits in L2)
PROGRESS_INTERVAL = 0.05  # threaded body path: seconds between progress reports
# Receiving threads run this much nicer than the rest of the process, so that when CPU-bound
# the (single, sequential) hash thread keeps pace instead of being left a long tail to hash
# after the last byte arrived; also keeps the UI thread responsive during a download.
RECV_NICE = 5
# Rejected answers (wrong range, length, encoding…) from one file's server before one plain
# GET of the whole file is tried instead; after that, as many more fail the job.
REJECTS_BEFORE_PLAIN = 3
# A CDN's answers that mean "this signed URL no longer works": resolve the file again.
CDN_REFUSED = (401, 403, 404, 410)

# Seams for tests (ENOSPC injection).
pwrite = os.pwrite


def preallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes (``posix_fallocate`` where supported, else ``ftruncate``)."""
    os.ftruncate(fd, size)
    if size and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if is_disk_full(exc):
                raise
            # EOPNOTSUPP / EINVAL on some file systems: the truncate is enough.


def is_strong(etag: str | None) -> bool:
    """A quoted ETag that is not weak (``W/``) — usable for ``If-Range``."""
    return bool(etag) and not etag.startswith("W/") and etag.startswith('"')


def plan_pieces(size: int, connections: int) -> list[list[int]]:
    """Split ``size`` bytes into ``[start, end, 0]`` pieces for ``connections`` workers.

    About ``PIECES_PER_CONNECTION`` pieces per connection, each between ``MIN_SEGMENT`` and
    ``MAX_PIECE`` bytes; one piece when ``connections`` is 1 or the file is small.
    """
    if size <= 0:
        return []
    if connections <= 1 or size < 2 * MIN_SEGMENT:
        return [[0, size, 0]]
    piece = -(-size // (connections * PIECES_PER_CONNECTION))
    piece = max(MIN_SEGMENT, min(MAX_PIECE, piece))
    piece = -(-piece // 65536) * 65536
    return [[start, min(size, start + piece), 0] for start in range(0, size, piece)]


class RestartFromZero(Exception):
    """The remote changed or ignored a range: throw the partial away."""

    def __init__(self, reason: str, *, single_stream: bool, etag: str | None) -> None:
        super().__init__(reason)
        self.single_stream = single_stream
        self.etag = etag


@dataclass(slots=True)
class TransferContext:
    """What a file transfer needs from its job and service."""

    transport: Transport
    policy: RetryPolicy
    buckets: list[TokenBucket]
    token: Callable[[], str | None] | None = None
    auth_origin: str | None = None
    on_bytes: Callable[[int], None] = lambda n: None
    on_state: Callable[[str], None] = lambda s: None
    on_retry: Callable[[int, str], None] = lambda attempt, reason: None  # next try, last error
    map_error: Callable[[HttpStatusError], Exception] | None = None
    # (url, stale) -> where its bytes are; ``stale`` is an answer the CDN refused. The
    # service caches answers and waits out rate limits; without it each call resolves.
    resolve: Callable[[str, Resolved | None], Awaitable[Resolved]] | None = None
    # Sleep ``seconds`` before a retry; ``why`` (e.g. "the Hub's rate limit") when the server
    # asked for the wait, shown as the job's "waiting" state. Default: ``policy.sleep``.
    wait: Callable[[float, str | None], Awaitable[None]] | None = None


class _Refreshed(Exception):
    """The piece's URL was refused and the file resolved again: ask again at once."""


class FileTransfer:
    """Downloads ``jf.url`` into ``part``; :meth:`run` returns (sha256, blob sha1, size).

    ``jf.segments`` / ``jf.done_bytes`` / ``jf.etag`` / ``jf.size`` are updated in place so the
    job runner can persist them at any moment.
    """

    def __init__(self, ctx: TransferContext, jf: JobFile, part: Path, connections: int) -> None:
        self.ctx = ctx
        self.jf = jf
        self.part = part
        self.fd = -1
        self.connections = max(1, connections)
        self.single_stream = False
        self.hasher: PrefixHasher | None = None
        self.writer: _Writer
        self.resumed_bytes = 0
        client = getattr(ctx.transport, "client", None)
        # Piece bodies are received by worker threads on plain sockets when possible.
        self.raw = rawfetch.connector_for(client) if isinstance(client, httpx.AsyncClient) \
            else None
        self._count_lock = threading.Lock()
        self.rejected = 0  # answers refused since the start (or since the plain GET)
        self.plain_pending = False  # the next request is the one plain GET of the whole file
        self.plain_used = False
        self.size_known = False  # the size was known before a byte was fetched
        self.resolved: Resolved | None = None  # where the bytes are now
        self.immutable = False  # a Hub file at a pinned commit with the sha256 it must have
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at: int | None = None  # done_bytes at the last re-resolve

    # -- public ---------------------------------------------------------------------------

    async def run(self) -> tuple[str, str | None, int]:
        """Transfer (resuming when safe); returns sha256, git blob sha1 and size of the part.

        The ``.part`` is created only after the server answered the probe, and is fsynced.
        """
        probe = await self._probe()
        self._adopt_probe(probe)
        self.size_known = self.jf.size is not None
        self.fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        self.writer = _Writer(self)
        try:
            sha256, sha1 = await self._run()
            size = os.fstat(self.fd).st_size
            try:
                await in_thread(os.fsync, self.fd)
            except OSError as exc:
                # What reached the disk is unknown now: the partial proves nothing.
                self.reset_to_zero()
                if is_disk_full(exc):
                    raise disk_full_error(self.part, size, cause=exc) from None
                raise DownloadError(f"error writing {self.part}: {exc.strerror or exc}",
                                    hint="check the disk, then retry") from None
            return sha256, sha1, size
        finally:
            self.writer.close()  # joins: no write can hit the fd after it is closed
            self._stop_hasher()
            os.close(self.fd)
            self.fd = -1

    async def _run(self) -> tuple[str, str | None]:
        restarts = 0
        while True:
            self._start_hasher()
            try:
                await self._transfer()
                break
            except RestartFromZero as exc:
                restarts += 1
                log.info("restart from zero for %s: %s", self.jf.path, exc)
                if restarts > MAX_RESTARTS:
                    raise DownloadError(
                        f"{self.jf.path}: the server keeps changing the file ({exc})"
                    ) from None
                self.single_stream = self.single_stream or exc.single_stream
                if exc.etag:
                    self.jf.etag = exc.etag
                await self.writer.drain(raise_error=False)
                self._reset()
            except DiskFullError as exc:
                # Other pieces may have landed bytes since: say what is still needed now.
                self._stop_hasher()
                await self.writer.drain(raise_error=False)
                raise self._disk_full(exc) from None
            except _KeepsLying:
                # One plain GET of the whole file next; the partial stays as it is until
                # that answer has passed the checks.
                log.info("%s: falling back to one plain GET", self.jf.path)
                self.plain_pending = self.plain_used = True
                self.rejected = 0
                await self.writer.drain(raise_error=False)
                self._stop_hasher()
            except BaseException:
                self._stop_hasher()
                raise
        assert self.hasher is not None
        if self.jf.size is None:
            self.jf.size = self.jf.done_bytes
        try:
            return await in_thread(self.hasher.finish)
        finally:
            self.hasher = None

    def reset_to_zero(self) -> None:
        """Forget segments (the partial is truncated on the next :meth:`run`)."""
        self.jf.segments = None
        self.jf.done_bytes = 0

    # -- planning ---------------------------------------------------------------------------

    async def _resolve(self, stale: Resolved | None = None) -> Resolved:
        ctx = self.ctx
        if ctx.resolve is not None:
            return await ctx.resolve(self.jf.url, stale)
        return await resolve(ctx.transport, self.jf.url, token=ctx.token,
                             auth_origin=ctx.auth_origin, clock=ctx.policy.clock)

    async def _probe(self) -> ProbeResult | None:
        """Resolve the file, then ask where its bytes are what they hold: ``HEAD``, or, where
        that is refused (a presigned URL), a ``GET`` of byte 0. None if it cannot tell now
        (the GET path decides). A CDN's refusal resolves the file once more, then fails with
        what the CDN said: it is never taken for "gated" (only the Hub's answers are)."""
        res = await self._resolve()
        self._adopt_resolved(res)
        for attempt in (1, 2):
            if res.probe is not None:
                return res.probe
            if res.head_refused and not res.redirected:
                return None  # the server has no HEAD: the GET path decides
            try:
                if not res.head_refused:
                    try:
                        return await self._head(res.url)
                    except HttpStatusError as exc:
                        if exc.status not in (401, 403, 405, 501):
                            raise
                return await self._first_byte(res.url)
            except HttpStatusError as exc:
                if exc.status in CDN_REFUSED and res.redirected:
                    if attempt == 2:
                        raise self._refused(exc) from None
                    log.info("%s: %s refused (HTTP %d); resolving again", self.jf.path,
                             res.shown, exc.status)
                    res = await self._resolve(stale=res)
                    self._adopt_resolved(res)
                    continue
                if exc.status in (401, 403, 404):
                    if self.ctx.map_error:
                        raise self.ctx.map_error(exc) from None
                    raise DownloadError(str(exc)) from None
                return None  # 429/5xx: the GET path retries
            except httpx.HTTPError:
                return None
        return None

    async def _head(self, url: str) -> ProbeResult:
        async with self.ctx.transport.open(
            url, method="HEAD", token=self.ctx.token, auth_origin=self.ctx.auth_origin,
        ) as resp:
            return probe_from(resp.status_code, resp.headers)

    async def _first_byte(self, url: str) -> ProbeResult:
        """A ``GET`` of byte 0 (its size is in ``Content-Range``); a ``200`` is not read."""
        async with self.ctx.transport.open(
            url, headers={"Range": "bytes=0-0"}, token=self.ctx.token,
            auth_origin=self.ctx.auth_origin,
        ) as resp:
            probe = probe_from(resp.status_code, resp.headers)
            if resp.status_code != 206:
                probe.ranges = False  # it ignored the range
            return probe

    def _adopt_resolved(self, res: Resolved) -> None:
        """Take a (new) answer of the resolve step; the Hub's metadata must agree with the
        listing the job was planned from."""
        jf = self.jf
        if res.sha256 and jf.sha256 and res.sha256 != jf.sha256.lower():
            raise DownloadError(
                f"{jf.path}: the Hub now gives sha256 {res.sha256[:12]}…, the listing "
                f"{jf.sha256[:12]}…", hint="pull again to plan from the current listing")
        if res.size is not None and jf.size is not None and jf.sha256 and res.size != jf.size:
            raise DownloadError(f"{jf.path}: the Hub now gives {res.size} bytes, the listing "
                                f"{jf.size}", hint="pull again to plan from the current listing")
        self.resolved = res
        self.immutable = bool(jf.sha256 and jf.commit_hash and res.sha256
                              and res.commit == jf.commit_hash.lower())

    def _refused(self, exc: HttpStatusError) -> DownloadError:
        host = urlsplit(exc.url).netloc
        return DownloadError(
            f"{self.jf.path}: the download server {host} refused it (HTTP {exc.status}) "
            "even after resolving the file again",
            hint="retry later with `modeldeck jobs retry`; the partial is kept",
        )

    def _adopt_probe(self, probe: ProbeResult | None) -> None:
        jf = self.jf
        res = self.resolved
        hub_size = res.size if res is not None else None
        if probe is not None and probe.size is not None and hub_size is not None \
                and probe.size != hub_size:
            raise DownloadError(f"{jf.path}: the download server reports {probe.size} bytes, "
                                f"the Hub {hub_size}")
        size = hub_size if hub_size is not None else (probe.size if probe else None)
        if size is not None:
            if jf.size is not None and jf.sha256 is not None and size != jf.size:
                raise DownloadError(
                    f"{jf.path}: server reports {size} bytes, the listing {jf.size}"
                )
            if jf.size != size:
                self.reset_to_zero()
            jf.size = size
        if probe is None:
            if not (self.immutable or is_strong(jf.etag)):
                self.reset_to_zero()
            if self.immutable:
                jf.etag = None  # no CDN validator known this time: no If-Range
            return
        if jf.segments and not self.immutable and not (is_strong(jf.etag)
                                                       and probe.etag == jf.etag):
            log.info("validator changed for %s: restarting from zero", jf.path)
            self.reset_to_zero()
        jf.etag = probe.etag
        jf.last_modified = probe.last_modified
        if not probe.ranges and not is_strong(probe.etag):
            self.single_stream = True

    def _plan(self) -> None:
        jf = self.jf
        part_size = os.fstat(self.fd).st_size
        if jf.segments and jf.size is not None and part_size == jf.size:
            jf.done_bytes = sum(s[2] for s in jf.segments)
            self.resumed_bytes = jf.done_bytes
            return
        size = jf.size
        if size is None:
            # Size unknown (no Content-Length): one open-ended stream. Its flushed prefix is
            # resumed (``Range: bytes=N-`` under If-Range) when the validator is strong.
            segs = jf.segments
            if (segs and len(segs) == 1 and segs[0][0] == 0 and segs[0][1] < 0
                    and 0 < segs[0][2] <= part_size and is_strong(jf.etag)):
                os.ftruncate(self.fd, segs[0][2])  # drop bytes written after the last flush
                jf.done_bytes = self.resumed_bytes = segs[0][2]
                return
            jf.done_bytes = 0
            os.ftruncate(self.fd, 0)
            jf.segments = [[0, -1, 0]]
            return
        jf.segments = None
        jf.done_bytes = 0
        try:
            preallocate(self.fd, size)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(self.part, size, cause=exc, reserving=True) from None
            raise
        jf.segments = plan_pieces(size, 1 if self.single_stream else self.connections)

    def _start_hasher(self) -> None:
        self._plan()
        self.hasher = self._new_hasher()
        for start, _end, done in self.jf.segments or []:
            self.hasher.mark(start, start + done)

    def _new_hasher(self) -> PrefixHasher:
        git_blob = self.jf.blob_sha1 is not None and self.jf.sha256 is None
        return PrefixHasher(self.fd, self.jf.size, git_blob=git_blob)

    def _stop_hasher(self) -> None:
        if self.hasher is not None:
            self.hasher.abort()
            self.hasher = None

    def _reset(self) -> None:
        self._stop_hasher()
        self.ctx.on_bytes(-self.jf.done_bytes)
        self.reset_to_zero()
        os.ftruncate(self.fd, 0)

    # -- transfer ---------------------------------------------------------------------------

    async def _transfer(self) -> None:
        """Fetch the missing pieces in file order over up to ``connections`` workers.

        Dispatching small pieces in order keeps the completed region close to a contiguous
        prefix, so the hasher keeps pace and the last wave of requests is short.
        """
        if self.plain_pending:
            # Adopted as the file's only piece once its answer has passed the checks.
            await self._segment([0, -1 if self.jf.size is None else self.jf.size, 0])
            return
        todo = [s for s in self.jf.segments or [] if s[1] < 0 or s[2] < s[1] - s[0]]
        pending = iter(todo)
        if not todo:
            return
        if len(todo) == 1:
            await self._segment(todo[0])
            return

        async def worker() -> None:
            for seg in pending:
                await self._segment(seg)

        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(self.connections, len(todo))):
                    tg.create_task(worker())
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    async def _segment(self, seg: list[int]) -> None:
        failures = 0
        writer = self.writer
        policy = self.ctx.policy
        since = policy.clock()  # the last progress of this piece
        while True:
            await writer.drain()
            if not (seg[1] < 0 or seg[2] < seg[1] - seg[0]):
                return
            before = seg[2]
            why: str | None = None  # set when the server asked for the wait
            try:
                await self._fetch(seg)
                await writer.drain()
                if seg[1] >= 0 and seg[2] < seg[1] - seg[0]:
                    raise httpx.RemoteProtocolError("response ended early")
                return
            except _Refreshed:
                continue
            except (RestartFromZero, DownloadError, asyncio.CancelledError):
                raise
            except HttpStatusError as exc:
                if not exc.retryable:
                    if self.ctx.map_error:
                        raise self.ctx.map_error(exc) from None
                    raise DownloadError(str(exc)) from None
                retry_after = exc.retry_after
                reason = str(exc)
                why = wait_reason(exc, self.ctx.auth_origin)
            except BadResponse as exc:
                self._rejected(exc)
                retry_after = None
                reason = exc.reason
            except (httpx.HTTPError, OSError) as exc:
                if is_disk_full(exc):
                    raise self._disk_full(exc) from None
                if (bad_tls := untrusted(exc, self.jf.url)) is not None:
                    raise bad_tls from None
                if (
                    isinstance(exc, OSError)
                    and not isinstance(exc, httpx.HTTPError)
                    and exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ECONNREFUSED)
                ):
                    raise
                retry_after = None
                reason = failure_reason(exc)
                if isinstance(exc, httpx.ReadTimeout):
                    self.ctx.on_state("stalled")
            await writer.drain()
            if seg[2] > before:
                failures, since = 1, policy.clock()
            else:
                failures += 1
            delay = policy.delay(failures, retry_after)
            if policy.exhausted(failures, since, delay):
                raise give_up_error(self.jf.path, policy, failures, since, delay, reason,
                                    asked=retry_after is not None)
            self.ctx.on_retry(failures + 1, reason)
            log.debug("segment %s of %s: %s; retry in %.2fs", seg[0], self.jf.path, reason, delay)
            await self._wait(delay, why)

    async def _wait(self, seconds: float, why: str | None) -> None:
        if self.ctx.wait is not None:
            await self.ctx.wait(seconds, why)
        else:
            await self.ctx.policy.sleep(seconds)

    def _rejected(self, exc: BadResponse) -> None:
        """Count a refused answer; after ``REJECTS_BEFORE_PLAIN`` fall back to one plain GET
        (:class:`_KeepsLying`), and fail the job if that one, or later ones, lie too."""
        self.rejected += 1
        log.info("%s: the server answered %s; not written", self.jf.path, exc.reason)
        if self.plain_pending or (self.plain_used and self.rejected >= REJECTS_BEFORE_PLAIN):
            raise BadServerError(
                f"server answered {exc.reason} of {self.jf.path}; not written",
                hint="the partial keeps only checked bytes; retry later or use another source",
            )
        if self.rejected >= REJECTS_BEFORE_PLAIN:
            raise _KeepsLying(exc.reason)

    def _disk_full(self, cause: BaseException | None = None) -> DiskFullError:
        size = self.jf.size
        return disk_full_error(self.part, None if size is None else size - self.jf.done_bytes,
                               cause=cause)

    def _write_error(self, exc: OSError) -> DownloadError:
        """A failed ``pwrite``: disk full, or another write error (one line; partial kept)."""
        if is_disk_full(exc):
            return self._disk_full(exc)
        return DownloadError(f"error writing {self.part}: {exc.strerror or exc}",
                             hint="check the disk, then retry; the partial is kept")

    async def _fetch(self, seg: list[int]) -> None:
        start, end, done = seg
        pos = start + done
        headers: dict[str, str] = {}
        whole = len(self.jf.segments or []) == 1 and start == 0
        whole_ok = whole and (end < 0 or self.single_stream)
        asked: Ask | None = None
        if not (self.plain_pending or (whole_ok and done == 0)):
            asked = (pos, None if end < 0 else end - 1)
            headers["Range"] = f"bytes={pos}-" if end < 0 else f"bytes={pos}-{end - 1}"
            if is_strong(self.jf.etag):
                headers["If-Range"] = str(self.jf.etag)
        res = await self._current()
        try:
            if self.raw is not None:
                await self._fetch_raw(self.raw, res.url, seg, headers, asked, whole_ok)
            else:
                async with self.ctx.transport.open(
                    res.url, headers=headers, token=self.ctx.token,
                    auth_origin=self.ctx.auth_origin,
                ) as resp:
                    await self._handle(resp, seg, asked, whole_ok)
        except HttpStatusError as exc:
            if exc.status in CDN_REFUSED and res.redirected:
                await self._refresh(res, exc)  # raises _Refreshed
            if exc.status != 416:
                raise
            complete = parse_unsatisfied_range(exc.headers.get("content-range"))
            if asked is not None and end < 0 and self.jf.size is None and complete == pos:
                seg[1] = pos  # an open-ended range that was already complete
                self.jf.size = pos
                return
            check_response(asked, self.jf.size, 416, exc.headers)  # raises BadResponse

    async def _current(self) -> Resolved:
        """Where the bytes are now: the resolved URL (resolved again near its expiry)."""
        res = self.resolved
        if res is None:
            res = await self._resolve()
            self._adopt_resolved(res)
            return res
        if not res.redirected or self.ctx.resolve is None:
            return res
        async with self._refresh_lock:
            now = await self._resolve(None)  # the cached answer while it is fresh
            if self.resolved is None or now.url != self.resolved.url:
                log.info("%s: resolving again before the link expires", self.jf.path)
                self._adopt_resolved(now)
            return now

    async def _refresh(self, res: Resolved, exc: HttpStatusError) -> None:
        """The CDN refused ``res``: resolve the file again (once per refusal without progress
        since the last time; pieces refused together share one), then :class:`_Refreshed`."""
        async with self._refresh_lock:
            if self.resolved is not None and self.resolved.url == res.url:
                if self._refreshed_at is not None and self.jf.done_bytes <= self._refreshed_at:
                    raise self._refused(exc)
                log.info("%s: %s refused (HTTP %d); resolving again", self.jf.path, res.shown,
                         exc.status)
                self._refreshed_at = self.jf.done_bytes
                fresh = await self._resolve(stale=res)
                self._adopt_resolved(fresh)
        raise _Refreshed()

    async def _fetch_raw(self, raw: rawfetch.Connector, url: str, seg: list[int],
                         headers: dict[str, str], asked: Ask | None, whole_ok: bool) -> None:
        """:meth:`_fetch` with the request made (and the body received) in a worker thread."""
        ctx = self.ctx
        token = ctx.token() if ctx.token is not None and ctx.auth_origin else None
        handle = rawfetch.Handle()
        sem = ctx.transport._sem(url)
        async with sem:
            fut = rawfetch.start_thread(raw.open, handle, url, headers, token, ctx.auth_origin)
            resp = await _await_thread(fut, handle)
            try:
                if resp.chunked:
                    self.raw = None  # rare: let httpx decode chunked bodies from now on
                    raise httpx.RemoteProtocolError("chunked body: retrying through httpx")
                await self._handle(resp, seg, asked, whole_ok)
            finally:
                raw.release(resp)  # kept alive for the next piece if its body was read whole

    async def _handle(self, resp: httpx.Response | rawfetch.RawResponse, seg: list[int],
                      asked: Ask | None, whole_ok: bool) -> None:
        """Check the answer (nothing is written unless it maps exactly onto what was asked),
        then receive its body into ``seg``."""
        try:
            acc = check_response(asked, self.jf.size, resp.status_code, resp.headers,
                                 whole_ok=whole_ok)
        except RangeIgnored:
            etag = resp.headers.get("etag")
            if self.immutable and asked is not None and is_strong(self.jf.etag):
                # Same bytes whatever the CDN's validator says: ask again without If-Range.
                self.jf.etag = None
                raise httpx.RemoteProtocolError("If-Range not honoured") from None
            changed = etag != self.jf.etag
            raise RestartFromZero(
                "file changed on the server" if changed else "server ignored Range",
                single_stream=not changed, etag=etag,
            ) from None
        if acc.full:
            await self._adopt_full_body(seg, resp.headers.get("etag"))
        self.ctx.on_state("downloading")
        await self._consume(resp, seg, acc)

    async def _adopt_full_body(self, seg: list[int], etag: str | None) -> None:
        """A ``200`` with the whole file: it becomes the file's only piece, from offset 0
        (the progress it replaces is forgotten, the bytes are overwritten as they arrive)."""
        await self.writer.drain()
        jf = self.jf
        fresh = jf.segments is not None and len(jf.segments) == 1 and jf.segments[0] is seg \
            and seg[0] == 0 and seg[2] == 0 and jf.done_bytes == 0
        if fresh and not self.plain_pending:
            return
        self.ctx.on_bytes(-jf.done_bytes)
        with self._count_lock:
            seg[:] = [0, -1 if jf.size is None else jf.size, 0]
            jf.segments = [seg]
            jf.done_bytes = 0
        self.single_stream = True
        self.plain_pending = False
        if etag:
            jf.etag = etag
        if self.hasher is not None:
            self.hasher.abort()
        self.hasher = self._new_hasher()

    async def _consume(self, resp: httpx.Response | rawfetch.RawResponse, seg: list[int],
                       acc: Accepted) -> None:
        """Write the body at ``acc.start``; never past ``acc.end``. A body longer than that is
        refused (:func:`body_too_long`); a shorter one leaves the piece incomplete."""
        if isinstance(resp, rawfetch.RawResponse):
            received = await self._consume_raw(resp, seg, acc)
        else:
            received = await self._consume_httpx(resp, seg, acc)
        if acc.length is not None and received < acc.length:
            raise httpx.RemoteProtocolError("response ended early")

    async def _consume_httpx(self, resp: httpx.Response, seg: list[int], acc: Accepted) -> int:
        buckets = [b for b in self.ctx.buckets if b.rate > 0]
        on_bytes = self.ctx.on_bytes
        writer = self.writer
        pos = acc.start
        length = acc.length
        # Without Content-Length the body's end is only known at its last chunk: its bytes
        # are counted once it has ended within the asked range, never before.
        defer = length is not None and not acc.framed
        received = 0
        try:
            async for chunk in resp.aiter_raw():
                n = len(chunk)
                if length is not None and received + n > length:
                    raise body_too_long(acc)  # the chunk is not written
                for bucket in buckets:
                    await bucket.consume(n)
                if writer.submit(None if defer else seg, pos, chunk):
                    await writer.wait_below(_Writer.HIGH // 2)
                pos += n
                received += n
                if not defer:
                    on_bytes(n)
                # At the range end keep iterating: the stream then ends cleanly and the
                # connection goes back to the pool instead of being closed.
        except httpx.HTTPError:
            if defer:
                await self._commit_deferred(seg, acc.start, received)
            raise
        if defer:
            await self._commit_deferred(seg, acc.start, received)
        return received

    async def _commit_deferred(self, seg: list[int], pos: int, n: int) -> None:
        """Count ``n`` bytes at ``pos`` written (uncounted) by the writer thread."""
        await self.writer.drain()
        if n:
            self._count(seg, pos, n)
            self.ctx.on_bytes(n)

    async def _consume_raw(self, resp: rawfetch.RawResponse, seg: list[int], acc: Accepted
                           ) -> int:
        """Receive the body in a thread (``recv_into`` → ``pwrite``, both without the GIL);
        progress is reported from here every ``PROGRESS_INTERVAL``. Returns the bytes
        received."""
        await self.writer.drain()  # nothing of this piece may still be queued
        progress = [0]
        fut = rawfetch.start_thread(self._receive, resp, seg, acc, progress)
        reported = 0
        try:
            while True:
                done, _ = await asyncio.wait((fut,), timeout=PROGRESS_INTERVAL)
                n = progress[0]
                if n != reported:
                    self.ctx.on_bytes(n - reported)
                    reported = n
                if done:
                    break
        except asyncio.CancelledError:
            resp.handle.abort()
            await _settle(fut)
            raise
        finally:
            n = progress[0]
            if n != reported:
                self.ctx.on_bytes(n - reported)
        return fut.result()

    def _receive(self, resp: rawfetch.RawResponse, seg: list[int], acc: Accepted,
                 progress: list[int]) -> int:
        """Worker thread: body bytes → ``pwrite`` from ``acc.start`` → counters, hasher,
        progress. Never writes past ``acc.end``; returns the bytes received."""
        _lower_priority(RECV_NICE)
        handle = resp.handle
        sock = resp.sock
        buckets = [b for b in self.ctx.buckets if b.rate > 0]
        pos = acc.start
        want = acc.length  # None: until EOF
        # Without Content-Length the end is EOF: count the bytes only once the body ended
        # within the asked range (see _consume_httpx).
        defer = want is not None and not acc.framed
        head = resp.head
        if want is not None and len(head) > want:
            raise body_too_long(acc)  # more came with the head than was asked: none written
        if head:  # body bytes read along with the head count against the cap too
            for bucket in buckets:
                bucket.consume_blocking(len(head), lambda: handle.aborted)
        buf = bytearray(RECV_BUFFER)
        view = memoryview(buf)
        fill = 0
        received = 0
        eof = False
        error: BaseException | None = None
        clock = time.monotonic
        last = clock()
        try:
            if len(head) <= len(buf):
                view[:len(head)] = head
                fill = len(head)
            else:  # a head larger than the buffer (not with RECV_BUFFER > MAX_HEADER_BYTES)
                self._write(seg, pos, head, progress, defer)
                pos += len(head)
                received += len(head)
                if want is not None:
                    want -= len(head)
            while True:
                # Fill the buffer (up to what is wanted), then write it in one go; on a slow
                # link write at least every PROGRESS_INTERVAL so progress (and resume points)
                # advance.
                cap = len(buf) if want is None else min(len(buf), want)
                while fill < cap and not eof:
                    step = cap - fill
                    if buckets:
                        step = min(step, int(min(b.capacity for b in buckets)))
                    try:
                        n = sock.recv_into(view[fill:fill + step])
                    except TimeoutError:
                        error = httpx.ReadTimeout("no data within the stall timeout")
                        break
                    except OSError as exc:
                        error = httpx.ReadError(str(exc) or type(exc).__name__)
                        break
                    if n == 0:
                        eof = True
                        break
                    for bucket in buckets:
                        bucket.consume_blocking(n, lambda: handle.aborted)
                    fill += n
                    if fill < cap and clock() - last >= PROGRESS_INTERVAL:
                        break
                if fill:  # received bytes are kept even when the connection then failed
                    self._write(seg, pos, view[:fill], progress, defer)
                    pos += fill
                    received += fill
                    if want is not None:
                        want -= fill
                    fill = 0
                    last = clock()
                if handle.aborted:
                    raise rawfetch.Aborted()
                if error is not None:
                    raise error
                if want == 0:
                    if defer and not eof:
                        eof = self._at_eof(sock, acc)
                    resp.body_done = acc.framed and not eof
                    break
                if eof:
                    break
        except (rawfetch.Aborted, BadResponse):
            raise
        except BaseException:
            if defer and received:
                self._count(seg, acc.start, received, progress)
            raise
        if defer and received:
            self._count(seg, acc.start, received, progress)
        return received

    @staticmethod
    def _at_eof(sock: object, acc: Accepted) -> bool:
        """After all asked bytes of a body without Content-Length: it must end here."""
        try:
            extra = sock.recv(1)  # type: ignore[attr-defined]
        except TimeoutError:
            raise httpx.ReadTimeout("the body did not end after the asked bytes") from None
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from None
        if extra:
            raise body_too_long(acc)
        return True

    def _write(self, seg: list[int], pos: int, data: memoryview | bytes, progress: list[int],
               defer: bool) -> None:
        """Worker thread: ``pwrite`` all of ``data`` at ``pos``; count what landed (unless
        ``defer``); a short or failed write is a write error (disk full)."""
        try:
            written = pwrite(self.fd, data, pos)
        except OSError as exc:
            raise self._write_error(exc) from None
        if written and not defer:
            self._count(seg, pos, written, progress)
        if written != len(data):
            raise self._disk_full()

    def _count(self, seg: list[int], pos: int, n: int, progress: list[int] | None = None
               ) -> None:
        """``n`` bytes at ``pos`` are in the file: count and mark them (any thread)."""
        with self._count_lock:
            if seg[1] >= 0 and seg[2] + n > seg[1] - seg[0]:
                raise AssertionError(f"counting past the end of a piece of {self.jf.path}")
            seg[2] += n
            self.jf.done_bytes += n
            hasher = self.hasher
        if hasher is not None:
            hasher.mark(pos, pos + n)
        if progress is not None:
            progress[0] += n


class _Writer:
    """A thread that ``pwrite``s received chunks, then counts them (``seg[2]``,
    ``jf.done_bytes``) and marks them for the hasher, in that order.

    Counters only ever cover bytes that are on disk (page cache), so flushed segment offsets
    are safe to resume from. At most ``HIGH`` bytes wait in memory; :meth:`drain` waits for
    all and re-raises a write error (ENOSPC, EDQUOT, EFBIG or a short write become
    :class:`DiskFullError`).
    """

    HIGH = 32 << 20

    def __init__(self, owner: FileTransfer) -> None:
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        self.queue: queue.SimpleQueue[tuple[list[int] | None, int, bytes] | None] = (
            queue.SimpleQueue())
        self.pending = 0
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.changed = asyncio.Event()
        self.waiting = False
        self.thread = threading.Thread(target=self._run, name="modeldeck-write", daemon=True)
        self.thread.start()

    def submit(self, seg: list[int] | None, pos: int, chunk: bytes) -> bool:
        """Queue a write (counted into ``seg`` once written; ``None``: not counted); True if
        the caller should wait for the queue to shrink."""
        if self.error is not None:
            raise self.error
        with self.lock:
            self.pending += len(chunk)
            full = self.pending > self.HIGH
        self.queue.put((seg, pos, chunk))
        return full

    async def wait_below(self, limit: int, *, raise_error: bool = True) -> None:
        """Wait until at most ``limit`` bytes are queued."""
        while True:
            if self.error is not None and raise_error:
                raise self.error
            with self.lock:
                if self.pending <= limit:
                    return
                self.waiting = True
                self.changed.clear()
            await self.changed.wait()

    async def drain(self, *, raise_error: bool = True) -> None:
        """Wait until every queued chunk is written (and counted)."""
        await self.wait_below(0, raise_error=raise_error)

    def close(self) -> None:
        """Write what is queued, then stop the thread (blocking, bounded by ``HIGH``)."""
        self.queue.put(None)
        self.thread.join()

    def _run(self) -> None:
        owner = self.owner
        while True:
            item = self.queue.get()
            if item is None:
                return
            seg, pos, chunk = item
            n = len(chunk)
            if self.error is None:
                try:
                    written = pwrite(owner.fd, chunk, pos)
                except OSError as exc:
                    self.error = owner._write_error(exc)
                else:
                    try:
                        if written and seg is not None:
                            owner._count(seg, pos, written)
                    except AssertionError as exc:
                        self.error = exc
                    if written != n and self.error is None:
                        self.error = owner._disk_full()  # a short or zero write: no room
            with self.lock:
                self.pending -= n
                if self.waiting and (self.pending <= self.HIGH // 2 or self.error is not None):
                    self.waiting = False
                    self.loop.call_soon_threadsafe(self.changed.set)


def wait_reason(exc: HttpStatusError, hub: str | None) -> str | None:
    """What a retry after ``exc`` waits for, for the job's "waiting" state: a rate limit
    (any 429), or a server that said how long to wait; None otherwise."""
    host = urlsplit(exc.url).hostname or "the server"
    if exc.status == 429:
        if hub and origin(exc.url) == origin(hub):
            return "the Hub's rate limit"
        return f"the rate limit of {host}"
    if exc.retry_after is None:
        return None
    return f"{host} (HTTP {exc.status})"


def untrusted(exc: BaseException, url: str) -> DownloadError | None:
    """A TLS certificate that does not verify is no transient failure: the error for it (else
    None), instead of retrying until ``give_up_after``."""
    if "CERTIFICATE_VERIFY_FAILED" not in str(exc):
        return None
    host = urlsplit(url).netloc or "the server"
    return DownloadError(f"the TLS certificate of {host} is not trusted",
                         hint="behind a TLS-inspecting proxy, add its CA with SSL_CERT_FILE")


def give_up_error(path: str, policy: RetryPolicy, failures: int, since: float, delay: float,
                  reason: str, *, asked: bool) -> DownloadError:
    """The one line for retries that ran out (``asked``: the server set the wait)."""
    elapsed = max(0.0, policy.clock() - since)
    hint = ("run `modeldeck jobs retry` to try again; give_up_after (minutes) sets how long "
            "ModelDeck keeps trying")
    by_tries = policy.max_tries is not None and failures >= policy.max_tries
    if asked and not by_tries:
        return DownloadError(
            f"{path}: the server asks to wait {fmt.duration(delay)} more ({reason}), past "
            f"give_up_after ({policy.give_up_after / 60:g} min) without progress", hint=hint)
    return DownloadError(f"{path}: giving up after {failures} failed attempts in "
                         f"{fmt.duration(elapsed)} without progress ({reason})", hint=hint)


class _KeepsLying(Exception):
    """``REJECTS_BEFORE_PLAIN`` answers refused: try one plain GET of the whole file."""


def _lower_priority(delta: int) -> None:
    """Make the calling thread (only; Linux) ``delta`` nicer; best effort."""
    if delta <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + delta))
    except OSError:
        pass


async def _settle(fut: asyncio.Future) -> None:
    """Wait for a worker thread's future to finish, whatever happens to us meanwhile."""
    while not fut.done():
        try:
            await asyncio.wait((fut,))
        except asyncio.CancelledError:
            continue
    if not fut.cancelled():
        fut.exception()  # retrieved: never "exception was never retrieved"


async def _await_thread(fut: asyncio.Future, handle: rawfetch.Handle) -> rawfetch.RawResponse:
    """The result of :meth:`rawfetch.Connector.open`; if cancelled, abort the request and
    close a response that arrived anyway before re-raising."""
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        handle.abort()
        await _settle(fut)
        if not fut.cancelled() and fut.exception() is None:
            fut.result().close()
        raise


def first_error(group: BaseExceptionGroup) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


__all__ = ["FileTransfer", "ProbeResult", "RestartFromZero", "TransferContext", "give_up_error",
           "is_strong", "strip_query", "untrusted", "wait_reason"]
