"""Remote engines in ``modeldeck serve``: ``<remote>/<model-id>`` requests proxied to the
registered OpenAI-compatible upstream, and ``GET /api/remotes``.

A proxied request keeps the client's JSON body except ``model`` (rewritten to the upstream's
id); the client's ``Authorization`` is never forwarded: the remote's own key is read from its
variable at request time and added here. A streamed answer is passed through chunk by chunk as
the upstream sends it; a client that disconnects closes the upstream request at once (the
upstream sees its connection close). Upstream errors keep their status in OpenAI's shape, with
the upstream's message cleaned and the key blanked; an upstream that cannot be reached is 502.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import APIRouter, Request
from starlette.responses import Response

from tui.errors import InvalidInputError
from tui.remote.models import ModelCache, RemoteModels, headers, scrub
from tui.remote.registry import Remote, load_remotes, remotes_path, split_model
from tui.serve.errors import ApiError
from tui.serve.sse import DisconnectWatch, EventStream, event

log = logging.getLogger("tui.serve")
router = APIRouter(prefix="/api", tags=["Management"])

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 300.0  # silence from the upstream between two reads
MAX_ANSWER = 64 << 20  # bytes of one answer (whole or streamed)
MAX_ERROR = 64 << 10  # bytes of an upstream error body read
T = TypeVar("T")


class RemoteHub:
    """The registry (re-read when its file changes) and the model lists of one server."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.cache = ModelCache()
        self._stamp: Any = None
        self._remotes: dict[str, Remote] = {}
        self.warned: dict[str, float] = {}

    def remotes(self) -> dict[str, Remote]:
        """The registered remotes; a registry that cannot be read is one warning and none."""
        try:
            st = os.stat(remotes_path(self.state_dir))
            stamp: Any = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._remotes = load_remotes(self.state_dir) if stamp else {}
            except InvalidInputError as exc:
                log.warning("remotes ignored: %s", exc)
                self._remotes = {}
        return self._remotes

    async def lists(self) -> list[RemoteModels]:
        """Every remote's model list (cached; one warning per unreachable remote fetch)."""
        results = await self.cache.all(self.remotes())
        return results


def hub_of(request: Request) -> RemoteHub:
    state = request.app.state
    hub = getattr(state, "remote_hub", None)
    if hub is None:
        hub = state.remote_hub = RemoteHub(state.serve.services.settings.state_dir)
    return hub


def target_of(request: Request, model: Any) -> tuple[Remote, str] | None:
    """``(remote, upstream id)`` when ``model`` names a registered remote's model."""
    if not isinstance(model, str) or "/" not in model:
        return None
    return split_model(model, hub_of(request).remotes())


async def remote_model_objects(request: Request) -> list[dict[str, Any]]:
    """``/v1/models`` entries of the reachable remotes (``owned_by`` the remote's name)."""
    out = []
    hub = hub_of(request)
    for result in await hub.lists():
        if result.error and hub.warned.get(result.remote.name) != result.fetched_at:
            hub.warned[result.remote.name] = result.fetched_at  # once per fetch, not per call
            log.warning("remote %s is unreachable, its models are not listed: %s",
                        result.remote.name, result.error)
        out.extend({"id": f"{result.remote.name}/{model}", "object": "model", "created": 0,
                    "owned_by": result.remote.name} for model in result.ids)
    return out


async def remote_model_object(request: Request, model: str) -> dict[str, Any] | None:
    """The ``/v1/models/<remote>/<id>`` entry, when the remote lists that id."""
    target = target_of(request, model)
    if target is None:
        return None
    result = await hub_of(request).cache.get(target[0])
    if target[1] not in result.ids:
        return None
    return {"id": model, "object": "model", "created": 0, "owned_by": target[0].name}


@router.get("/remotes", summary="Registered remote engines and their models")
async def list_remotes(request: Request) -> Response:
    data = [{"name": r.remote.name, "url": r.remote.url, "key_env": r.remote.key_env,
             "reachable": r.reachable, "error": r.error, "skipped": r.skipped,
             "models": [f"{r.remote.name}/{m}" for m in r.ids],
             "metrics_url": r.remote.metrics_url}
            for r in await hub_of(request).lists()]
    return _json({"remotes": data})


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode(),
                    status_code=status, media_type="application/json")


# -- the proxy --------------------------------------------------------------------------------


class _Gone(Exception):
    """The client disconnected."""


async def _unless_gone(aw: Awaitable[T], gone: asyncio.Future[Any]) -> T:
    """``await aw``, or _Gone as soon as the client disconnects (``aw`` is cancelled)."""
    task = asyncio.ensure_future(aw)
    await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except BaseException:
        pass
    raise _Gone


async def proxy(request: Request, target: tuple[Remote, str], path: str,
                endpoint: str) -> Response:
    """Forward one request to ``target``'s ``/v1/<path>``."""
    remote, upstream_id = target
    model = f"{remote.name}/{upstream_id}"
    metrics = request.app.state.serve.metrics
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "the body is not valid JSON", code="invalid_json") from None
    body["model"] = upstream_id
    stream = body.get("stream") is True
    client = httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(
        READ_TIMEOUT, connect=CONNECT_TIMEOUT))
    upstream = client.build_request(
        "POST", f"{remote.api_base}/{path}",
        content=json.dumps(body, ensure_ascii=True).encode(),
        headers={**headers(remote), "Content-Type": "application/json",
                 "Accept": "text/event-stream" if stream else "application/json"})
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    watch = DisconnectWatch(request.receive,
                            lambda: gone.done() or gone.set_result(None))
    handed_over = False
    response: httpx.Response | None = None
    try:
        response = await _unless_gone(client.send(upstream, stream=True), gone)
        kind = response.headers.get("content-type", "")
        if response.status_code >= 300:
            error = await _upstream_error(response, remote, gone)
            metrics.answered(endpoint, model, error.status)
            return error.response()
        if stream and kind.startswith("text/event-stream"):
            handed_over = True
            metrics.answered(endpoint, model, 200)
            return EventStream(_pass_through(client, response, remote, gone, watch))
        raw = await _unless_gone(_read(response, MAX_ANSWER), gone)
        try:
            answer = json.loads(raw)
        except (ValueError, RecursionError):
            raise ApiError(502, f"remote {remote.name} answered something that is not JSON",
                           type="server_error", code="bad_upstream") from None
        metrics.answered(endpoint, model, response.status_code)
        return _json(answer, response.status_code)
    except _Gone:
        metrics.answered(endpoint, model, 499)
        return Response(status_code=499)
    except ApiError as exc:
        metrics.answered(endpoint, model, exc.status)
        raise
    except httpx.HTTPError as exc:
        metrics.answered(endpoint, model, 502)
        raise _unreachable(remote, exc) from None
    finally:
        if not handed_over:
            watch.close()
            if response is not None:
                await response.aclose()
            await client.aclose()


async def _pass_through(client: httpx.AsyncClient, response: httpx.Response, remote: Remote,
                        gone: asyncio.Future[Any], watch: DisconnectWatch
                        ) -> AsyncIterator[bytes]:
    """The upstream's SSE bytes as they come; an error after the start is a last event."""
    size = 0
    chunks = response.aiter_raw()
    try:
        while True:
            try:
                chunk = await _unless_gone(chunks.__anext__(), gone)
            except StopAsyncIteration:
                return
            size += len(chunk)
            if size > MAX_ANSWER:
                yield event(ApiError(502, f"remote {remote.name}'s answer is larger than "
                                     f"{MAX_ANSWER >> 20} MiB", type="server_error",
                                     code="bad_upstream").payload())
                return
            yield chunk
    except _Gone:
        return
    except httpx.HTTPError as exc:
        yield event(_unreachable(remote, exc).payload())
    finally:
        watch.close()
        await response.aclose()  # closes the upstream connection: the upstream sees it
        await client.aclose()


async def _read(response: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > limit:
            raise ApiError(502, f"the upstream's answer is larger than {limit >> 20} MiB",
                           type="server_error", code="bad_upstream")
    return bytes(body)


async def _upstream_error(response: httpx.Response, remote: Remote,
                          gone: asyncio.Future[Any]) -> ApiError:
    """The upstream's error in OpenAI's shape: its status (5xx/4xx) and cleaned message."""
    body = bytearray()
    try:
        async def head() -> None:
            async for chunk in response.aiter_raw():
                body.extend(chunk)
                if len(body) > MAX_ERROR:
                    return
        await _unless_gone(head(), gone)
    except httpx.HTTPError:
        pass
    status = response.status_code if 400 <= response.status_code <= 599 else 502
    message, code, kind = "", None, "server_error" if status >= 500 else "invalid_request_error"
    try:
        data = json.loads(bytes(body[:MAX_ERROR]))
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            message = err.get("message") if isinstance(err.get("message"), str) else ""
            code = err.get("code") if isinstance(err.get("code"), str) else None
        elif isinstance(err, str):
            message = err
        elif isinstance(data, dict) and isinstance(data.get("detail"), str):
            message = data["detail"]
    except (ValueError, RecursionError):
        message = bytes(body[:400]).decode("utf-8", "replace")
    text = scrub(message, remote) or f"HTTP {response.status_code}"
    return ApiError(status, f"remote {remote.name}: {text}", type=kind,
                    code=scrub(code, remote, 60) if code else "upstream_error")


def _unreachable(remote: Remote, exc: Exception) -> ApiError:
    if isinstance(exc, httpx.ConnectError):
        why = "connection refused or host unknown"
    elif isinstance(exc, httpx.TimeoutException):
        why = "it did not answer in time"
    else:
        why = scrub(f"{type(exc).__name__}: {exc}", remote, 120)
    return ApiError(502, f"remote {remote.name} ({remote.url}) cannot be reached: {why}",
                    type="server_error", code="upstream_unreachable")


# -- managed engines --------------------------------------------------------------------------

TOKEN_HEADER = "x-modeldeck-engine-token"


def engines_of(request: Request) -> Any:
    """The server's :class:`tui.remote.engine.Engines`, once the caller showed the engine
    token (``engine.token`` in the state dir: only its owner can read it). Starting a command
    is more than the API key allows."""
    from tui.remote.engine import Engines, token_ok

    serve = request.app.state.serve
    state_dir = serve.services.settings.state_dir
    if not token_ok(state_dir, request.headers.get(TOKEN_HEADER)):
        raise ApiError(403, "managing engines needs the engine token of this server's state "
                       "dir (the modeldeck CLI of the same user sends it)",
                       type="permission_error", code="engine_token")
    engines = getattr(request.app.state, "engines", None)
    if engines is None:
        engines = request.app.state.engines = Engines(state_dir, serve.spawn)
    return engines


@router.get("/engines", summary="Managed engines (needs the engine token)")
async def list_engines(request: Request) -> Response:
    engines = engines_of(request)
    return _json({"engines": [e.as_dict() for e in engines.engines.values()]})


@router.post("/engines", summary="Start a managed engine (needs the engine token)")
async def start_engine(request: Request) -> Response:
    engines = engines_of(request)
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "the body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    name, command = body.get("name"), body.get("command")
    url, key_env = body.get("url"), body.get("key_env")
    if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
        raise ApiError(400, "command must be a list of strings", param="command")
    if url is not None and not isinstance(url, str):
        raise ApiError(400, "url must be a string", param="url")
    from tui.remote.registry import check_env_name

    try:
        if key_env is not None:
            check_env_name(key_env)
        engine = engines.start(name, command, url, key_env)
    except InvalidInputError as exc:
        raise ApiError(400, str(exc)) from None
    return _json(engine.as_dict(), 202)


@router.delete("/engines/{name}", summary="Stop a managed engine (needs the engine token)")
async def stop_engine(name: str, request: Request) -> Response:
    engines = engines_of(request)
    engine = await engines.stop(name)
    return _json(engine.as_dict())
