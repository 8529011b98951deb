"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Every failure a client sees is one line that says what is wrong and what to do, with the
status OpenAI's clients expect (400, 401, 404, 413, 429 with ``Retry-After``, 5xx); never a
traceback or a secret. ``x-should-retry: false`` tells the official clients not to retry a
failure that retrying cannot fix (a model that does not fit, a file that cannot load).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.responses import Response

from tui.download.errors import redact
from tui.errors import InvalidInputError, ModelDeckError, NotFoundError
from tui.runtime.errors import (
    AnswerStoppedError,
    BackendMissingError,
    ContextLengthError,
    EmbeddingError,
    LoadError,
    ModelBusyError,
    NotAChatModelError,
    NotLoadedError,
    QueueFullError,
    TemplateError,
    WontFitError,
)
from tui.terminal_text import clean_line

log = logging.getLogger("tui.serve")

MAX_MESSAGE = 500


class ApiError(Exception):
    """A failure to answer with ``status`` and OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = clean_line(" ".join(message.split()), MAX_MESSAGE)
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def payload(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def body(self) -> bytes:
        return json.dumps(self.payload(), ensure_ascii=True).encode()

    def response(self) -> Response:
        return Response(self.body(), status_code=self.status, headers=self.headers,
                        media_type="application/json")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


NO_RETRY = {"x-should-retry": "false"}


def api_error(exc: BaseException) -> ApiError:
    """The HTTP answer for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    text = str(exc)
    if isinstance(exc, QueueFullError):
        return ApiError(429, text, type="rate_limit_error", code="rate_limit_exceeded",
                        headers={"retry-after": str(exc.retry_after)})
    if isinstance(exc, ModelBusyError):
        return ApiError(503, text, type="server_error", code="model_busy",
                        headers={"retry-after": "1"})
    if isinstance(exc, WontFitError):
        return ApiError(507, text, type="server_error", code="insufficient_memory",
                        headers=NO_RETRY)
    if isinstance(exc, LoadError | BackendMissingError):
        return ApiError(500, text, type="server_error", code="model_load_failed",
                        headers=NO_RETRY)
    if isinstance(exc, ContextLengthError):
        return ApiError(400, text, code="context_length_exceeded")
    if isinstance(exc, EmbeddingError):
        return ApiError(400, text, code="embeddings_not_supported")
    if isinstance(exc, NotAChatModelError):
        return ApiError(400, text, code="not_a_chat_model")
    if isinstance(exc, TemplateError):
        return ApiError(400, text, code="chat_template_error")
    if isinstance(exc, AnswerStoppedError | NotLoadedError):
        return ApiError(503, text, type="server_error", code="model_unloaded")
    if isinstance(exc, NotFoundError):
        return ApiError(404, text, code="not_found")
    if isinstance(exc, InvalidInputError):
        return ApiError(400, text)
    if isinstance(exc, ModelDeckError):
        return ApiError(500, text, type="server_error", code="generation_failed")
    log.error("internal error: %s", redact(" ".join(f"{type(exc).__name__}: {exc}".split()))[:300])
    return ApiError(500, f"internal error ({type(exc).__name__}); the server log has the details",
                    type="server_error", code="internal_error")
