"""Upstreams for the remote-engine tests: the real ``llama_cpp.server`` in a child process, and
a small aiohttp OpenAI-compatible server (in a thread) that records what reaches it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

STARTUP = 120.0  # seconds for llama_cpp.server to answer /v1/models


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_models(url: str, proc: subprocess.Popen[bytes] | None = None,
                limit: float = STARTUP) -> list[str]:
    """Poll ``url``/v1/models until it answers 200; its ids. AssertionError after ``limit``."""
    deadline = time.monotonic() + limit
    while True:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the upstream exited with {proc.returncode}")
        try:
            r = httpx.get(url + "/v1/models", timeout=2.0)
            if r.status_code == 200:
                return [m["id"] for m in r.json()["data"]]
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer /v1/models in time")
        time.sleep(0.1)


def llama_server_command(model: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512"]


@contextmanager
def llama_server(model: Path, log: Path) -> Iterator[str]:
    """``python -m llama_cpp.server`` over ``model`` on a free port: its base URL."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(llama_server_command(model, port), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_models(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


class FakeUpstream:
    """An OpenAI-compatible server that records each request's headers and body.

    ``models`` is what ``GET /v1/models`` answers (a JSON-able object, or bytes as is); the
    requested model picks the chat answer: ``endless`` streams events until the client leaves
    (then :attr:`left` is set), ``fail`` is a 500 echoing the key in OpenAI's shape,
    ``textfail`` a 503 in plain text echoing the key and escapes, ``notjson`` a 200 that is not
    JSON, ``weird`` status 999; anything else a short answer (streamed when asked) with usage.
    """

    def __init__(self, models: Any = None, key: str = "") -> None:
        self.models = models if models is not None else {"object": "list",
                                                          "data": [{"id": "m1"}]}
        self.key = key
        self.requests: list[tuple[dict[str, str], Any]] = []
        self.left = threading.Event()
        self.streaming = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeUpstream:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]

        async def start() -> None:  # in the server's own loop (a test's loop may be running)
            await self._runner.setup()
            await web.SockSite(self._runner, sock).start()

        self._thread.start()
        asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _models(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), None))
        if isinstance(self.models, bytes):
            return web.Response(body=self.models, content_type="application/json")
        if isinstance(self.models, int):
            return web.Response(status=self.models, text="models broke")
        return web.json_response(self.models)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append((dict(request.headers), body))
        if body.get("model") == "fail":
            return web.json_response({"error": {"message": f"engine died, key {self.key} "
                                                "\x1b[2J", "type": "server_error",
                                                "code": "engine_dead"}}, status=500)
        if body.get("model") == "notjson":
            return web.Response(text="<html>\x1b[2Jnot json", content_type="application/json")
        if body.get("model") == "textfail":
            return web.Response(status=503, text=f"overloaded {self.key} \x1b]52;c;eA==\x07")
        if body.get("model") == "weird":
            return web.Response(status=999, text="{}")
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if not body.get("stream"):
            return web.json_response({
                "id": "up-1", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"},
                             "finish_reason": "stop"}], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.streaming.set()
        i = 0
        try:
            while True:
                chunk = {"id": "up-1", "object": "chat.completion.chunk", "created": 1,
                         "model": body["model"], "choices": [
                             {"index": 0, "delta": {"content": f"t{i} "},
                              "finish_reason": None}]}
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                i += 1
                if body.get("model") != "endless" and i == 2:
                    break
                await asyncio.sleep(0.02)
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError
        except (ConnectionError, RuntimeError):
            self.left.set()
            return resp
        done = {"id": "up-1", "object": "chat.completion.chunk", "created": 1,
                "model": body["model"], "choices": [], "usage": usage}
        await resp.write(b"data: " + json.dumps(done).encode() + b"\n\ndata: [DONE]\n\n")
        return resp

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((dict(request.headers), body))
        return web.json_response({"object": "list", "model": body["model"],
                                  "data": [{"object": "embedding", "index": 0,
                                            "embedding": [0.5, 0.25]}],
                                  "usage": {"prompt_tokens": 1, "total_tokens": 1}})
