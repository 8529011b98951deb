"""OpenAI-compatible HTTP endpoints (vLLM, llama-server, Ollama, LM Studio) over httpx + SSE.

The API key goes only into the ``Authorization`` header: it is never logged, never part of a
model id, and scrubbed from every error message (as is any ``user:password@`` in the URL).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Sequence
from typing import Any

import httpx

from tui.runtime.backends.base import BackendStats, Emit
from tui.runtime.errors import EndpointError, LoadError
from tui.runtime.stops import StopMatcher
from tui.runtime.types import GenParams, Message, ModelSpec, redact_url

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 120.0  # between two chunks of a stream (a big prompt can take a while)


def api_base(base_url: str) -> str:
    """``http://host:8000`` or ``http://host:8000/v1`` → ``http://host:8000/v1``."""
    base = base_url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _scrub(text: str, secrets: Sequence[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return " ".join(text.split())[:200]


def _describe(exc: Exception, url: str, api_key: str | None) -> str:
    where = redact_url(url)
    if isinstance(exc, httpx.ConnectError):
        return f"cannot reach {where}: connection refused or host unknown"
    if isinstance(exc, httpx.TimeoutException):
        return f"{where} timed out ({type(exc).__name__})"
    return f"{where}: {type(exc).__name__}: {_scrub(str(exc), [api_key])}"


def list_models(base_url: str, api_key: str | None = None, *, timeout: float = 10.0) -> list[str]:
    """Model names an endpoint serves (``GET /v1/models``)."""
    url = api_base(base_url) + "/models"
    try:
        response = httpx.get(
            url, headers=_headers(api_key), timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT)
        )
    except httpx.HTTPError as exc:
        raise EndpointError(_describe(exc, url, api_key)) from None
    if response.status_code in (401, 403):
        raise EndpointError(
            f"{redact_url(url)} refused the request (HTTP {response.status_code})",
            hint="check the API key",
        )
    if response.status_code >= 400:
        raise EndpointError(f"{redact_url(url)} answered HTTP {response.status_code}")
    try:
        data = response.json()
        return [str(item["id"]) for item in data["data"]]
    except (ValueError, KeyError, TypeError):
        raise EndpointError(
            f"{redact_url(url)} did not answer an OpenAI model list",
            hint="is this an OpenAI-compatible server? the base URL usually ends in :PORT or /v1",
        ) from None


class OpenAIBackend:
    """A model served by an OpenAI-compatible endpoint. ``load`` only checks the server."""

    def __init__(self, spec: ModelSpec) -> None:
        assert spec.base_url and spec.remote_model
        self.spec = spec
        self.base = api_base(spec.base_url)
        self._response: httpx.Response | None = None
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None

    def load(self) -> None:
        """Check that the endpoint answers and serves the model."""
        names = list_models(self.spec.base_url or "", self.spec.api_key)
        if names and self.spec.remote_model not in names:
            shown = ", ".join(names[:8]) + (" …" if len(names) > 8 else "")
            raise LoadError(
                f"{redact_url(self.base)} does not serve {self.spec.remote_model!r}",
                hint=f"it serves: {shown}",
            )
        self._client = httpx.Client(
            headers=_headers(self.spec.api_key),
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        )

    def generate(
        self,
        messages: Sequence[Message],
        params: GenParams,
        emit: Emit,
        cancel: threading.Event,
    ) -> BackendStats:
        """Stream one answer from ``POST /v1/chat/completions``."""
        client = self._client
        if client is None:
            raise EndpointError("endpoint is not connected")
        url = self.base + "/chat/completions"
        body: dict[str, Any] = {
            "model": self.spec.remote_model,
            "messages": [{"role": m["role"], "content": m.get("content", "")} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.max_tokens > 0:
            body["max_tokens"] = params.max_tokens
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        key = self.spec.api_key
        stops = StopMatcher(params.stop, emit)
        chunks = 0
        seen_first = False
        usage: dict[str, Any] = {}
        finish = "stop"
        try:
            with client.stream("POST", url, json=body) as response:
                with self._lock:
                    self._response = response
                if response.status_code >= 400:
                    detail = _scrub(response.read().decode("utf-8", "replace"), [key])
                    raise EndpointError(
                        f"{redact_url(url)} answered HTTP {response.status_code}: {detail[:120]}"
                    )
                for line in response.iter_lines():
                    if cancel.is_set():
                        finish = "cancelled"
                        break
                    if not line or line.startswith(":"):
                        continue
                    if not line.startswith("data:"):
                        if line.startswith(("event:", "id:", "retry:")):
                            continue
                        raise EndpointError(
                            f"{redact_url(url)} sent something that is not a server-sent event",
                            hint="is this an OpenAI-compatible server?",
                        )
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    event = self._parse(data, url)
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices") or []:
                        delta = choice.get("delta") or {}
                        text = delta.get("content") or choice.get("text") or ""
                        if not seen_first and (text or choice.get("finish_reason")):
                            seen_first = True
                            emit("")  # TTFT at the first token, even an immediate end
                        if text:
                            chunks += 1
                            stops.feed(text)
                        if choice.get("finish_reason"):
                            finish = str(choice["finish_reason"])
                    if stops.stopped:
                        finish = "stop"
                        break
        except EndpointError:
            raise
        except (httpx.HTTPError, OSError, RuntimeError) as exc:
            if cancel.is_set():
                finish = "cancelled"
            else:
                raise EndpointError(
                    f"stream from {redact_url(url)} broke after {chunks} chunks: "
                    + _describe(exc, url, key).split(": ", 1)[-1]
                ) from None
        finally:
            with self._lock:
                self._response = None
        if cancel.is_set():
            finish = "cancelled"
        stops.flush()
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or chunks)
        return BackendStats(prompt, completion, "cancelled" if finish == "cancelled" else finish)

    @staticmethod
    def _parse(data: str, url: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError:
            raise EndpointError(
                f"{redact_url(url)} sent a stream event that is not JSON",
                hint="is this an OpenAI-compatible server?",
            ) from None
        if not isinstance(event, dict):
            raise EndpointError(f"{redact_url(url)} sent a stream event that is not an object")
        if "error" in event:
            err = event["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            text = " ".join(str(msg).split())[:160]
            raise EndpointError(f"{redact_url(url)} reported an error: {text}")
        return event

    def interrupt(self) -> None:
        """Close the response a cancelled stream is blocked reading."""
        with self._lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()

    def close(self) -> None:
        """Close the HTTP client."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
