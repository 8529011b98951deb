"""OpenAI-compatible HTTP endpoints (vLLM, llama-server, Ollama, LM Studio) over httpx + SSE.

The API key goes only into the ``Authorization`` header: it is never logged, never part of a
model id, and scrubbed from every error message (as is any ``user:password@`` in the URL).

The server is not trusted. Everything it sends is bounded: one SSE line (:data:`MAX_LINE_BYTES`),
one answer's body (:data:`MAX_ANSWER_BYTES`), the part of an error body read
(:data:`MAX_ERROR_BYTES`), the model list (:data:`MAX_LIST_BYTES`, :data:`MAX_LIST_MODELS`);
silence (:data:`READ_TIMEOUT`) and a whole answer (:data:`ANSWER_DEADLINE`) are timed;
``max_tokens`` is enforced here too (the stream is closed after that many text deltas, whatever
the server does). The key is replaced by ``***`` in streamed text (also when split across
deltas; keys shorter than :data:`MIN_REDACTED_KEY` are not, they would blank ordinary words)
and in anything shown from the server (with any run of half the key or more). Text shown from
the server is one line, control characters escaped, cut short.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from tui.runtime.backends.base import BackendStats, Emit
from tui.runtime.errors import EndpointError, LoadError
from tui.runtime.stops import StopMatcher
from tui.runtime.types import GenParams, Message, ModelSpec, redact_url
from tui.terminal_text import clean_line

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 120.0  # silence between two reads (a big prompt can take a while to start)
ANSWER_DEADLINE = 1800.0  # one whole answer, however slowly the server trickles it
LIST_DEADLINE = 30.0  # GET /v1/models
MAX_LINE_BYTES = 1 << 20  # one SSE line (a stream event)
MAX_ANSWER_BYTES = 64 << 20  # one answer's body
MAX_ERROR_BYTES = 64 << 10  # read of an error body (only its start is shown)
MAX_LIST_BYTES = 4 << 20  # the model list's body (parsed whole: kept small)
MAX_LIST_MODELS = 10_000  # entries in the model list
MIN_REDACTED_KEY = 8  # shorter keys ("EMPTY", "ollama") are not blanked out of answers
SHOWN_CHARS = 160  # text from the server in a message

_NEWLINE = re.compile(rb"\r\n|\r|\n")


def api_base(base_url: str) -> str:
    """``http://host:8000`` or ``http://host:8000/v1`` → ``http://host:8000/v1``."""
    base = base_url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def _headers(api_key: str | None) -> dict[str, str]:
    # identity: a compressed body could inflate far past what was received
    headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _fragments(key: str) -> list[str]:
    """The key, then every run of half of it or more (at least 8 characters) to blank out."""
    size = max(8, -(-len(key) // 2))
    if size >= len(key):
        return [key]
    return [key, *(key[i : i + size] for i in range(len(key) - size + 1))]


def _scrub(text: str, secrets: Sequence[str | None], limit: int = SHOWN_CHARS) -> str:
    """Text from a server or an exception made fit to show: secrets (and half-key runs)
    replaced by ``***``, one line, control characters escaped, at most ``limit`` characters."""
    for secret in secrets:
        if secret:
            for fragment in _fragments(secret):
                text = text.replace(fragment, "***")
    return clean_line(" ".join(text.split()), limit)


def _describe(exc: Exception, url: str, api_key: str | None, silence: float | None = None
              ) -> str:
    where = redact_url(url)
    if isinstance(exc, httpx.ConnectError):
        return f"cannot reach {where}: connection refused or host unknown"
    if isinstance(exc, httpx.ReadTimeout):
        return f"{where} sent nothing for {silence or READ_TIMEOUT:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"{where} timed out ({type(exc).__name__})"
    return f"{where}: {type(exc).__name__}: {_scrub(str(exc), [api_key])}"


def _body(response: httpx.Response, limit: int, started: float, seconds: float, what: str
          ) -> Iterator[bytes]:
    """The body's chunks; an error once more than ``limit`` bytes came, or ``seconds`` passed
    since ``started`` (``time.monotonic()``)."""
    total = 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > limit:
            raise EndpointError(
                f"{what} is larger than {_mib(limit)}; stopped reading",
                hint="is this an OpenAI-compatible server?",
            )
        if time.monotonic() - started > seconds:
            raise EndpointError(f"{what} took longer than {seconds:g} s; gave up")
        yield chunk


def _error_detail(response: httpx.Response, api_key: str | None) -> str:
    """The start of an error body, scrubbed and shortened (never more than
    :data:`MAX_ERROR_BYTES` read)."""
    data = bytearray()
    with contextlib.suppress(httpx.HTTPError, OSError):
        for chunk in response.iter_bytes():
            data += chunk[: MAX_ERROR_BYTES - len(data)]
            if len(data) >= MAX_ERROR_BYTES:
                break
    return _scrub(data.decode("utf-8", "replace"), [api_key], 120)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n / 1024:g} KiB"


def list_models(base_url: str, api_key: str | None = None, *, timeout: float = 10.0) -> list[str]:
    """Model names an endpoint serves (``GET /v1/models``), at most :data:`MAX_LIST_MODELS`
    from a body of at most :data:`MAX_LIST_BYTES`, within :data:`LIST_DEADLINE` seconds."""
    url = api_base(base_url) + "/models"
    where = redact_url(url)
    started = time.monotonic()
    try:
        with httpx.stream(
            "GET", url, headers=_headers(api_key),
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
        ) as response:
            if response.status_code in (401, 403):
                raise EndpointError(
                    f"{where} refused the request (HTTP {response.status_code})",
                    hint="check the API key",
                )
            if response.status_code >= 400:
                raise EndpointError(f"{where} answered HTTP {response.status_code}")
            raw = b"".join(_body(response, MAX_LIST_BYTES, started, LIST_DEADLINE,
                                 f"the model list of {where}"))
    except httpx.HTTPError as exc:
        raise EndpointError(_describe(exc, url, api_key, timeout)) from None
    try:
        items = json.loads(raw)["data"]
        if not isinstance(items, list):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):
        raise EndpointError(
            f"{where} did not answer an OpenAI model list",
            hint="is this an OpenAI-compatible server? the base URL usually ends in :PORT or /v1",
        ) from None
    if len(items) > MAX_LIST_MODELS:
        raise EndpointError(f"{where} lists {len(items)} models; more than {MAX_LIST_MODELS} "
                            "is not a model list ModelDeck accepts")
    names = []
    for item in items:
        name = item.get("id") if isinstance(item, dict) else None
        if isinstance(name, str | int | float) and not isinstance(name, bool):
            names.append(str(name))
    return names


def shown_names(names: Sequence[str], api_key: str | None = None, count: int = 8) -> str:
    """The first ``count`` model names of a server, fit to show in a message."""
    shown = ", ".join(_scrub(n, [api_key], 80) for n in names[:count])
    return shown + (" …" if len(names) > count else "")


class _Redactor:
    """Replaces the API key in streamed text with ``***``, also when the key is split across
    deltas: a tail that could be the start of the key is held back until it is not."""

    def __init__(self, key: str | None, emit: Emit) -> None:
        self.key = key if key and len(key) >= MIN_REDACTED_KEY else ""
        self.emit = emit
        self.pending = ""

    def feed(self, text: str) -> None:
        key = self.key
        if not key:
            self.emit(text)
            return
        buf = (self.pending + text).replace(key, "***")
        hold = next((n for n in range(min(len(key) - 1, len(buf)), 0, -1)
                     if buf.endswith(key[:n])), 0)
        if len(buf) > hold:
            self.emit(buf[: len(buf) - hold])
        self.pending = buf[len(buf) - hold :]

    def flush(self) -> None:
        """Emit a held-back tail (the stream ended before it became the key)."""
        if self.pending:
            self.emit(self.pending)
        self.pending = ""


def _lines(chunks: Iterator[bytes], where: str) -> Iterator[str]:
    """The lines of an event stream (``\\n``, ``\\r\\n`` or ``\\r``), each at most
    :data:`MAX_LINE_BYTES`: a longer one is an error, found before more of it is held."""
    buf = b""
    for chunk in chunks:
        *lines, buf = _NEWLINE.split(buf + chunk)
        for line in [*lines, buf]:
            if len(line) > MAX_LINE_BYTES:
                raise EndpointError(
                    f"{where} sent a stream line longer than {_mib(MAX_LINE_BYTES)}",
                    hint="is this an OpenAI-compatible server?",
                )
        for line in lines:
            yield line.decode("utf-8", "replace")
    if buf:
        yield buf.decode("utf-8", "replace")


def _count(value: Any) -> int | None:
    """A token count from the server, if it is a plausible one."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 31:
        return value
    return None


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
        key = self.spec.api_key
        names = list_models(self.spec.base_url or "", key)
        if names and self.spec.remote_model not in names:
            raise LoadError(
                f"{redact_url(self.base)} does not serve {self.spec.remote_model!r}",
                hint=f"it serves: {shown_names(names, key)}",
            )
        self._client = httpx.Client(headers=_headers(key))

    def generate(
        self,
        messages: Sequence[Message],
        params: GenParams,
        emit: Emit,
        cancel: threading.Event,
    ) -> BackendStats:
        """Stream one answer from ``POST /v1/chat/completions``.

        Stops after ``params.max_tokens`` text deltas (closing the stream) even if the server
        goes on; fails on silence longer than :data:`READ_TIMEOUT`, an answer longer than
        :data:`ANSWER_DEADLINE` or :data:`MAX_ANSWER_BYTES`, a line over :data:`MAX_LINE_BYTES`.
        """
        client = self._client
        if client is None:
            raise EndpointError("endpoint is not connected")
        url = self.base + "/chat/completions"
        where = redact_url(url)
        body: dict[str, Any] = {
            "model": self.spec.remote_model,
            "messages": [{"role": m["role"], "content": m.get("content", "")} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        limit = params.max_tokens if params.max_tokens > 0 else None
        if limit:
            body["max_tokens"] = limit
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        key = self.spec.api_key
        stops = StopMatcher(params.stop, emit)
        redactor = _Redactor(key, stops.feed)
        chunks = 0
        seen_first = False
        usage: dict[str, Any] = {}
        finish = "stop"
        started = time.monotonic()
        timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        try:
            with client.stream("POST", url, json=body, timeout=timeout) as response:
                with self._lock:
                    self._response = response
                if response.status_code >= 400:
                    raise EndpointError(f"{where} answered HTTP {response.status_code}: "
                                        f"{_error_detail(response, key)}")
                raw = _body(response, MAX_ANSWER_BYTES, started, ANSWER_DEADLINE,
                            f"the answer from {where}")
                for line in _lines(raw, where):
                    if cancel.is_set():
                        finish = "cancelled"
                        break
                    if not line or line.startswith(":"):
                        continue
                    if not line.startswith("data:"):
                        if line.startswith(("event:", "id:", "retry:")):
                            continue
                        raise EndpointError(
                            f"{where} sent something that is not a server-sent event",
                            hint="is this an OpenAI-compatible server?",
                        )
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    event = self._parse(data, where, key)
                    if isinstance(event.get("usage"), dict):
                        usage = event["usage"]
                    for text, reason in _choices(event, where):
                        if not seen_first and (text or reason):
                            seen_first = True
                            emit("")  # TTFT at the first token, even an immediate end
                        if text:
                            chunks += 1
                            redactor.feed(text)
                        if reason:
                            finish = clean_line(reason, 20)
                    if stops.stopped:
                        finish = "stop"
                        break
                    if limit is not None and chunks >= limit:
                        finish = "length"  # enforced here too: the stream is closed below
                        break
        except EndpointError:
            raise
        except httpx.ReadTimeout:
            if not cancel.is_set():
                raise EndpointError(
                    f"{where} sent nothing for {READ_TIMEOUT:g} s (after {chunks} chunks); "
                    "gave up", hint="is the server overloaded or stuck?",
                ) from None
            finish = "cancelled"
        except (httpx.HTTPError, OSError, RuntimeError) as exc:
            if cancel.is_set():
                finish = "cancelled"
            else:
                raise EndpointError(
                    f"stream from {where} broke after {chunks} chunks: "
                    + _describe(exc, url, key).split(": ", 1)[-1]
                ) from None
        finally:
            with self._lock:
                self._response = None
        if cancel.is_set():
            finish = "cancelled"
        redactor.flush()
        stops.flush()
        prompt = _count(usage.get("prompt_tokens")) or 0
        completion = _count(usage.get("completion_tokens"))
        if completion is None or (limit is not None and completion > limit):
            completion = chunks
        return BackendStats(prompt, completion, "cancelled" if finish == "cancelled" else finish)

    @staticmethod
    def _parse(data: str, where: str, key: str | None) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):
            raise EndpointError(
                f"{where} sent a stream event that is not JSON",
                hint="is this an OpenAI-compatible server?",
            ) from None
        if not isinstance(event, dict):
            raise EndpointError(f"{where} sent a stream event that is not an object")
        if "error" in event:
            err = event["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            raise EndpointError(f"{where} reported an error: {_scrub(str(msg), [key])}")
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


def _choices(event: dict[str, Any], where: str) -> Iterator[tuple[str, str | None]]:
    """``(text, finish_reason)`` of each choice of a stream event (text must be a string)."""
    choices = event.get("choices") or []
    if not isinstance(choices, list):
        raise EndpointError(f"{where} sent a stream event whose choices are not a list")
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        text = (delta.get("content") if isinstance(delta, dict) else None) or choice.get("text")
        if text is not None and not isinstance(text, str):
            raise EndpointError(f"{where} sent answer text that is not a string")
        reason = choice.get("finish_reason")
        yield text or "", str(reason) if reason else None
