"""The OpenAI-compatible routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``.

``model`` is a ModelDeck id. A model installed but not loaded is loaded on demand (the fit
check, least-recently-used eviction and keep-alive of the runtime apply); ``keep_alive`` (an
extension, as Ollama's) sets how long it stays loaded afterwards. Each request is one named
request of the runtime's scheduler: a client that disconnects stops its answer at the next
step, running or still queued.

Streaming writes one SSE event per text delta, built from a prefix and suffix made once per
request around the JSON-escaped delta (no per-token object encoding). Errors that happen
before the first token get their HTTP status (404, 429, 507, …); one after it is a last
``data: {"error": …}`` event (the official clients raise it).

Not supported (refused with one line): ``n`` > 1, ``logprobs``, ``echo``, ``suffix``,
``best_of`` > 1, token-array prompts, ``response_format`` other than text, a forced
``tool_choice``, embeddings ``dimensions``. Ignored, as many local servers do:
``frequency_penalty``, ``presence_penalty``, ``logit_bias``, ``user``. ``tools`` reach the
chat template; tool calls in the answer are not parsed out of its text.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from tui import kinds
from tui.errors import InvalidInputError, NotFoundError
from tui.runtime.types import GenerationMetrics, GenParams, ModelSpec
from tui.serve.context import ServeState, state_of
from tui.serve.errors import ApiError, api_error, bad_request
from tui.serve.remote_api import proxy, remote_model_object, remote_model_objects, target_of
from tui.serve.schemas import (
    MAX_INPUTS,
    MAX_STOP,
    MAX_STOP_CHARS,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
)
from tui.serve.sse import DONE, DisconnectWatch, EventStream, Last, event
from tui.serve.validate import check_model_id, parse_keep_alive

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

COMPLETION_DEFAULT_MAX = 16  # OpenAI's default for /v1/completions
CLIENT_GONE = 499  # metrics status of a request whose client disconnected
_dumps = json.JSONEncoder(ensure_ascii=True).encode  # a str: the C escaper, no dict walk


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode(),
                    status_code=status, media_type="application/json")


# -- models -----------------------------------------------------------------------------------


# What this server runs: text models (and embedding models, for /v1/embeddings); a kind
# nobody has looked inside yet counts too (the runtime decides from the files).
SERVED_KINDS = kinds.RUNNABLE | {kinds.EMBEDDING, kinds.UNKNOWN}


def model_kind(services: Any, record: Any) -> str:
    """What an installed model is (:data:`tui.kinds.KINDS`): the kind discovery read from
    its contents, else its catalog entry's, else ``unknown`` (blocking)."""
    kind = record.kind
    if kind in (None, "", kinds.UNKNOWN) and record.catalog_id:
        entry = services.catalog.get(record.catalog_id)
        kind = entry.kind if entry is not None else None
    return kinds.normalise(kind)


def not_runnable(services: Any, record: Any) -> str | None:
    """Why this server cannot answer with ``record`` (its kind, a format no backend
    reads), or None when it can. The one check behind ``/v1/models`` and every request."""
    if record.format not in ("gguf", "safetensors"):
        return f"a {record.format} model"
    kind = model_kind(services, record)
    if kind in kinds.EMBEDS and record.format != "gguf":  # llama.cpp embeds; transformers not
        return f"a {record.format} {kind} model"
    return None if kind in SERVED_KINDS else f"a {kind} model"


def _not_runnable(model_id: str, why: str, status: int = 400) -> ApiError:
    return ApiError(status, f"{model_id!r} is {why}: not runnable here (only text and "
                    "embedding models are); see GET /v1/models for the ids",
                    param="model", code="model_not_runnable")


@router.get("/models", summary="Installed models this server can run (ids for the model field)")
async def list_models(request: Request) -> Response:
    state = state_of(request)
    services = state.services

    def runnable() -> list[Any]:
        records = services.inventory.list_models(status="installed")
        return [r for r in records if not_runnable(services, r) is None]

    data = [_model_object(r) for r in await asyncio.to_thread(runnable)]
    data += await remote_model_objects(request)
    return _json({"object": "list", "data": data})


@router.get("/models/{model_id:path}", summary="One installed model (or a remote's)")
async def get_model(model_id: str, request: Request) -> Response:
    state = state_of(request)
    if "/" in model_id:
        remote = await remote_model_object(request, model_id)
        if remote is None:
            raise _no_model(model_id)
        return _json(remote)
    check_model_id(model_id)
    record = await asyncio.to_thread(state.services.inventory.get_model, model_id)
    if record is None or record.status != "installed":
        raise _no_model(model_id)
    why = await asyncio.to_thread(not_runnable, state.services, record)
    if why is not None:
        raise _not_runnable(model_id, why, 404)
    return _json(_model_object(record))


def _model_object(record: Any) -> dict[str, Any]:
    return {"id": record.id, "object": "model", "created": int(record.installed_at or 0),
            "owned_by": "modeldeck"}


def _no_model(model_id: str) -> ApiError:
    return ApiError(404, f"no installed model {model_id!r}; see GET /v1/models for the ids",
                    param="model", code="model_not_found")


async def model_ref(state: ServeState, model: Any) -> tuple[str, str | ModelSpec]:
    """``(id, what to hand the runtime)`` for a request's ``model``: 400 for something that
    is not an id, 404 for an id nothing is installed under. Never a path."""
    try:
        model_id = check_model_id(model)
    except InvalidInputError as exc:
        raise ApiError(400, str(exc), param="model", code="invalid_model") from None
    runtime = state.runtime
    if runtime.is_loaded(model_id):
        return model_id, model_id

    def resolve() -> ModelSpec:
        record = runtime.inventory.get_model(model_id)
        if record is None:
            raise _no_model(model_id)
        why = not_runnable(state.services, record)
        if why is not None:
            raise _not_runnable(model_id, why)
        try:
            spec = runtime.resolve(record.id)
        except NotFoundError as exc:
            raise ApiError(404, str(exc), param="model", code="model_not_found") from None
        if not spec.in_inventory:
            raise _no_model(model_id)
        return spec

    return model_id, await asyncio.to_thread(resolve)


# -- parameters -------------------------------------------------------------------------------


def _params(body: Any, state: ServeState, max_tokens: int | None, default_max: int) -> GenParams:
    if body.n not in (None, 1):
        raise bad_request("n must be 1: this server makes one answer per request", "n")
    if body.logprobs not in (None, False, 0):
        raise bad_request("logprobs are not supported by this server", "logprobs")
    wanted = max_tokens if max_tokens is not None else min(default_max, state.max_tokens)
    if wanted > state.max_tokens:
        raise bad_request(f"max_tokens {wanted} is more than this server allows "
                          f"({state.max_tokens}, setting serve_max_tokens)", "max_tokens")
    stop = body.stop
    stops: tuple[str, ...] = ()
    if isinstance(stop, str):
        stops = (stop,)
    elif stop:
        stops = tuple(stop)
    if len(stops) > MAX_STOP or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise bad_request(f"stop takes at most {MAX_STOP} non-empty strings of at most "
                          f"{MAX_STOP_CHARS} characters", "stop")
    return GenParams(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        max_tokens=wanted,
        stop=stops,
        seed=body.seed,
    )


def _keep_alive(body: Any) -> float | None:
    try:
        return parse_keep_alive(body.keep_alive)
    except InvalidInputError as exc:
        raise bad_request(str(exc), "keep_alive") from None


def _chat_messages(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    messages = []
    for i, m in enumerate(body.messages):
        content = m.content
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.type != "text" or part.text is None:
                    raise bad_request(f"messages[{i}]: only text content is understood, not "
                                      f"{part.type[:40]!r}", f"messages[{i}].content")
                texts.append(part.text)
            content = "\n".join(texts)
        message: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role,
                                   "content": content if content is not None or m.tool_calls
                                   else ""}
        if m.name is not None:
            message["name"] = m.name
        if m.tool_calls:
            message["tool_calls"] = m.tool_calls
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        messages.append(message)
    return messages


def _tools(body: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    choice = body.tool_choice
    if choice not in (None, "auto", "none"):
        raise bad_request("tool_choice other than auto or none is not supported: tools reach "
                          "the chat template and the answer is the model's text", "tool_choice")
    if not body.tools or choice == "none":
        return None
    return body.tools


# -- chat and completions ---------------------------------------------------------------------


@router.post("/chat/completions", summary="Chat completion (streamed with stream=true)")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    state = state_of(request)
    if (remote := target_of(request, body.model)) is not None:
        return await proxy(request, remote, "chat/completions", "chat")
    fmt = body.response_format
    if fmt is not None and fmt.get("type", "text") != "text":
        raise bad_request("response_format other than text is not supported", "response_format")
    params = _params(body, state, body.max_completion_tokens or body.max_tokens,
                     state.max_tokens)
    messages = _chat_messages(body)
    tools = _tools(body)
    keep_alive = _keep_alive(body)
    model_id, ref = await model_ref(state, body.model)
    return await _answer(request, state, _Chat(model_id, body), ref, params, keep_alive,
                         messages=messages, tools=tools)


@router.post("/completions", summary="Text completion of a raw prompt (no chat template)")
async def completions(body: CompletionRequest, request: Request) -> Response:
    state = state_of(request)
    if (remote := target_of(request, body.model)) is not None:
        return await proxy(request, remote, "completions", "completions")
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise bad_request("prompt must be one string (token arrays and several prompts "
                              "are not supported)", "prompt")
        prompt = prompt[0]
    if body.echo:
        raise bad_request("echo is not supported", "echo")
    if body.suffix:
        raise bad_request("suffix is not supported", "suffix")
    if body.best_of not in (None, 1):
        raise bad_request("best_of must be 1", "best_of")
    params = _params(body, state, body.max_tokens, COMPLETION_DEFAULT_MAX)
    keep_alive = _keep_alive(body)
    model_id, ref = await model_ref(state, body.model)
    return await _answer(request, state, _Text(model_id, body), ref, params, keep_alive,
                         prompt=prompt)


class _Chat:
    """The chat.completion objects of one request."""

    endpoint = "chat"
    prefix = "chatcmpl-"
    chunk_object = "chat.completion.chunk"  # the "object" of a streamed chunk

    def __init__(self, model_id: str, body: Any) -> None:
        self.model = model_id
        self.stream = body.stream
        self.usage = bool(body.stream_options and body.stream_options.include_usage)
        self.id = self.prefix + uuid.uuid4().hex
        self.created = int(time.time())

    def _head(self, obj: str) -> str:
        return (f'{{"id":"{self.id}","object":"{obj}","created":{self.created},'
                f'"model":{_dumps(self.model)},"system_fingerprint":null,')

    def frame(self) -> tuple[bytes, bytes]:
        """What goes before and after the JSON string of a text delta."""
        head = "data: " + self._head("chat.completion.chunk")
        return ((head + '"choices":[{"index":0,"delta":{"content":').encode(),
                b'},"logprobs":null,"finish_reason":null}]}\n\n')

    def opening(self) -> bytes:
        return event(self._chunk({"role": "assistant", "content": ""}, None))

    def closing(self, finish: str) -> bytes:
        return event(self._chunk({}, finish))

    def _object(self, obj: str, choices: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": None, "choices": choices, **more}

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return self._object(self.chunk_object, [{"index": 0, "delta": delta, "logprobs": None,
                                                 "finish_reason": finish}])

    def usage_chunk(self, usage: dict[str, int]) -> bytes:
        """The last chunk of a stream asked with ``include_usage``: no choices, the usage."""
        return event(self._object(self.chunk_object, [], usage=usage))

    def whole(self, text: str, finish: str, usage: dict[str, int]) -> dict[str, Any]:
        message = {"role": "assistant", "content": text, "refusal": None}
        return self._object("chat.completion", [{"index": 0, "message": message,
                                                 "logprobs": None, "finish_reason": finish}],
                            usage=usage)


class _Text(_Chat):
    """The text_completion objects of one request."""

    endpoint = "completions"
    prefix = "cmpl-"
    chunk_object = "text_completion"

    def frame(self) -> tuple[bytes, bytes]:
        head = "data: " + self._head("text_completion")
        return (head + '"choices":[{"index":0,"text":').encode(), \
            b',"logprobs":null,"finish_reason":null}]}\n\n'

    def opening(self) -> bytes:
        return b""

    def closing(self, finish: str) -> bytes:
        return event(self._object("text_completion", [
            {"index": 0, "text": "", "logprobs": None, "finish_reason": finish}]))

    def whole(self, text: str, finish: str, usage: dict[str, int]) -> dict[str, Any]:
        return self._object("text_completion", [
            {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}], usage=usage)


def _usage(m: GenerationMetrics | None) -> dict[str, int]:
    prompt = m.prompt_tokens if m else 0
    completion = m.completion_tokens if m else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _finish(m: GenerationMetrics | None) -> str:
    return "length" if m is not None and m.finish_reason == "length" else "stop"


async def _answer(
    request: Request,
    state: ServeState,
    shape: _Chat,
    ref: str | ModelSpec,
    params: GenParams,
    keep_alive: float | None,
    *,
    messages: list[dict[str, Any]] | None = None,
    prompt: str | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> Response:
    """Run one request through the runtime: the whole answer, or an event stream."""
    runtime = state.runtime
    arrived = time.perf_counter()
    rid = shape.id
    gen = runtime.generate(ref, messages or [], params, request_id=rid, prompt=prompt,
                           tools=tools, keep_alive=keep_alive)
    watch = DisconnectWatch(request.receive, lambda: runtime.cancel(rid))
    try:
        first = await gen.__anext__()  # loads the model, waits for a slot: errors get a status
    except BaseException as exc:
        watch.close()
        await gen.aclose()
        if not isinstance(exc, Exception):
            raise
        error = api_error(exc)
        state.metrics.answered(shape.endpoint, shape.model, error.status)
        raise error from None
    if watch.gone:  # gone before its request had a name to cancel
        runtime.cancel(rid)
    ttft = time.perf_counter() - arrived if type(first) is str else None
    if shape.stream:
        return EventStream(_stream(state, shape, gen, first, ttft, arrived, watch))
    parts: list[str] = []
    metrics: GenerationMetrics | None = None
    if type(first) is str:
        parts.append(first)
    else:
        metrics = first
    try:
        async for item in gen:
            if type(item) is str:
                if ttft is None:
                    ttft = time.perf_counter() - arrived
                parts.append(item)
            else:
                metrics = item
    except Exception as exc:
        error = api_error(exc)
        state.metrics.answered(shape.endpoint, shape.model, error.status)
        raise error from None
    finally:
        watch.close()
        await gen.aclose()
    _count(state, shape, 200 if not watch.gone else CLIENT_GONE, metrics, ttft)
    return _json(shape.whole("".join(parts), _finish(metrics), _usage(metrics)))


async def _stream(
    state: ServeState,
    shape: _Chat,
    gen: AsyncIterator[Any],
    first: Any,
    ttft: float | None,
    arrived: float,
    watch: DisconnectWatch,
) -> AsyncIterator[bytes]:
    """The SSE events of one streamed answer (the per-token path: keep it lean)."""
    pre, post = shape.frame()
    metrics: GenerationMetrics | None = None
    status = CLIENT_GONE
    try:
        if type(first) is str:  # one write for the role and the first text
            yield shape.opening() + pre + _dumps(first).encode() + post
        else:
            metrics = first
            if opening := shape.opening():
                yield opening
        sent = 0
        async for item in gen:
            if type(item) is str:
                if ttft is None:
                    ttft = time.perf_counter() - arrived
                yield pre + _dumps(item).encode() + post
                sent += 1
                if not sent & 1:
                    # Text already waiting is read without a pause: let the loop run every
                    # other delta, so a closed connection is seen (no writes into it) and the
                    # other clients' deltas go out too.
                    await asyncio.sleep(0)
            else:
                metrics = item
        if watch.gone:
            return
        status = 200
        usage = shape.usage_chunk(_usage(metrics)) if shape.usage else b""
        yield Last(shape.closing(_finish(metrics)) + usage + DONE)
    except Exception as exc:  # after the first token: a last error event
        error = api_error(exc)
        status = error.status
        state.metrics.stats.error(error.status, error.message)
        yield event(error.payload())
    finally:
        watch.close()
        await gen.aclose()  # type: ignore[attr-defined]
        _count(state, shape, status, metrics, ttft)


def _count(state: ServeState, shape: _Chat, status: int, m: GenerationMetrics | None,
           ttft: float | None) -> None:
    state.metrics.answered(
        shape.endpoint, shape.model, status,
        prompt=m.prompt_tokens if m else 0, completion=m.completion_tokens if m else 0,
        ttft_s=ttft, tokens_per_s=m.tokens_per_s if m else None)


# -- embeddings -------------------------------------------------------------------------------


@router.post("/embeddings", summary="Embeddings (GGUF models)")
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    state = state_of(request)
    if (remote := target_of(request, body.model)) is not None:
        return await proxy(request, remote, "embeddings", "embeddings")
    inputs = body.input
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs or not all(isinstance(t, str) for t in inputs):
        raise bad_request("input must be a string or a list of strings (token arrays are not "
                          "supported)", "input")
    if len(inputs) > MAX_INPUTS:
        raise bad_request(f"at most {MAX_INPUTS} inputs per request", "input")
    if any(not t for t in inputs):
        raise bad_request("input must not contain empty strings", "input")
    if body.dimensions is not None:
        raise bad_request("dimensions is not supported", "dimensions")
    keep_alive = _keep_alive(body)
    model_id, ref = await model_ref(state, body.model)
    try:
        vectors, tokens = await state.runtime.embed(
            ref, inputs, request_id="embd-" + uuid.uuid4().hex, keep_alive=keep_alive)
    except Exception as exc:
        error = api_error(exc)
        state.metrics.answered("embeddings", model_id, error.status)
        raise error from None
    state.metrics.answered("embeddings", model_id, 200, prompt=tokens)
    b64 = body.encoding_format == "base64"
    data = [{"object": "embedding", "index": i,
             "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
             if b64 else v} for i, v in enumerate(vectors)]
    return _json({"object": "list", "data": data, "model": model_id,
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
