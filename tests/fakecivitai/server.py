"""CivitAI look-alike: the API endpoints ``modeldeck pull civitai:…`` uses, on one origin, and
the signed storage URLs its downloads redirect to, on a second origin.

Its JSON follows CivitAI's documented field names (checked by
``tests/integration/test_civitai.py::test_fake_answers_use_documented_fields``), from
https://developer.civitai.com/site/reference/model-versions (``GET /api/v1/model-versions/{id}``:
``id``, ``modelId``, ``name``, ``baseModel``, ``model{name,type}``, ``files[{id, name, type,
sizeKB, metadata{format,size,fp}, hashes{AutoV2,SHA256,…}, downloadUrl, primary}]``,
``downloadUrl``), the REST API reference (https://github.com/civitai/civitai/wiki/REST-API-Reference:
``GET /api/v1/models/{id}`` -> ``id``, ``name``, ``type``, ``modelVersions[…]``; auth by
``Authorization: Bearer``) and https://education.civitai.com/civitais-guide-to-downloading-via-api/
(``/api/download/models/{versionId}`` redirects to a pre-signed S3-style URL; creators can
require a login to download). Unauthorised answers are ``{"error": "Unauthorized"}`` with
401, as https://developer.civitai.com/site/guide/authentication shows.

Fault injection: :meth:`FakeCivitai.answer` replaces an API answer (status, raw body);
:attr:`FakeCivitai.redirect_to` replaces the download redirect's ``Location``;
:attr:`FakeCivitai.rate` caps the storage's bytes/s per answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
TOKEN = "civitai-test-token-" + "x" * 16  # what tests set as CIVITAI_TOKEN


@dataclass(slots=True)
class FakeFile:
    """One file of a version. ``sha256=None`` computes it; ``""`` leaves it out of
    ``hashes``; ``login`` makes its download need the token."""

    name: str
    data: bytes
    type: str = "Model"
    format: str = "SafeTensor"
    primary: bool = True
    sha256: str | None = None
    login: bool = False
    size_kb: Any = None  # None: the real size / 1024

    def hashes(self) -> dict[str, str]:
        real = hashlib.sha256(self.data).hexdigest().upper()
        sha = real if self.sha256 is None else self.sha256
        out = {"AutoV2": real[:10]}
        if sha:
            out["SHA256"] = sha
        return out


@dataclass(slots=True)
class FakeVersion:
    """A model version."""

    id: int
    name: str = "v1.0"
    base_model: str = "SDXL 1.0"
    files: list[FakeFile] = field(default_factory=list)


@dataclass(slots=True)
class FakeModel:
    """A model with its versions, newest first (as CivitAI lists them)."""

    id: int
    name: str
    type: str = "LORA"
    versions: list[FakeVersion] = field(default_factory=list)


@dataclass(slots=True)
class Request:
    """One request as the fake saw it."""

    origin: str  # "api" or "storage"
    method: str
    path: str
    authorization: str | None


class FakeCivitai:
    """The server (background thread). Start with ``with FakeCivitai() as c`` or
    :meth:`start`; add models with :meth:`add`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.storage_port = 0
        self.models: dict[int, FakeModel] = {}
        self.requests: list[Request] = []
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.redirect_to: str | None = None
        self.rate: int | None = None
        self.bytes_served = 0
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []

    @property
    def url(self) -> str:
        """The API's base URL (``CIVITAI_ENDPOINT``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def storage_url(self) -> str:
        """The storage origin downloads redirect to."""
        return f"http://{self.host}:{self.storage_port}"

    # -- content --------------------------------------------------------------------------

    def add(self, model: FakeModel) -> FakeModel:
        """Serve ``model`` (and its versions and files)."""
        with self._lock:
            self.models[model.id] = model
        return model

    def answer(self, path: str, status: int, body: bytes | str) -> None:
        """Answer ``GET path`` (e.g. ``/api/v1/models/1``) with this status and raw body."""
        self.answers[path] = (status, body.encode() if isinstance(body, str) else body)

    def requests_to(self, origin: str, path: str = "") -> list[Request]:
        """The requests to ``origin`` (``api``/``storage``) whose path starts with ``path``."""
        with self._lock:
            return [r for r in self.requests if r.origin == origin and r.path.startswith(path)]

    def version_json(self, model: FakeModel, version: FakeVersion, *, nested: bool = False
                     ) -> dict[str, Any]:
        """A version as ``/api/v1/model-versions/{id}`` gives it (``nested``: as an item of
        ``modelVersions``, without ``model``)."""
        files = [{
            "id": version.id * 100 + i,
            "name": f.name,
            "type": f.type,
            "sizeKB": len(f.data) / 1024 if f.size_kb is None else f.size_kb,
            "metadata": {"format": f.format, "size": "pruned", "fp": "fp16"},
            "pickleScanResult": "Success",
            "virusScanResult": "Success",
            "hashes": f.hashes(),
            "downloadUrl": f"{self.url}/api/download/models/{version.id}"
                           f"?type={f.type.replace(' ', '%20')}&format={f.format}",
            "primary": f.primary,
        } for i, f in enumerate(version.files)]
        out: dict[str, Any] = {
            "id": version.id, "modelId": model.id, "name": version.name,
            "baseModel": version.base_model, "files": files,
            "downloadUrl": f"{self.url}/api/download/models/{version.id}",
        }
        if not nested:
            out["model"] = {"name": model.name, "type": model.type, "nsfw": False, "poi": False}
        return out

    def model_json(self, model: FakeModel) -> dict[str, Any]:
        """A model as ``/api/v1/models/{id}`` gives it."""
        return {"id": model.id, "name": model.name, "type": model.type, "nsfw": False,
                "modelVersions": [self.version_json(model, v, nested=True)
                                  for v in model.versions]}

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeCivitai:
        """Serve both origins on ephemeral ports in a background thread."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fakecivitai", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    async def _serve(self) -> None:
        api = web.Application()
        api.router.add_route("*", "/{tail:.*}", self._api)
        storage = web.Application()
        storage.router.add_route("*", "/{tail:.*}", self._storage)
        self.port = await self._site(api)
        self.storage_port = await self._site(storage)

    async def _site(self, app: web.Application) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.3)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        """Stop serving."""
        if self._loop is None:
            return

        async def shutdown() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FakeCivitai:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- handlers -------------------------------------------------------------------------

    def _record(self, request: web.Request, origin: str) -> None:
        with self._lock:
            self.requests.append(Request(origin, request.method, request.path_qs,
                                         request.headers.get("Authorization")))

    async def _api(self, request: web.Request) -> web.StreamResponse:
        self._record(request, "api")
        path = request.path
        if path in self.answers:
            status, body = self.answers[path]
            return web.Response(status=status, body=body, content_type="application/json")
        if m := re.fullmatch(r"/api/v1/models/(\d+)", path):
            model = self.models.get(int(m.group(1)))
            if model is None:
                return _json(404, {"error": "No model with id " + m.group(1)})
            return _json(200, self.model_json(model))
        if m := re.fullmatch(r"/api/v1/model-versions/(\d+)", path):
            found = self._version(int(m.group(1)))
            if found is None:
                return _json(404, {"error": "Model version not found"})
            return _json(200, self.version_json(*found))
        if m := re.fullmatch(r"/api/download/models/(\d+)", path):
            return self._download(request, int(m.group(1)))
        return _json(404, {"error": "Not found"})

    def _version(self, vid: int) -> tuple[FakeModel, FakeVersion] | None:
        for model in self.models.values():
            for version in model.versions:
                if version.id == vid:
                    return model, version
        return None

    def _download(self, request: web.Request, vid: int) -> web.Response:
        found = self._version(vid)
        if found is None:
            return _json(404, {"error": "Model version not found"})
        kind = request.query.get("type", "Model")
        fmt = request.query.get("format")
        files = [f for f in found[1].files if f.type == kind and (fmt is None or f.format == fmt)]
        if not files:
            return _json(404, {"error": "File not found"})
        f = files[0]
        if f.login and request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _json(401, {"error": "Unauthorized", "message": "The creator of this asset "
                               "requires you to be logged in to download it"})
        key = secrets.token_hex(8)
        with self._lock:
            self._blobs[key] = f.data
        location = self.redirect_to or (
            f"{self.storage_url}/model/{key}/{quote(f.name, safe='')}"
            f"?X-Amz-Expires=3600&X-Amz-Signature={key}")
        return web.Response(status=307, headers={"Location": location})

    async def _storage(self, request: web.Request) -> web.StreamResponse:
        self._record(request, "storage")
        m = re.fullmatch(r"/model/([0-9a-f]+)/.*", request.path)
        data = self._blobs.get(m.group(1)) if m else None
        if data is None:
            return web.Response(status=403, text="<Error>AccessDenied</Error>")
        size = len(data)
        start, end, status = 0, size, 200
        headers = {"Accept-Ranges": "bytes", "ETag": '"' + hashlib.md5(data).hexdigest() + '"'}
        rng = _RANGE_RE.match(request.headers.get("Range", ""))
        if rng and (rng.group(1) or rng.group(2)):
            if rng.group(1):
                start = int(rng.group(1))
                end = min(size, int(rng.group(2)) + 1) if rng.group(2) else size
            else:
                start = max(0, size - int(rng.group(2)))
            if start >= size or start >= end:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        pos = start
        while request.method != "HEAD" and pos < end:
            n = min(end - pos, 64 << 10, self.rate or end)
            try:
                await resp.write(data[pos:pos + n])
            except (ConnectionError, RuntimeError):
                return resp
            pos += n
            with self._lock:
                self.bytes_served += n
            if self.rate:
                await asyncio.sleep(n / self.rate)
        await resp.write_eof()
        return resp


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")
