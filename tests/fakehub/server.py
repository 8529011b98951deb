"""A local server that answers as the Hugging Face Hub and its CDN do, with faults.

Usage (sync, the server runs in its own thread and event loop)::

    with FakeHub() as hub:
        hub.add_repo("acme/tiny", {"model-Q4_K_M.gguf": data, "README.md": b"hi"})
        hub.add_file("direct.bin", data)             # GET {hub.url}/files/direct.bin
        hub.add_fault("model-Q4_K_M.gguf", "drop_after", nbytes=100_000, times=1)
        os.environ["HF_ENDPOINT"] = hub.url
        ...
        hub.bytes_served("model-Q4_K_M.gguf"); hub.requests_for("model-Q4_K_M.gguf")

Two origins, as on the real Hub (see ``/work/shared/HUB.md``): the **Hub** (``hub.url``:
the API and the resolver) and the **CDN** (``hub.cdn_url``, another port):

- ``GET /api/models/{repo}[/revision/{rev}]`` (``?blobs=true`` adds sizes, blob ids and LFS
  sha256), ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (``?recursive=``),
  ``POST /api/models/{repo}/paths-info/{rev}``, ``GET /api/models?search=&filter=&sort=&limit=``.
- ``GET|HEAD /{repo}/resolve/{rev}/{path}``: a small (non-LFS) file is answered here (``200``,
  ``ETag`` = git blob id, ``X-Repo-Commit``); an LFS file gets a **302** carrying
  ``X-Repo-Commit``, ``X-Linked-Etag: "<sha256>"``, ``X-Linked-Size`` (with :attr:`xet`, also
  ``X-Xet-Hash`` and a ``Link: …; rel="xet-auth"``) and an absolute ``Location`` on the CDN with
  a signed query (``X-Amz-Date`` + ``X-Amz-Expires`` = :attr:`url_ttl`, ``X-Amz-Signature``).
  Those headers are only on the 302. Gated repos answer 403 + ``X-Error-Code: GatedRepo``,
  private or unknown ones 401 ``RepoNotFound``, unless ``Authorization: Bearer <token>`` carries
  an allowed token. :meth:`rate_limit` makes the resolver answer ``429`` with
  ``RateLimit: "resolvers";r=0;t=N`` (and ``Retry-After`` only if asked) past a budget.
- The CDN serves single ``Range`` requests (``206``/``416``); its ``ETag`` is :attr:`cdn_etag`
  (``strong``: the quoted xet hash, not the sha256; ``weak``; ``none``: neither ETag nor
  Last-Modified); ``HEAD`` answers :attr:`cdn_head` (``403``: S3 presigned-for-GET). An expired
  (or :meth:`expire_urls`-revoked) or tampered signature is ``403``; a request carrying
  ``Authorization`` is ``400`` (counted in :attr:`cdn_auth_refused`).
- ``GET|HEAD /files/{name}`` on the Hub origin: a plain file server (direct URLs), ``ETag``
  per file (``strong`` = the quoted sha256, ``weak``, ``none``), ``If-Range`` honoured.

Requests are recorded with a ``label``: the path, plus ``{repo}/{file}`` for CDN requests, so
``requests_for("model.gguf")`` and faults match a file wherever it is served.

Fault kinds (:meth:`FakeHub.add_fault`): ``ignore_range``, ``bad_content_range``,
``status`` (``status=``, ``headers=``), ``drop_after`` (``nbytes=``), ``stall``
(``seconds=``), ``slow`` (``rate=`` bytes/s per response), ``redirect`` (``to=`` base URL),
``change`` (``data=``: replace the content, giving it a new ETag), ``no_length`` (no
``Content-Length``: a chunked body, and no size in a 206's ``Content-Range`` either). Kinds
that act on a body (all but ``status``, ``redirect`` and ``change``) only match answers that
carry one, never the resolver's 302.
"""

from __future__ import annotations

import asyncio
import calendar
import fnmatch
import functools
import hashlib
import hmac
import itertools
import json
import math
import re
import secrets
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlencode

from aiohttp import web

CHUNK = 64 * 1024
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
EARLY_FAULTS = ("status", "redirect", "change")  # the others act on a body
CDN_PREFIX = "/xet-bridge-us/"
ETAG_STYLES = ("strong", "weak", "none")


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of ``data``."""
    h = hashlib.sha1(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


@dataclass(eq=False)
class FakeFile:
    """A served file (``data`` may be any bytes-like object, e.g. an ``mmap``).

    ``etag_style`` None: the hub's :attr:`FakeHub.cdn_etag` on the CDN, strong on ``/files``.
    """

    data: Any
    lfs: bool = True
    etag_style: str | None = None

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @functools.cached_property
    def blob_id(self) -> str:
        return git_blob_sha1(self.data)

    @functools.cached_property
    def xet_hash(self) -> str:
        """Stands in for the Xet merkle hash: 64 hex digits that are not the sha256."""
        return hashlib.sha256(b"xet:" + self.sha256.encode()).hexdigest()

    @property
    def etag(self) -> str | None:
        """The ETag ``/files`` and the resolver send (sha256 for LFS, else the blob id)."""
        style = self.etag_style or "strong"
        if style == "none":
            return None
        tag = self.sha256 if self.lfs else self.blob_id
        return f'W/"{tag}"' if style == "weak" else f'"{tag}"'

    def cdn_etag(self, style: str) -> str | None:
        """The CDN's ETag in ``style`` (the file's own style wins)."""
        style = self.etag_style or style
        if style == "none":
            return None
        return f'W/"{self.xet_hash}"' if style == "weak" else f'"{self.xet_hash}"'


@dataclass
class FakeRepo:
    """A model repo at one commit."""

    repo_id: str
    files: dict[str, FakeFile]
    commit: str
    gated: bool = False
    private: bool = False
    tokens: set[str] = field(default_factory=set)
    downloads: int = 0
    likes: int = 0
    tags: list[str] = field(default_factory=list)
    extra_listing: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Fault:
    """A fault rule: applies to requests whose label matches ``match`` (glob or substring)."""

    match: str
    kind: str
    times: int | None = 1  # None = forever
    methods: tuple[str, ...] = ("GET",)
    params: dict[str, Any] = field(default_factory=dict)
    skip: int = 0  # let this many matching requests through first
    hits: int = 0
    seen: int = 0

    def matches(self, method: str, path: str) -> bool:
        if method not in self.methods:
            return False
        if not (self.match in path or fnmatch.fnmatch(path, self.match)):
            return False
        self.seen += 1
        if self.seen <= self.skip:
            return False
        return self.times is None or self.hits < self.times


@dataclass
class RecordedRequest:
    """One request as the server saw it (``host``: ``hub`` or ``cdn``)."""

    method: str
    path: str
    headers: dict[str, str]
    peer: tuple[str, int] | None = None  # the client's address: one per TCP connection
    status: int = 0
    bytes_sent: int = 0
    faults: list[Fault] = field(default_factory=list)
    host: str = "hub"
    label: str = ""  # path, plus " {repo}/{file}" on the CDN
    query: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.path


@dataclass
class _Window:
    """The resolver's fixed rate-limit window."""

    limit: int
    seconds: float
    retry_after: bool
    start: float = -math.inf
    used: int = 0


class FakeHub:
    """The server. Thread-safe API; start with ``with FakeHub() as hub`` or :meth:`start`.

    Modes (attributes, changeable at any time): :attr:`cdn_etag`, :attr:`cdn_head`,
    :attr:`url_ttl`, :attr:`xet`, :attr:`cdn_rate`; :meth:`rate_limit`; ``clock`` (wall time,
    for signatures and rate windows).
    """

    def __init__(self, *, share_with: FakeHub | None = None,
                 ssl_context: ssl.SSLContext | None = None, cdn_etag: str = "strong",
                 cdn_head: int = 200, url_ttl: float = 3600.0, xet: bool = False,
                 cdn_rate: int | None = None, clock: Callable[[], float] = time.time,
                 host: str = "127.0.0.1", port: int = 0, cdn_port: int = 0) -> None:
        """``ssl_context`` (a server context) makes both origins HTTPS."""
        if cdn_etag not in ETAG_STYLES:
            raise ValueError(f"cdn_etag must be one of {ETAG_STYLES}")
        self.ssl_context = ssl_context
        self.repos: dict[str, FakeRepo] = share_with.repos if share_with else {}
        self.files: dict[str, FakeFile] = share_with.files if share_with else {}
        self.cdn_etag = cdn_etag
        self.cdn_head = cdn_head
        self.url_ttl = url_ttl
        self.xet = xet
        self.cdn_rate = cdn_rate  # bytes/s per response on the CDN (a per-connection cap)
        self.clock = clock
        self.cdn_auth_refused = 0
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self._served: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._secret = secrets.token_bytes(16)
        self._blobs: dict[str, tuple[FakeRepo, str]] = {}  # CDN key -> (repo, path)
        self._issued: dict[str, float] = {}  # signature -> when it was signed
        self._revoked: set[str] = set()
        self._window: _Window | None = None
        self._serial = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self.host = host
        self.port = port
        self.cdn_port = cdn_port

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Hub's base URL (use as ``HF_ENDPOINT``)."""
        return f"{self._scheme}://{self.host}:{self.port}"

    @property
    def cdn_url(self) -> str:
        """The CDN's base URL (another origin)."""
        return f"{self._scheme}://{self.host}:{self.cdn_port}"

    @property
    def _scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    def start(self) -> FakeHub:
        """Start serving (ephemeral ports unless given) in a background thread."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        failure: list[BaseException] = []

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._serve())
            except BaseException as exc:  # e.g. the port is taken
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fakehub", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    async def _serve(self) -> None:
        hub = web.Application(client_max_size=1 << 20)
        hub.router.add_route("GET", "/api/models", self._list_models)
        hub.router.add_route("*", "/{tail:.*}", self._dispatch)
        cdn = web.Application(client_max_size=1 << 20)
        cdn.router.add_route("*", "/{tail:.*}", self._cdn)
        self.port = await self._site(hub, self.port)
        self.cdn_port = await self._site(cdn, self.cdn_port)

    async def _site(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.3)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.host, port, ssl_context=self.ssl_context)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            fut.result(10)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- content --------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, Any],
        *,
        commit: str | None = None,
        gated: bool = False,
        private: bool = False,
        tokens: set[str] | None = None,
        lfs_threshold: int = 1024,
        downloads: int = 0,
        likes: int = 0,
        tags: list[str] | None = None,
        etag_style: str | None = None,
    ) -> FakeRepo:
        """Register a repo; files of ``lfs_threshold`` bytes or more are LFS files (served
        through the CDN). ``etag_style`` overrides :attr:`cdn_etag` for these files."""
        commit = commit or hashlib.sha1(repo_id.encode() + str(time.time()).encode()).hexdigest()
        repo = FakeRepo(
            repo_id=repo_id,
            files={p: FakeFile(d, lfs=len(d) >= lfs_threshold, etag_style=etag_style)
                   for p, d in files.items()},
            commit=commit, gated=gated, private=private, tokens=set(tokens or ()),
            downloads=downloads, likes=likes, tags=list(tags or ["gguf"]),
        )
        with self._lock:
            self.repos[repo_id] = repo
        return repo

    def add_file(self, name: str, data: Any, *, etag_style: str = "strong") -> str:
        """Serve ``data`` at ``/files/{name}`` on the Hub origin; returns the full URL."""
        with self._lock:
            self.files[name] = FakeFile(data, lfs=True, etag_style=etag_style)
        return f"{self.url}/files/{name}"

    def set_content(self, name: str, data: Any, repo: str | None = None) -> None:
        """Replace a file's bytes (its ETag changes)."""
        with self._lock:
            table = self.repos[repo].files if repo else self.files
            table[name] = FakeFile(data, lfs=table[name].lfs, etag_style=table[name].etag_style)

    def add_fault(self, match: str, kind: str, *, times: int | None = 1, skip: int = 0,
                  methods: tuple[str, ...] = ("GET",), **params: Any) -> Fault:
        """Inject a fault for requests whose label contains/globs ``match``.

        It applies ``times`` times (None = always) after letting ``skip`` requests through.
        """
        fault = Fault(match=match, kind=kind, times=times, methods=methods, params=params,
                      skip=skip)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        with self._lock:
            self.faults.clear()

    def rate_limit(self, limit: int | None, window: float = 300.0, *,
                   retry_after: bool = False) -> None:
        """Allow ``limit`` resolver requests per fixed ``window`` seconds (None: no limit);
        past it answer 429 with ``RateLimit`` (``t`` = seconds left) and, if ``retry_after``,
        ``Retry-After`` too. The window starts at the next request."""
        with self._lock:
            self._window = None if limit is None else _Window(limit, window, retry_after)

    def expire_urls(self) -> None:
        """Every CDN URL handed out so far stops working (403), as after its expiry."""
        with self._lock:
            self._revoked.update(self._issued)

    # -- observations ---------------------------------------------------------------------

    def bytes_served(self, match: str = "") -> int:
        """Body bytes sent for requests whose label contains ``match``."""
        with self._lock:
            return sum(n for p, n in self._served.items() if match in p)

    def requests_for(self, match: str = "", method: str | None = None,
                     host: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose label contains ``match`` (``host``: ``hub``/``cdn``)."""
        with self._lock:
            return [r for r in self.requests
                    if match in r.label and (method is None or r.method == method)
                    and (host is None or r.host == host)]

    def resolver_calls(self, match: str = "") -> int:
        """Requests to the resolver (``/resolve/``) whose path contains ``match``."""
        return len([r for r in self.requests_for("/resolve/", host="hub") if match in r.path])

    def reset_counters(self) -> None:
        """Forget recorded requests and byte counts."""
        with self._lock:
            self.requests.clear()
            self._served.clear()
            self.cdn_auth_refused = 0

    def stats(self) -> dict[str, int]:
        """Counters as a dict (also ``GET /_fakehub/stats`` on the Hub origin)."""
        with self._lock:
            reqs = list(self.requests)
            served = sum(self._served.values())
        return {
            "resolver_calls": sum(1 for r in reqs if r.host == "hub" and "/resolve/" in r.path),
            "rate_limited": sum(1 for r in reqs if r.status == 429),
            "cdn_requests": sum(1 for r in reqs if r.host == "cdn"),
            "cdn_auth_refused": self.cdn_auth_refused,
            "bytes_served": served,
        }

    # -- handlers: Hub --------------------------------------------------------------------

    def _take_faults(self, method: str, label: str, *, body: bool) -> list[Fault]:
        with self._lock:
            hit = [f for f in self.faults
                   if (body or f.kind in EARLY_FAULTS) and f.matches(method, label)]
            for f in hit:
                f.hits += 1
            return hit

    def _record(self, request: web.Request, *, host: str = "hub", label: str = ""
                ) -> RecordedRequest:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        rec = RecordedRequest(request.method, request.path, dict(request.headers),
                              tuple(peer[:2]) if peer else None, host=host, label=label,
                              query=request.query_string)
        with self._lock:
            self.requests.append(rec)
        return rec

    async def _faults(self, request: web.Request, rec: RecordedRequest, *, body: bool
                      ) -> web.StreamResponse | None:
        """Apply the matching faults; an early answer (``status``) or None."""
        for fault in self._take_faults(request.method, rec.label, body=body):
            early = await self._pre_fault(request, fault, rec)
            if early is not None:
                rec.status = early.status
                return early
        return None

    async def _list_models(self, request: web.Request) -> web.Response:
        rec = self._record(request)
        search = (request.query.get("search") or "").lower()
        filt = request.query.getall("filter", [])
        limit = int(request.query.get("limit") or 1000)
        with self._lock:
            repos = list(self.repos.values())
        out = [r for r in repos if not r.private and search in r.repo_id.lower()
               and all(f in r.tags for f in filt)]
        out.sort(key=lambda r: r.downloads, reverse=True)
        body = [{"id": r.repo_id, "modelId": r.repo_id, "downloads": r.downloads,
                 "likes": r.likes, "tags": r.tags, "gated": "manual" if r.gated else False,
                 "private": r.private} for r in out[:limit]]
        rec.status = 200
        return web.json_response(body)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/_fakehub/stats":
            return web.json_response(self.stats())
        rec = self._record(request)
        if "/resolve/" in path and not path.startswith(("/api/", "/files/")):
            return await self._resolve(request, rec, path)
        early = await self._faults(request, rec, body=True)
        if early is not None:
            return early
        if path.startswith("/api/models/"):
            resp = await self._api(request, path[len("/api/models/"):])
        elif path.startswith("/files/"):
            with self._lock:
                f = self.files.get(path[len("/files/"):])
            if f is None:
                resp = _error(404, "EntryNotFound", "Entry not found")
            else:
                return await self._serve_file(request, rec, f.data, f.etag, {})
        else:
            resp = _error(404, "RepoNotFound", "Not found")
        rec.status = resp.status
        return resp

    async def _pre_fault(self, request: web.Request, fault: Fault, rec: RecordedRequest
                         ) -> web.StreamResponse | None:
        p = fault.params
        if fault.kind == "status":
            return web.Response(status=p.get("status", 503), text=p.get("text", "fault"),
                                headers=p.get("headers") or {})
        if fault.kind == "redirect":
            raise web.HTTPFound(p["to"].rstrip("/") + request.path_qs)
        if fault.kind == "change":
            name = request.path.rsplit("/", 1)[-1]
            repo = None
            if "/resolve/" in request.path:
                repo = request.path.lstrip("/").split("/resolve/")[0]
                name = unquote(request.path.split("/resolve/", 1)[1].split("/", 1)[1])
            elif rec.host == "cdn" and " " in rec.label:
                repo, name = _split_label(rec.label)
            self.set_content(name, p["data"], repo)
            return None
        # other kinds act while serving the body
        rec.faults.append(fault)
        return None

    async def _api(self, request: web.Request, rest: str) -> web.Response:
        """``{repo}[/revision/{rev}]``, ``{repo}/tree/{rev}[/{path}]``,
        ``{repo}/paths-info/{rev}``."""
        kind = "info"
        repo_id, rev, sub = rest.rstrip("/"), "main", ""
        for marker in ("/revision/", "/tree/", "/paths-info/"):
            if marker in rest:
                repo_id, _, tail = rest.partition(marker)
                rev, _, sub = tail.partition("/")
                kind = marker.strip("/")
                break
        rev = unquote(rev)
        with self._lock:
            repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized(request, repo)):
            return _error(401, "RepoNotFound", "Repository not found")
        if rev not in (repo.commit, "main"):
            return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if kind == "tree":
            recursive = request.query.get("recursive", "").lower() in ("1", "true")
            return web.json_response(self._tree(repo, unquote(sub), recursive))
        if kind == "paths-info":
            form = await request.post()
            wanted = set(form.getall("paths", []))
            entries = self._tree(repo, "", True)
            return web.json_response([e for e in entries if e["path"] in wanted])
        blobs = request.query.get("blobs", "").lower() in ("1", "true")
        siblings: list[dict[str, Any]] = []
        for p, f in repo.files.items():
            item: dict[str, Any] = {"rfilename": p}
            if blobs:
                item["size"] = len(f.data)
                item["blobId"] = f.blob_id
                if f.lfs:
                    item["lfs"] = {"size": len(f.data), "sha256": f.sha256, "pointerSize": 134}
            siblings.append(item)
        siblings.extend(repo.extra_listing)
        return web.json_response({
            "id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit,
            "private": repo.private, "gated": "manual" if repo.gated else False,
            "downloads": repo.downloads, "likes": repo.likes, "tags": repo.tags,
            "siblings": siblings,
        })

    def _tree(self, repo: FakeRepo, under: str, recursive: bool) -> list[dict[str, Any]]:
        """Tree entries as ``list_repo_tree`` parses them (folders, then files)."""
        prefix = under.strip("/") + "/" if under.strip("/") else ""
        folders: set[str] = set()
        files: list[dict[str, Any]] = []
        for p, f in sorted(repo.files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            parts = rest.split("/")
            for i in range(1, len(parts) if recursive else min(2, len(parts))):
                folders.add(prefix + "/".join(parts[:i]))
            if len(parts) > 1 and not recursive:
                continue
            entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": len(f.data),
                                     "path": p}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
                if self.xet:
                    entry["xetHash"] = f.xet_hash
            files.append(entry)
        dirs = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "path": d}
                for d in sorted(folders)]
        return dirs + files

    @staticmethod
    def _authorized(request: web.Request, repo: FakeRepo) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in repo.tokens

    def _limited(self) -> web.Response | None:
        """The resolver's 429 once the window's budget is spent; None while within it."""
        with self._lock:
            w = self._window
            if w is None:
                return None
            now = self.clock()
            if now - w.start >= w.seconds:
                w.start, w.used = now, 0
            w.used += 1
            if w.used <= w.limit:
                return None
            left = max(1, math.ceil(w.start + w.seconds - now))
        headers = {"RateLimit": f'"resolvers";r=0;t={left}',
                   "RateLimit-Policy": f'"fixed window";"resolvers";q={w.limit};'
                                       f'w={math.ceil(w.seconds)}'}
        if w.retry_after:
            headers["Retry-After"] = str(left)
        return web.Response(status=429, text="Too Many Requests", headers={
            **headers, "X-Error-Message": "rate limit exceeded"})

    async def _resolve(self, request: web.Request, rec: RecordedRequest, path: str
                       ) -> web.StreamResponse:
        repo_id, _, rest = path.lstrip("/").partition("/resolve/")
        rev, _, fname = rest.partition("/")
        rev, fname = unquote(rev), unquote(fname)
        with self._lock:
            repo = self.repos.get(repo_id)
        f = repo.files.get(fname) if repo is not None else None
        early = await self._faults(request, rec, body=f is None or not f.lfs)
        if early is not None:
            return early
        limited = self._limited()
        if limited is not None:
            rec.status = 429
            return limited
        if repo is None:
            rec.status = 401
            return _error(401, "RepoNotFound", "Repository not found")
        if (repo.gated or repo.private) and not self._authorized(request, repo):
            rec.status = 403 if repo.gated else 401
            if repo.gated:
                return _error(403, "GatedRepo", "Access to model is restricted")
            return _error(401, "RepoNotFound", "Repository not found")
        if rev not in (repo.commit, "main"):
            rec.status = 404
            return _error(404, "RevisionNotFound", "Revision not found")
        if f is None:
            rec.status = 404
            return _error(404, "EntryNotFound", "Entry not found",
                          {"X-Repo-Commit": repo.commit})
        extra = {"X-Repo-Commit": repo.commit}
        if not f.lfs:
            return await self._serve_file(request, rec, f.data, f.etag, extra)
        location = self._signed_url(repo, fname, f)
        headers = {
            **extra,
            "X-Linked-Etag": f'"{f.sha256}"',
            "X-Linked-Size": str(len(f.data)),
            "Location": location,
            "Accept-Ranges": "bytes",
        }
        if self.xet:
            headers["X-Xet-Hash"] = f.xet_hash
            base = self.url
            headers["Link"] = (f'<{base}/api/models/{repo.repo_id}/xet-read-token/{repo.commit}>;'
                               f' rel="xet-auth", <{self.cdn_url}/v1/reconstructions/'
                               f'{f.xet_hash}>; rel="xet-reconstruction-info"')
        rec.status = 302
        text = "" if request.method == "HEAD" else f"Found. Redirecting to {location}"
        return web.Response(status=302, text=text, headers=headers)

    def _signed_url(self, repo: FakeRepo, fname: str, f: FakeFile) -> str:
        """An S3-style presigned CDN URL for ``f``, valid :attr:`url_ttl` seconds."""
        key = f"{repo.repo_id.replace('/', '--')}/{f.xet_hash}"
        with self._lock:
            self._blobs[key] = (repo, fname)
            serial = next(self._serial)
        now = self.clock()
        date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        name = fname.rsplit("/", 1)[-1]
        params = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD",
            "X-Amz-Credential": f"FAKEHUB{serial}/{date[:8]}/us-east-1/s3/aws4_request",
            "X-Amz-Date": date,
            "X-Amz-Expires": str(max(1, math.ceil(self.url_ttl))),
            "X-Amz-SignedHeaders": "host",
            "X-Xet-Cas-Uid": "public",
            "response-content-disposition":
                f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";",
            "x-id": "GetObject",
        }
        path = CDN_PREFIX + key
        params["X-Amz-Signature"] = self._signature(path, params)
        with self._lock:
            # Expiry counts from the exact signing time (X-Amz-Date has whole seconds).
            self._issued[params["X-Amz-Signature"]] = now
        return f"{self.cdn_url}{path}?{urlencode(params)}"

    def _signature(self, path: str, params: dict[str, str]) -> str:
        text = path + "\n" + "\n".join(f"{k}={v}" for k, v in sorted(params.items())
                                       if k != "X-Amz-Signature")
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    # -- handlers: CDN --------------------------------------------------------------------

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        key = path[len(CDN_PREFIX):] if path.startswith(CDN_PREFIX) else ""
        with self._lock:
            found = self._blobs.get(key)
        label = f"{path} {found[0].repo_id}/{found[1]}" if found else path
        rec = self._record(request, host="cdn", label=label)
        if "Authorization" in request.headers:
            with self._lock:
                self.cdn_auth_refused += 1
            rec.status = 400
            return _s3_error(400, "InvalidArgument", "Only one auth mechanism allowed; only "
                             "the X-Amz-Algorithm query parameter, Signature query string "
                             "parameter or the Authorization header should be specified")
        params = {k: v for k, v in request.query.items()}
        signature = params.get("X-Amz-Signature", "")
        if not found or not hmac.compare_digest(signature, self._signature(path, params)):
            rec.status = 403
            return _s3_error(403, "SignatureDoesNotMatch", "The request signature we "
                             "calculated does not match the signature you provided.")
        signed = self._issued.get(signature)
        expiry = _expiry(params) if signed is None else signed + int(params["X-Amz-Expires"])
        if signature in self._revoked or self.clock() >= expiry:
            rec.status = 403
            return _s3_error(403, "AccessDenied", "Request has expired")
        if request.method == "HEAD" and self.cdn_head != 200:
            rec.status = self.cdn_head
            return web.Response(status=self.cdn_head)
        if request.method not in ("GET", "HEAD"):
            rec.status = 405
            return _s3_error(405, "MethodNotAllowed", "The specified method is not allowed")
        early = await self._faults(request, rec, body=True)
        if early is not None:
            return early
        repo, fname = found
        f = repo.files.get(fname)
        if f is None:  # replaced since: content addressed, so look the blob up by hash
            f = next((g for g in repo.files.values()
                      if key.endswith("/" + g.xet_hash)), None)
        if f is None:
            rec.status = 404
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        extra = {"Content-Type": "application/octet-stream",
                 "Content-Disposition": params.get("response-content-disposition", ""),
                 "Cache-Control": "public, max-age=604800, immutable"}
        return await self._serve_file(request, rec, f.data, f.cdn_etag(self.cdn_etag), extra,
                                      rate=self.cdn_rate)

    # -- bodies ---------------------------------------------------------------------------

    async def _serve_file(self, request: web.Request, rec: RecordedRequest, data: Any,
                          etag: str | None, extra: dict[str, str], *, rate: int | None = None
                          ) -> web.StreamResponse:
        faults = {fl.kind: fl.params for fl in rec.faults}
        size = len(data)
        headers = {"Accept-Ranges": "bytes", **extra}
        if etag:
            headers["ETag"] = etag
        start, end, status = 0, size, 200
        rng = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        use_range = rng is not None and "ignore_range" not in faults
        if use_range and if_range is not None and (if_range != etag or if_range.startswith("W/")):
            use_range = False
        if use_range:
            m = _RANGE_RE.match(rng or "")
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                else:
                    start, end = max(0, size - int(m.group(2))), size
                if start >= size or start >= end:
                    rec.status = 416
                    return web.Response(status=416, headers={"Content-Range": f"bytes */{size}",
                                                             **headers})
                status = 206
        if "status416" in faults:
            rec.status = 416
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        shown_start = start + (1 if "bad_content_range" in faults else 0)
        if status == 206:
            total = "*" if "no_length" in faults else size
            headers["Content-Range"] = f"bytes {shown_start}-{end - 1}/{total}"
        if "no_length" not in faults:
            headers["Content-Length"] = str(end - start)
        resp = web.StreamResponse(status=status, headers=headers)
        rec.status = status
        if request.method == "HEAD":
            await resp.prepare(request)
            return resp
        await resp.prepare(request)
        if "stall" in faults:
            await asyncio.sleep(faults["stall"].get("seconds", 5.0))
        drop_after = faults.get("drop_after", {}).get("nbytes")
        rate = faults.get("slow", {}).get("rate") or rate
        pos, sent = start, 0
        t0 = time.monotonic()
        key = rec.label
        view = memoryview(data)
        while pos < end:
            n = min(CHUNK, end - pos)
            if drop_after is not None:
                n = min(n, drop_after - sent)
                if n <= 0:
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
            try:
                await resp.write(view[pos:pos + n])
            except (ConnectionError, RuntimeError):
                return resp
            pos += n
            sent += n
            rec.bytes_sent += n
            with self._lock:
                self._served[key] += n
            if rate:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await resp.write_eof()
        return resp


def _split_label(label: str) -> tuple[str, str]:
    """(repo id, path in the repo) from a CDN request's label."""
    logical = label.split(" ", 1)[1]
    owner, name, path = logical.split("/", 2)
    return f"{owner}/{name}", path


def _expiry(params: dict[str, str]) -> float:
    """When a presigned URL stops working (``X-Amz-Date`` + ``X-Amz-Expires``)."""
    try:
        signed = calendar.timegm(time.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
        return signed + int(params["X-Amz-Expires"])
    except (KeyError, ValueError):
        return -math.inf


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None
           ) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers={"X-Error-Code": code, "X-Error-Message": message, **(headers or {})},
    )


def _s3_error(status: int, code: str, message: str) -> web.Response:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>")
    return web.Response(status=status, text=body, content_type="application/xml")
