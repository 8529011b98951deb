"""A local server that speaks enough of the Hugging Face Hub for ModelDeck, with faults.

Usage (sync, the server runs in its own thread and event loop)::

    with FakeHub() as hub:
        hub.add_repo("acme/tiny", {"model-Q4_K_M.gguf": data, "README.md": b"hi"})
        hub.add_file("direct.bin", data)             # GET {hub.url}/files/direct.bin
        hub.add_fault("model-Q4_K_M.gguf", "drop_after", nbytes=100_000, times=1)
        os.environ["HF_ENDPOINT"] = hub.url
        ...
        hub.bytes_served("model-Q4_K_M.gguf"); hub.requests_for("model-Q4_K_M.gguf")

Endpoints: ``GET /api/models/{repo}[/revision/{rev}]`` (``?blobs=true`` adds sizes, blob ids
and LFS sha256), ``GET /api/models?search=&filter=&sort=&limit=``,
``GET|HEAD /{repo}/resolve/{rev}/{path}`` and ``GET|HEAD /files/{name}`` with single
``Range``, ``If-Range``, strong ``ETag``, ``X-Repo-Commit``, ``X-Linked-Etag``,
``X-Linked-Size``, ``Accept-Ranges``. Gated repos answer 403 + ``X-Error-Code: GatedRepo``
unless the request carries ``Authorization: Bearer <token>`` with an allowed token.

Fault kinds (:meth:`FakeHub.add_fault`): ``ignore_range``, ``bad_content_range``,
``status`` (``status=``, ``headers=``), ``drop_after`` (``nbytes=``), ``stall``
(``seconds=``), ``slow`` (``rate=`` bytes/s per response), ``redirect`` (``to=`` base URL),
``change`` (``data=``: replace the content, giving it a new ETag), ``no_length`` (no
``Content-Length``: a chunked body, and no size in a 206's ``Content-Range`` either).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import re
import ssl
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CHUNK = 64 * 1024
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeFile:
    """A served file."""

    data: bytes
    lfs: bool = True
    etag_style: str = "strong"  # strong | weak | none

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def etag(self) -> str | None:
        if self.etag_style == "none":
            return None
        tag = self.sha256 if self.lfs else git_blob_sha1(self.data)
        return f'W/"{tag}"' if self.etag_style == "weak" else f'"{tag}"'


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
    """A fault rule: applies to requests whose path matches ``match`` (glob or substring)."""

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
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    peer: tuple[str, int] | None = None  # the client's address: one per TCP connection
    status: int = 0
    bytes_sent: int = 0
    faults: list[Fault] = field(default_factory=list)


class FakeHub:
    """The server. Thread-safe API; start with ``with FakeHub() as hub`` or :meth:`start`."""

    def __init__(self, *, share_with: FakeHub | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context`` (a server context) makes it an HTTPS server."""
        self.ssl_context = ssl_context
        self.repos: dict[str, FakeRepo] = share_with.repos if share_with else {}
        self.files: dict[str, FakeFile] = share_with.files if share_with else {}
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self._served: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL (use as ``HF_ENDPOINT``)."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> FakeHub:
        """Start serving on an ephemeral port in a background thread."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fakehub", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    async def _serve(self) -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("GET", "/api/models", self._list_models)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.3
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
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
        files: dict[str, bytes],
        *,
        commit: str | None = None,
        gated: bool = False,
        private: bool = False,
        tokens: set[str] | None = None,
        lfs_threshold: int = 1024,
        downloads: int = 0,
        likes: int = 0,
        tags: list[str] | None = None,
        etag_style: str = "strong",
    ) -> FakeRepo:
        """Register a repo; files of ``lfs_threshold`` bytes or more are LFS files."""
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

    def add_file(self, name: str, data: bytes, *, etag_style: str = "strong") -> str:
        """Serve ``data`` at ``/files/{name}``; returns the full URL."""
        with self._lock:
            self.files[name] = FakeFile(data, lfs=True, etag_style=etag_style)
        return f"{self.url}/files/{name}"

    def set_content(self, name: str, data: bytes, repo: str | None = None) -> None:
        """Replace a file's bytes (its ETag changes)."""
        with self._lock:
            table = self.repos[repo].files if repo else self.files
            table[name] = FakeFile(data, lfs=table[name].lfs, etag_style=table[name].etag_style)

    def add_fault(self, match: str, kind: str, *, times: int | None = 1, skip: int = 0,
                  methods: tuple[str, ...] = ("GET",), **params: Any) -> Fault:
        """Inject a fault for requests whose path contains/globs ``match``.

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

    # -- observations ---------------------------------------------------------------------

    def bytes_served(self, match: str = "") -> int:
        """Body bytes sent for paths containing ``match``."""
        with self._lock:
            return sum(n for p, n in self._served.items() if match in p)

    def requests_for(self, match: str = "", method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose path contains ``match``."""
        with self._lock:
            return [r for r in self.requests
                    if match in r.path and (method is None or r.method == method)]

    def reset_counters(self) -> None:
        """Forget recorded requests and byte counts."""
        with self._lock:
            self.requests.clear()
            self._served.clear()

    # -- handlers -------------------------------------------------------------------------

    def _take_faults(self, method: str, path: str) -> list[Fault]:
        with self._lock:
            hit = [f for f in self.faults if f.matches(method, path)]
            for f in hit:
                f.hits += 1
            return hit

    def _record(self, request: web.Request) -> RecordedRequest:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        rec = RecordedRequest(request.method, request.path, dict(request.headers),
                              tuple(peer[:2]) if peer else None)
        with self._lock:
            self.requests.append(rec)
        return rec

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
        rec = self._record(request)
        path = request.path
        for fault in self._take_faults(request.method, path):
            early = await self._pre_fault(request, fault, rec)
            if early is not None:
                rec.status = early.status
                return early
        try:
            if path.startswith("/api/models/"):
                resp = self._model_info(request, path[len("/api/models/"):])
            elif path.startswith("/files/"):
                name = path[len("/files/"):]
                with self._lock:
                    f = self.files.get(name)
                if f is None:
                    resp = _error(404, "EntryNotFound", "Entry not found")
                else:
                    return await self._serve_file(request, rec, f, {})
            elif "/resolve/" in path:
                return await self._resolve(request, rec, path)
            else:
                resp = _error(404, "RepoNotFound", "Not found")
        except web.HTTPException:
            raise
        rec.status = resp.status
        return resp

    async def _pre_fault(self, request: web.Request, fault: Fault, rec: RecordedRequest
                         ) -> web.StreamResponse | None:
        p = fault.params
        if fault.kind == "status":
            resp = web.Response(status=p.get("status", 503), text=p.get("text", "fault"),
                                headers=p.get("headers") or {})
            return resp
        if fault.kind == "redirect":
            raise web.HTTPFound(p["to"].rstrip("/") + request.path_qs)
        if fault.kind == "change":
            name = request.path.rsplit("/", 1)[-1]
            repo = None
            if "/resolve/" in request.path:
                repo = request.path.lstrip("/").split("/resolve/")[0]
                name = request.path.split("/resolve/", 1)[1].split("/", 1)[1]
            self.set_content(name, p["data"], repo)
            return None
        # other kinds act while serving the body
        rec.faults.append(fault)
        return None

    def _model_info(self, request: web.Request, rest: str) -> web.Response:
        repo_id = rest.partition("/revision/")[0]
        repo_id = repo_id.rstrip("/")
        with self._lock:
            repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized(request, repo)):
            return _error(401, "RepoNotFound", "Repository not found")
        blobs = request.query.get("blobs", "").lower() in ("1", "true")
        siblings: list[dict[str, Any]] = []
        for p, f in repo.files.items():
            item: dict[str, Any] = {"rfilename": p}
            if blobs:
                item["size"] = len(f.data)
                item["blobId"] = git_blob_sha1(f.data)
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

    @staticmethod
    def _authorized(request: web.Request, repo: FakeRepo) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in repo.tokens

    async def _resolve(self, request: web.Request, rec: RecordedRequest, path: str
                       ) -> web.StreamResponse:
        repo_id, _, rest = path.lstrip("/").partition("/resolve/")
        rev, _, fname = rest.partition("/")
        from urllib.parse import unquote

        fname = unquote(fname)
        with self._lock:
            repo = self.repos.get(repo_id)
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
        f = repo.files.get(fname)
        if f is None:
            rec.status = 404
            return _error(404, "EntryNotFound", "Entry not found")
        extra = {"X-Repo-Commit": repo.commit}
        if f.lfs:
            extra["X-Linked-Etag"] = f'"{f.sha256}"'
            extra["X-Linked-Size"] = str(len(f.data))
        return await self._serve_file(request, rec, f, extra)

    async def _serve_file(self, request: web.Request, rec: RecordedRequest, f: FakeFile,
                          extra: dict[str, str]) -> web.StreamResponse:
        faults = {fl.kind: fl.params for fl in rec.faults}
        data = f.data
        size = len(data)
        headers = {"Accept-Ranges": "bytes", **extra}
        if f.etag:
            headers["ETag"] = f.etag
        start, end, status = 0, size, 200
        rng = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        use_range = rng is not None and "ignore_range" not in faults
        if use_range and if_range is not None and (if_range != f.etag or if_range.startswith("W/")):
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
        rate = faults.get("slow", {}).get("rate")
        pos, sent = start, 0
        t0 = time.monotonic()
        key = request.path
        while pos < end:
            n = min(CHUNK, end - pos)
            if drop_after is not None:
                n = min(n, drop_after - sent)
                if n <= 0:
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
            try:
                await resp.write(data[pos:pos + n])
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


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers={"X-Error-Code": code, "X-Error-Message": message},
    )
