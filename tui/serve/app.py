"""The ASGI app: the OpenAI routes, the management routes, ``/metrics`` and ``/docs``.

Layers, outside in: CORS (only with an allow-list, ``serve_cors_origins``), the API key
(:class:`tui.serve.auth.AuthMiddleware`, when a key is set), the body cap (a body larger than
:data:`tui.serve.context.MAX_BODY` is answered 413 before anything reads it), then FastAPI.
Every error a client sees is in OpenAI's shape (:mod:`tui.serve.errors`), validation errors
included (400, one line naming the field).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from tui import __version__
from tui.errors import ModelDeckError
from tui.serve import manage_api, openai_api, remote_api
from tui.serve.auth import AuthMiddleware
from tui.serve.context import MAX_BODY, ServeState
from tui.serve.errors import ApiError, api_error
from tui.serve.metrics import CONTENT_TYPE, ServeMetrics
from tui.serve.stats import ServeStats

DESCRIPTION = """\
ModelDeck's OpenAI-compatible API (`/v1`) over the models installed on this machine, and its
management API (`/api`): load and unload models, see what is loaded, download, delete,
resources. `model` is a ModelDeck id (`GET /v1/models`). With an API key set, send
`Authorization: Bearer <key>`.
"""


def create_app(
    services: Any,
    *,
    api_key: str | None = None,
    cors_origins: tuple[str, ...] = (),
    max_tokens: int | None = None,
    max_body: int = MAX_BODY,
) -> FastAPI:
    """The app over ``services`` (the same runtime and downloads as its host's)."""
    settings = services.settings
    metrics = ServeMetrics(services)
    app = FastAPI(title="ModelDeck", version=__version__, description=DESCRIPTION,
                  docs_url="/docs", redoc_url=None, openapi_url="/openapi.json")
    app.state.serve = ServeState(services, metrics,
                                 max_tokens=max_tokens or settings.serve_max_tokens,
                                 max_body=max_body)
    app.include_router(openai_api.router)
    app.include_router(manage_api.router)
    app.include_router(remote_api.router)

    @app.get("/metrics", tags=["Management"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ModelDeckError, _api_error)  # handled here, never re-raised
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _any_error)
    app.add_middleware(InFlight, stats=metrics.stats)
    app.add_middleware(BodyLimit, limit=max_body)
    if api_key is not None:
        app.add_middleware(AuthMiddleware, key=api_key)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["authorization", "content-type"])
    return app


def _error_response(request: Request, error: ApiError) -> Response:
    """``error``'s response, remembered as the server's last error (the dashboard shows it)."""
    state = getattr(request.app.state, "serve", None)
    if state is not None:
        state.metrics.stats.error(error.status, error.message)
    return error.response()


async def _api_error(request: Request, exc: Exception) -> Response:
    return _error_response(request, api_error(exc))


async def _any_error(request: Request, exc: Exception) -> Response:
    """A bug: one line to the client and to the log (Starlette then re-raises it to the
    server, whose log the CLI keeps to one line too)."""
    return _error_response(request, api_error(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        error = ApiError(404, f"no such endpoint: {request.method} {request.url.path}",
                         code="not_found")
    elif exc.status_code == 405:
        error = ApiError(405, f"{request.method} is not allowed on {request.url.path}",
                         code="method_not_allowed")
    elif exc.status_code == 400:  # FastAPI could not parse the body at all
        error = ApiError(400, "the body could not be read as JSON (nested too deeply, or a "
                         "number too long?)", code="invalid_json")
    else:
        error = ApiError(exc.status_code, str(exc.detail))
    return _error_response(request, error)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _error_response(request, validation_error(exc.errors()))


def validation_error(errors: Any) -> ApiError:
    """The first of pydantic's errors as one line naming the field."""
    first = next(iter(errors), None) or {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return ApiError(400, "the body is not valid JSON", code="invalid_json")
    where = ".".join(loc)
    message = first.get("msg", "invalid request")
    if not where:
        return ApiError(400, f"the body must be a JSON object: {message}")
    return ApiError(400, f"{where}: {message}", param=where)


class InFlight:
    """Count the API requests (``/v1/…``) from arrival to the end of their answer."""

    def __init__(self, app: Any, stats: ServeStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        self.stats.arrived()
        try:
            await self.app(scope, receive, send)
        finally:
            self.stats.left()


class BodyLimit:
    """Read a request's body up to ``limit`` bytes before the app does: 413 beyond it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await self._refuse(send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        given = False

        async def replay() -> Any:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        error = ApiError(413, f"the request body is larger than {self.limit / (1 << 20):g} MiB",
                         code="body_too_large")
        body = error.body()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})
