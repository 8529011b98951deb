"""OpenAI-compatible HTTP endpoints (vLLM, llama-server, Ollama, LM Studio) over httpx + SSE.

The API key goes only into the ``Authorization`` header: it is never logged, never part of a
model id, and scrubbed from every error message (as is any ``user:password@`` in the URL).

The server is not trusted. Everything it sends is bounded: one SSE line (:data:`MAX_LINE_BYTES`),
one answer's body (:data:`MAX_ANSWER_BYTES`), the part of an error body read
(:data:`MAX_ERROR_BYTES`), the model list (:data:`MAX_LIST_BYTES`, :data:`MAX_LIST_MODELS`);
silence (:data:`READ_TIMEOUT`) and a whole answer (:data:`ANSWER_DEADLINE`) are timed;
``max_tokens`` is enforced here too (the stream is closed at a token past it, whatever the
server does). The key is replaced by ``***`` in streamed text (also when split across
deltas; keys shorter than :data:`MIN_REDACTED_KEY` are not, they would blank ordinary words)
and in anything shown from the server (with any run of half the key or more). Text shown from
the server is one line, control characters escaped, cut short.

Other servers are talked to as they are (llama.cpp's ``llama-server`` and ``llama_cpp.server``,
vLLM, Ollama, LM Studio, a LiteLLM proxy):

* **Token counts.** Without ``usage`` from the server (``stream_options.include_usage`` is
  asked for; ``llama_cpp.server`` ignores it), each stream chunk that carries text is one
  generated token, a ``""`` one included (llama-server builds that stream a chunk per token
  send ``""`` while a character's UTF-8 is incomplete); the chunk announcing the role and an
  end chunk without text are not. A
  ``usage`` below that count (a proxy's own guess) or above ``max_tokens`` is not believed.
  The answer's metrics say whether the numbers were ``reported`` or ``estimated``.
* **Cancel at once.** Each answer uses its own connection, whose socket is shut down from the
  cancelling thread (:meth:`OpenAIBackend.interrupt`): a read blocked on a silent server (a
  long prompt being processed) returns at once, and the server sees the connection closed.
* **The model list is a hint, never a gate.** A server streaming to someone else may not
  answer ``GET /v1/models`` until it is done (``llama_cpp.server`` serialises requests): load
  waits :data:`PROBE_TIMEOUT` for it, then goes on. A model name the list does not show is
  sent anyway (llama.cpp lists a file path and answers to any name); when the server answers
  "no such model", the error lists what it serves.
* **Errors say what they mean.** 401/403, and a 400 or 5xx whose body speaks of the API key
  or authentication (LiteLLM's ``Authentication Error``), raise :class:`EndpointAuthError`;
  429 says when to retry (``Retry-After``); other errors show the server's message.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from tui.runtime.backends.base import BackendStats, Emit
from tui.runtime.errors import EndpointError
from tui.runtime.stops import StopMatcher
from tui.runtime.types import GenParams, Message, ModelSpec, redact_url
from tui.terminal_text import clean_line

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 120.0  # silence between two reads (a big prompt can take a while to start)
ANSWER_DEADLINE = 1800.0  # one whole answer, however slowly the server trickles it
LIST_DEADLINE = 30.0  # GET /v1/models
PROBE_TIMEOUT = 3.0  # GET /v1/models at load and after "no such model" (a busy server waits)
MAX_LINE_BYTES = 1 << 20  # one SSE line (a stream event)
MAX_ANSWER_BYTES = 64 << 20  # one answer's body
MAX_ERROR_BYTES = 64 << 10  # read of an error body (only its start is shown)
MAX_LIST_BYTES = 4 << 20  # the model list's body (parsed whole: kept small)
MAX_LIST_MODELS = 10_000  # entries in the model list
MAX_RETRY_AFTER = 86_400  # seconds: a longer Retry-After is shown as this
MIN_REDACTED_KEY = 8  # shorter keys ("EMPTY", "ollama") are not blanked out of answers
SHOWN_CHARS = 160  # text from the server in a message

_NEWLINE = re.compile(rb"\r\n|\r|\n")
# what servers say about a refused key: LiteLLM's "Authentication Error, …" (with 400, 401 or
# 500), "AuthenticationError", "LiteLLM Virtual Key expected", OpenAI's "Incorrect API key
# provided", "invalid_api_key", "Invalid proxy server token passed", "Unauthorized"
_AUTH_TEXT = re.compile(
    r"auth(?:entication)?[ _-]?error|\bunauthori[sz]ed\b|\bapi[ _-]?key\b|\bapikey\b"
    r"|\bvirtual key\b"
    r"|\b(?:invalid|incorrect|expired|missing|malformed|revoked|no)\b(?:\s+[\w-]+){0,3}?"
    r"\s+(?:token|credentials?|bearer)\b",
    re.IGNORECASE,
)
_AUTH_FIELDS = {"auth_error", "authentication_error", "invalid_api_key", "unauthorized", "401"}
# "no such model": vLLM's "The model `x` does not exist", OpenAI's "model_not_found", Ollama's
# "model \"x\" not found", LiteLLM's "Invalid model name passed in model=x"
_MODEL_TEXT = re.compile(
    r"\bmodel\b.{0,200}?\b(?:not found|does not exist|doesn't exist|not available|unknown"
    r"|not served|no such)\b|\b(?:invalid|unknown|no such)\s+model\b|model_not_found",
    re.IGNORECASE | re.DOTALL,
)


class EndpointAuthError(EndpointError):
    """The server refused the API key (or wants one and none was sent)."""


class _NoList(EndpointError):
    """The model list did not come (silence, or an HTTP error that is not about the key)."""


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


def _error_body(response: httpx.Response) -> bytes:
    """The start of an error body (never more than :data:`MAX_ERROR_BYTES` read)."""
    data = bytearray()
    with contextlib.suppress(httpx.HTTPError, OSError):
        for chunk in response.iter_bytes():
            data += chunk[: MAX_ERROR_BYTES - len(data)]
            if len(data) >= MAX_ERROR_BYTES:
                break
    return bytes(data)


def _server_message(raw: bytes) -> tuple[str, list[str]]:
    """An error body's message and its ``type``/``code`` fields (:func:`_message_of`)."""
    text = raw.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return text, []
    return _message_of(data, text)


def _message_of(data: Any, text: str) -> tuple[str, list[str]]:
    """The message of an error object (``{"error": {"message": …}}``, ``{"error": "…"}``,
    ``{"detail": "…"}``, ``{"message": "…"}``, else ``text``) and its ``type``/``code``
    fields, lower-cased. Unscrubbed: for matching only, never shown as is."""
    if not isinstance(data, dict):
        return text, []
    error = data.get("error")
    fields = error if isinstance(error, dict) else data
    kinds = [str(fields.get(k)).lower() for k in ("type", "code") if fields.get(k) is not None]
    for value in (fields.get("message"), error, data.get("detail"), data.get("message")):
        if isinstance(value, str) and value.strip():
            return value, kinds
    return text, kinds


def _is_auth(message: str, kinds: list[str], status: int | None = None) -> bool:
    """Whether an error answer (``status`` None: an error event in a stream) says the key was
    refused: 401/403, or a body about the key (not with 429, a rate limit). LiteLLM without
    a database answers a key that is not its master key with 400 ``no_db_connection``."""
    if status in (401, 403):
        return True
    if status == 429:
        return False
    if "no_db_connection" in kinds:
        return status == 400
    return any(k in _AUTH_FIELDS for k in kinds) or bool(_AUTH_TEXT.search(message))


def _retry_after(value: str | None, now: float | None = None) -> int | None:
    """``Retry-After`` in whole seconds (delay or HTTP date), bounded; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(int(value[:9]), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(0, round(seconds)), MAX_RETRY_AFTER)


def _auth_error(where: str, status: int | None, detail: str, api_key: str | None
                ) -> EndpointAuthError:
    """"refused the API key (HTTP 401): …", or "wants an API key" when none was sent."""
    code = f" (HTTP {status})" if status else ""
    text = f"{where} refused the API key{code}" if api_key else (
        f"{where} wants an API key{code} and none was sent")
    if detail:
        text += f": {detail}"
    return EndpointAuthError(text, hint="check the API key" if api_key else "set the API key")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n / 1024:g} KiB"


def list_models(base_url: str, api_key: str | None = None, *, timeout: float = 10.0) -> list[str]:
    """Model names an endpoint serves (``GET /v1/models``), at most :data:`MAX_LIST_MODELS`
    from a body of at most :data:`MAX_LIST_BYTES`, within :data:`LIST_DEADLINE` seconds.

    Raises :class:`EndpointAuthError` when the key is refused, EndpointError otherwise."""
    url = api_base(base_url) + "/models"
    where = redact_url(url)
    started = time.monotonic()
    try:
        with httpx.stream(
            "GET", url, headers=_headers(api_key),
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
        ) as response:
            status = response.status_code
            if status >= 400:
                message, kinds = _server_message(_error_body(response))
                detail = _scrub(message, [api_key], 120)
                if _is_auth(message, kinds, status):
                    raise _auth_error(redact_url(api_base(base_url)), status, detail, api_key)
                raise _NoList(f"{where} answered HTTP {status}"
                              + (f": {detail}" if detail else ""))
            raw = b"".join(_body(response, MAX_LIST_BYTES, started, LIST_DEADLINE,
                                 f"the model list of {where}"))
    except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as exc:
        raise _NoList(_describe(exc, url, api_key, timeout)) from None
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


class _Line:
    """The socket of one answer's connection, to shut down from another thread.

    httpx reports a new connection through its ``trace`` request extension
    (``connection.connect_tcp.complete``, then ``connection.start_tls.complete`` for TLS,
    whose streams give ``get_extra_info("socket")``); the response's ``network_stream``
    extension is the fallback. ``shutdown`` wakes a read blocked in another thread at once
    (closing the socket would not) and tells the server the client left; asked before the
    connection exists, it happens as soon as it does."""

    _EVENTS = ("connection.connect_tcp.complete", "connection.start_tls.complete")

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._wanted = False

    def trace(self, name: str, info: dict[str, Any]) -> None:
        if name in self._EVENTS:
            self._attach(info.get("return_value"))

    def attach(self, response: httpx.Response) -> None:
        """Take the socket from the response, if no trace event gave it."""
        if self._sock is None:
            self._attach(response.extensions.get("network_stream"))

    def _attach(self, stream: Any) -> None:
        get = getattr(stream, "get_extra_info", None)
        sock = get("socket") if callable(get) else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sock = sock
            wanted = self._wanted or self.cancel.is_set()
        if wanted:
            self.shutdown()

    def shutdown(self) -> None:
        with self._lock:
            self._wanted = True
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


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
        self._lock = threading.Lock()
        self._lines: set[_Line] = set()
        self._client: httpx.Client | None = None
        self._names: list[str] | None = None  # the server's model list, when it gave one

    def load(self) -> None:
        """Check that the endpoint answers and takes the key.

        The model list is waited for at most :data:`PROBE_TIMEOUT` (a server busy answering
        someone else may hold it back) and never decides alone: a model it does not show is
        asked for anyway. Only an unreachable server, a refused key or a list that is not one
        fail the load."""
        key = self.spec.api_key
        try:
            self._names = list_models(self.spec.base_url or "", key, timeout=PROBE_TIMEOUT)
        except _NoList:
            self._names = None  # busy, or no list here: the answer will tell
        # one connection per answer (no keep-alive): its socket is known, to cancel at once
        self._client = httpx.Client(
            headers=_headers(key), limits=httpx.Limits(max_keepalive_connections=0)
        )

    def generate(
        self,
        messages: Sequence[Message],
        params: GenParams,
        emit: Emit,
        cancel: threading.Event,
    ) -> BackendStats:
        """Stream one answer from ``POST /v1/chat/completions``.

        Stops at a token past ``params.max_tokens`` (closing the stream) even if the server
        goes on; fails on silence longer than :data:`READ_TIMEOUT`, an answer longer than
        :data:`ANSWER_DEADLINE` or :data:`MAX_ANSWER_BYTES`, a line over :data:`MAX_LINE_BYTES`.
        Counts tokens as the module docstring says; ``usage`` in the result says how.
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
        tokens = 0  # chunks that carried a token
        seen_first = False
        usage: dict[str, Any] = {}
        finish = "stop"
        started = time.monotonic()
        timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        line = _Line(cancel)
        with self._lock:
            self._lines.add(line)
        try:
            with client.stream("POST", url, json=body, timeout=timeout,
                               extensions={"trace": line.trace}) as response:
                line.attach(response)
                if response.status_code >= 400:
                    raise self._refusal(response, where)
                raw = _body(response, MAX_ANSWER_BYTES, started, ANSWER_DEADLINE,
                            f"the answer from {where}")
                for text_line in _lines(raw, where):
                    if cancel.is_set():
                        finish = "cancelled"
                        break
                    if not text_line or text_line.startswith(":"):
                        continue
                    if not text_line.startswith("data:"):
                        if text_line.startswith(("event:", "id:", "retry:")):
                            continue
                        raise EndpointError(
                            f"{where} sent something that is not a server-sent event",
                            hint="is this an OpenAI-compatible server?",
                        )
                    data = text_line[5:].strip()
                    if data == "[DONE]":
                        break
                    event = self._parse(data, where, key)
                    if isinstance(event.get("usage"), dict):
                        usage = event["usage"]
                    over = False
                    for text, reason, token in _choices(event, where):
                        if token and limit is not None and tokens >= limit:
                            over = True  # a token past max_tokens: not shown, stream closed
                            break
                        if not seen_first and (token or text or reason):
                            seen_first = True
                            emit("")  # TTFT at the first token, even an immediate end
                        if token:
                            tokens += 1
                        if text:
                            redactor.feed(text)
                        if reason:
                            finish = clean_line(reason, 20)
                    if over:
                        finish = "length"
                        break
                    if stops.stopped:
                        finish = "stop"
                        break
        except EndpointError:
            raise
        except httpx.ReadTimeout:
            if not cancel.is_set():
                raise EndpointError(
                    f"{where} sent nothing for {READ_TIMEOUT:g} s (after {tokens} chunks); "
                    "gave up", hint="is the server overloaded or stuck?",
                ) from None
            finish = "cancelled"
        except (httpx.HTTPError, OSError, RuntimeError) as exc:
            if cancel.is_set():
                finish = "cancelled"
            else:
                raise EndpointError(
                    f"stream from {where} broke after {tokens} chunks: "
                    + _describe(exc, url, key).split(": ", 1)[-1]
                ) from None
        finally:
            with self._lock:
                self._lines.discard(line)
        if cancel.is_set():
            finish = "cancelled"
        redactor.flush()
        stops.flush()
        completion = _count(usage.get("completion_tokens"))
        # believed between the chunks that carried tokens and max_tokens: fewer than the
        # chunks is a proxy's own guess (LiteLLM counts with its tokenizer when the model's
        # server sent no usage), more than max_tokens a lie; its prompt count goes with it
        reported = completion is not None and tokens <= completion <= (limit or completion)
        if not reported:
            return BackendStats(0, tokens, finish, usage="estimated")
        prompt = _count(usage.get("prompt_tokens")) or 0
        return BackendStats(prompt, completion or 0, finish, usage="reported")

    def _refusal(self, response: httpx.Response, where: str) -> EndpointError:
        """The error for an HTTP error answer to a chat request."""
        status = response.status_code
        key = self.spec.api_key
        model = self.spec.remote_model or ""
        message, kinds = _server_message(_error_body(response))
        detail = _scrub(message, [key], 120)
        base = redact_url(self.base)
        if _is_auth(message, kinds, status):
            return _auth_error(base, status, detail, key)
        if status == 404 or (status in (400, 422) and _MODEL_TEXT.search(message)):
            names = self._model_names()
            shown = _scrub(model, [key], 80)
            if names is not None and model not in names:
                return EndpointError(f"{base} does not serve {shown!r} (HTTP {status})",
                                     hint=f"it serves: {shown_names(names, key) or 'nothing'}")
            if status == 404 and names is None and not _MODEL_TEXT.search(message):
                return EndpointError(
                    f"{where} answered HTTP 404" + (f": {detail}" if detail else ""),
                    hint="is this an OpenAI-compatible server? the base URL usually ends in "
                    ":PORT or /v1",
                )
            if _MODEL_TEXT.search(message):
                return EndpointError(f"{base} does not serve {shown!r} (HTTP {status})"
                                     + (f": {detail}" if detail else ""))
        if status == 429:
            wait = _retry_after(response.headers.get("Retry-After"))
            when = f"try again in {wait} s" if wait is not None else "try again later"
            return EndpointError(f"{base} is rate limiting requests (HTTP 429)"
                                 + (f": {detail}" if detail else ""), hint=when)
        if status >= 500:
            return EndpointError(f"{where} failed with a server error (HTTP {status})"
                                 + (f": {detail}" if detail else ""))
        return EndpointError(f"{where} refused the request (HTTP {status})"
                             + (f": {detail}" if detail else ""))

    def _model_names(self) -> list[str] | None:
        """The server's model list (asked again, briefly), or None if it gives none."""
        try:
            self._names = list_models(self.spec.base_url or "", self.spec.api_key,
                                      timeout=PROBE_TIMEOUT)
        except EndpointError:
            pass
        return self._names

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
            message, kinds = _message_of(event, data)
            detail = _scrub(message, [key])
            if _is_auth(message, kinds):
                raise _auth_error(where, None, detail, key)
            raise EndpointError(f"{where} reported an error: {detail}")
        return event

    def interrupt(self) -> None:
        """Shut down the connection of every cancelled answer: a read blocked on a silent
        server returns at once (called from another thread)."""
        with self._lock:
            lines = [line for line in self._lines if line.cancel.is_set()]
        for line in lines:
            line.shutdown()

    def close(self) -> None:
        """Close the HTTP client."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


def _choices(event: dict[str, Any], where: str) -> Iterator[tuple[str, str | None, bool]]:
    """``(text, finish_reason, token)`` of each choice of a stream event: ``token`` when the
    chunk carries one (text, ``""`` included; not the role's announcement or an end without
    text). Text must be a string; ``reasoning_content`` counts but is not shown."""
    choices = event.get("choices") or []
    if not isinstance(choices, list):
        raise EndpointError(f"{where} sent a stream event whose choices are not a list")
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content")
            thought = delta.get("reasoning_content")
            announces = "role" in delta
        else:
            text, thought, announces = choice.get("text"), None, False
        if text is not None and not isinstance(text, str):
            raise EndpointError(f"{where} sent answer text that is not a string")
        reason = choice.get("finish_reason")
        reason = str(reason) if reason else None
        thought = thought if isinstance(thought, str) else None
        carried = text is not None or thought is not None
        token = carried and bool(text or thought or not (announces or reason))
        yield text or "", reason, token
