"""The OpenAI-compatible backend against a real local SSE server (aiohttp, 127.0.0.1 only).

The server's behaviour is picked by the requested model name: ``tiny`` streams five tokens,
``endless`` streams until the client goes away, ``drop`` breaks the connection mid-answer,
``garbage`` answers with non-SSE text, ``badjson`` with SSE whose data is not JSON,
``empty`` ends at once (no text); any other name gets vLLM's 404 "model does not exist".
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tui.runtime import EndpointError, GenParams, ModelSpec
from tui.runtime.backends.openai import list_models
from tui.runtime.service import RuntimeService

from tests.support.runtime import make_runtime

KEY = "sk-test-secret-4242"
MODELS = ["tiny", "endless", "drop", "garbage", "badjson", "empty"]
HELLO = [{"role": "user", "content": "hello"}]
BODIES = web.AppKey("bodies", list)


def _chunk(text: str | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
    event: dict = {"id": "c1", "object": "chat.completion.chunk", "choices": []}
    if text is not None or finish is not None:
        delta = {"content": text} if text is not None else {}
        event["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    if usage:
        event["usage"] = usage
    return b"data: " + json.dumps(event).encode() + b"\n\n"


async def _models(request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != f"Bearer {KEY}":
        return web.json_response({"error": {"message": "bad key"}}, status=401)
    return web.json_response({"object": "list", "data": [{"id": m} for m in MODELS]})


async def _chat(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") != f"Bearer {KEY}":
        return web.json_response({"error": {"message": "bad key"}}, status=401)
    body = await request.json()
    model = body["model"]
    request.app[BODIES].append(body)
    if model not in MODELS:
        error = {"object": "error", "message": f"The model `{model}` does not exist.",
                 "type": "NotFoundError", "param": None, "code": 404}
        return web.json_response(error, status=404)
    if model == "garbage":
        return web.Response(text="<html>\nnot an event stream\n</html>\n")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    if model == "badjson":
        await resp.write(b"data: {not json\n\n")
        return resp
    if model == "endless":
        i = 0
        while True:
            await resp.write(_chunk(f"t{i} "))
            i += 1
            await asyncio.sleep(0.005)
    n = {"tiny": 5, "empty": 0}.get(model, 2)
    for i in range(n):
        await resp.write(_chunk(f"tok{i} "))
    if model == "drop":
        request.transport.close()
        return resp
    await resp.write(_chunk(finish="stop"))
    await resp.write(_chunk(usage={"prompt_tokens": 7, "completion_tokens": n}))
    await resp.write(b"data: [DONE]\n\n")
    return resp


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, web.Application]]:
    app = web.Application()
    app[BODIES] = []
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/chat/completions", _chat)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", app
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.run_until_complete(runner.cleanup())
    loop.close()


@pytest.fixture
async def runtime(tmp_path: Path):
    rt = make_runtime(tmp_path)
    yield rt
    await rt.aclose()


async def answer(rt: RuntimeService, spec: ModelSpec, params: GenParams | None = None):
    text, metrics = [], None
    async for item in rt.generate(spec, HELLO, params or GenParams(max_tokens=50, seed=3)):
        if isinstance(item, str):
            text.append(item)
        else:
            metrics = item
    return "".join(text), metrics


async def test_streaming_answer(server, runtime: RuntimeService) -> None:
    url, app = server
    spec = ModelSpec.endpoint(url, "tiny", KEY)
    text, m = await answer(runtime, spec, GenParams(max_tokens=50, seed=3, stop=("zzz",)))
    assert text == "tok0 tok1 tok2 tok3 tok4 "
    assert m.prompt_tokens == 7 and m.completion_tokens == 5 and m.finish_reason == "stop"
    assert m.ttft_ms is not None
    body = app[BODIES][-1]
    assert body["stream"] is True and body["max_tokens"] == 50 and body["seed"] == 3
    assert body["messages"] == HELLO and body["stop"] == ["zzz"]
    assert runtime.loaded()[0].kind == "openai"
    assert KEY not in repr(spec) and KEY not in spec.id
    assert list_models(url + "/v1/", KEY) == MODELS


async def test_immediate_end_reports_ttft(server, runtime: RuntimeService) -> None:
    url, _app = server
    text, m = await answer(runtime, ModelSpec.endpoint(url, "empty", KEY))
    assert text == "" and m.completion_tokens == 0 and m.finish_reason == "stop"
    assert m.ttft_ms is not None and m.tokens_per_s is None


async def test_cancel_endless_stream(server, runtime: RuntimeService) -> None:
    url, _ = server
    spec = ModelSpec.endpoint(url, "endless", KEY)
    started = None
    metrics = None
    async for item in runtime.generate(spec, HELLO, GenParams(max_tokens=0)):
        if isinstance(item, str):
            if started is None:
                started = time.perf_counter()
                runtime.cancel()
        else:
            metrics = item
    assert started is not None and time.perf_counter() - started < 1.0
    assert metrics is not None and metrics.finish_reason == "cancelled"


async def test_server_down(runtime: RuntimeService) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = ModelSpec.endpoint(f"http://127.0.0.1:{port}", "tiny", KEY)
    with pytest.raises(EndpointError, match="cannot reach") as info:
        await answer(runtime, spec)
    assert KEY not in str(info.value) and "\n" not in str(info.value)
    assert runtime.loaded() == []


async def test_garbage_and_broken_streams(server, runtime: RuntimeService) -> None:
    url, _ = server
    for model, pattern in (
        ("garbage", "not a server-sent event"),
        ("badjson", "not JSON"),
        ("drop", "broke after 2 chunks"),
    ):
        spec = ModelSpec.endpoint(url, model, KEY)
        with pytest.raises(EndpointError, match=pattern) as info:
            await answer(runtime, spec)
        assert KEY not in str(info.value) and "\n" not in str(info.value)
    # the service keeps working
    text, _ = await answer(runtime, ModelSpec.endpoint(url, "tiny", KEY))
    assert text.startswith("tok0")


async def test_wrong_key_and_unknown_model(server, runtime: RuntimeService) -> None:
    url, _ = server
    wrong = "sk-wrong-777"
    with pytest.raises(EndpointError, match="HTTP 401") as info:
        await runtime.load(ModelSpec.endpoint(url, "tiny", wrong))
    assert wrong not in str(info.value)
    # not refused locally: the server's 404 becomes one line with what it serves
    with pytest.raises(EndpointError, match=r"does not serve 'nope' \(HTTP 404\) "
                       r"\(it serves: tiny, endless, drop"):
        await answer(runtime, ModelSpec.endpoint(url, "nope", KEY))
    creds = url.replace("http://", f"http://user:{wrong}@")
    spec = ModelSpec.endpoint(creds, "tiny", None)
    assert wrong not in spec.id
    with pytest.raises(EndpointError) as info:
        await runtime.load(spec)
    assert wrong not in str(info.value)


async def test_not_an_openai_server(server, runtime: RuntimeService) -> None:
    url, _ = server
    with pytest.raises(EndpointError, match=r"HTTP 404.*base URL"):
        await answer(runtime, ModelSpec.endpoint(url + "/elsewhere", "tiny", KEY))


def test_cli_run_against_endpoint(server, tmp_path: Path, monkeypatch, capsys) -> None:
    from tui.cli import main

    url, _ = server
    monkeypatch.setenv("MODELDECK_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("MODELDECK_API_KEY", KEY)
    base = ["--models-dir", str(tmp_path / "m"), "--state-dir", str(tmp_path / "s")]
    assert main([*base, "run", "--endpoint", url, "--model", "tiny", "-p", "hi"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "tok0 tok1 tok2 tok3 tok4"
    assert "5 tokens" in out.err and KEY not in out.err
    monkeypatch.setenv("MODELDECK_API_KEY", "sk-nope-31337")
    assert main([*base, "run", "--endpoint", url, "--model", "tiny", "-p", "hi"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "sk-nope-31337" not in err
