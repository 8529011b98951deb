"""A hostile OpenAI-compatible server on 127.0.0.1 (aiohttp in a thread).

The first path segment picks how ``GET <mode>/v1/models`` behaves: ``ok`` (a short list whose
names carry escapes and the key), ``deny`` (401 echoing the key), ``hugelist`` (a list of
millions of entries, generated lazily), ``silentlist`` (headers, then nothing). The requested
``model`` picks the answer of ``POST <mode>/v1/chat/completions``:

``escapes``   text full of ESC/OSC/CSI/BEL/C1/bidi, sequences split across events
``echo``      the API key echoed in the text, split across events, and as ``Bearer <key>``
``endless``   text events until the client goes away
``hugeline``  ``data:`` and then 1 GB without a newline (64 KiB writes, never held)
``silent``    headers, then nothing
``drip``      a comment line every 20 ms, forever (never silent long enough for a read timeout)
``bigbody``   comment lines of 16 KiB as fast as the client reads them
``errorecho`` HTTP 500 whose body echoes the key and escapes
``sseerror``  an SSE error event echoing the key and escapes

Any other model gets vLLM's 404 "model does not exist", echoing the name, the key and escapes.

Each handler records how many bytes it wrote and whether the client left
(:attr:`HostileServer.stats`).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from typing import Any

from aiohttp import web

KEY = "sk-hostile-0123456789abcdef0123456789"
HOSTILE = (
    "\x1b[2J\x1b]52;c;SGVsbG8gY2xpcGJvYXJk\x07\x1b]8;;http://evil.example/\x1b\\click"
    "\x1b]8;;\x1b\\\x07\x9b31m\u202e[bold]red[/]\x1b[0m"
)
ESCAPE_PIECES = ["hello ", "\x1b", "]52;c;SGVsbG8=", "\x07 ", "\x1b[", "2J", " \x9b", "31m",
                 " [bold]x[/] \u202eevil", "\r\n", "end"]
GB = 1 << 30
NAMES = [f"shown{HOSTILE}", f"key {KEY}", "escapes", "echo", "endless", "hugeline", "silent",
         "drip", "bigbody", "errorecho", "sseerror"]


def event(text: str | None = None, finish: str | None = None) -> bytes:
    """One ``chat.completion.chunk`` SSE event."""
    body: dict[str, Any] = {"object": "chat.completion.chunk", "choices": []}
    if text is not None or finish is not None:
        delta = {"content": text} if text is not None else {}
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class HostileServer:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url(mode)`` is a base URL."""

    def __init__(self) -> None:
        self.stats: dict[str, dict[str, Any]] = defaultdict(lambda: {"bytes": 0, "left": False})
        self.bodies: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    def url(self, mode: str = "ok") -> str:
        return f"http://127.0.0.1:{self.port}/{mode}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> HostileServer:
        app = web.Application()
        app.router.add_get("/{mode}/v1/models", self._models)
        app.router.add_post("/{mode}/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._thread.start()
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- helpers -----------------------------------------------------------------------------

    async def _write(self, name: str, resp: web.StreamResponse, data: bytes) -> bool:
        """Write; False once the client is gone."""
        try:
            await resp.write(data)
        except (ConnectionError, RuntimeError):
            self.stats[name]["left"] = True
            return False
        self.stats[name]["bytes"] += len(data)
        return True

    async def _stream(self, request: web.Request, content_type: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        return resp

    # -- handlers ----------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        if mode == "deny":
            return web.Response(status=401, text=f"bad key {KEY} {HOSTILE}")
        if mode == "hugelist":
            resp = await self._stream(request, "application/json")
            if not await self._write(mode, resp, b'{"object": "list", "data": ['):
                return resp
            i = 0
            while i < 20_000_000:  # millions of entries, 4096 per write
                batch = b"".join(b'{"id": "m%d"},' % n for n in range(i, i + 4096))
                if not await self._write(mode, resp, batch):
                    return resp
                i += 4096
            await self._write(mode, resp, b'{"id": "last"}]}')
            return resp
        if mode == "silentlist":
            resp = await self._stream(request, "application/json")
            await asyncio.sleep(3600)
            return resp
        return web.json_response({"object": "list", "data": [{"id": n} for n in NAMES]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        model = body.get("model")
        name = str(model)
        if request.match_info["mode"] == "deny":
            return web.Response(status=401, text=f"Authorization: Bearer {KEY} {HOSTILE}")
        if model == "errorecho":
            return web.Response(status=500, text=f"upstream failed for {KEY[:20]} {HOSTILE}")
        if model not in NAMES:
            error = {"object": "error", "message": f"The model `{name}` does not exist. {KEY} "
                     f"{HOSTILE}", "type": "NotFoundError", "param": None, "code": 404}
            return web.json_response(error, status=404)
        resp = await self._stream(request, "text/event-stream")
        if model == "escapes":
            for piece in ESCAPE_PIECES:
                await self._write(name, resp, event(piece))
        elif model == "echo":
            for piece in ("your key is ", KEY[:9], KEY[9:], " or Bearer ", KEY, " done"):
                await self._write(name, resp, event(piece))
        elif model == "sseerror":
            error = {"error": {"message": f"quota for {KEY} {HOSTILE}"}}
            await self._write(name, resp, b"data: " + json.dumps(error).encode() + b"\n\n")
            return resp
        elif model == "endless":
            i = 0
            while await self._write(name, resp, event(f"t{i} ")):
                i += 1
                if i % 64 == 0:
                    await asyncio.sleep(0)
            return resp
        elif model == "hugeline":
            block = b"a" * (64 << 10)
            sent = 6
            if await self._write(name, resp, b"data: "):
                while sent < GB and await self._write(name, resp, block):
                    sent += len(block)
            return resp
        elif model == "silent":
            await asyncio.sleep(3600)
            return resp
        elif model == "drip":
            while await self._write(name, resp, b": still here\n"):
                await asyncio.sleep(0.02)
            return resp
        elif model == "bigbody":
            line = b": " + b"x" * (16 << 10) + b"\n"
            while await self._write(name, resp, line):
                pass
            return resp
        await self._write(name, resp, event(finish="stop"))
        await self._write(name, resp, b"data: [DONE]\n\n")
        return resp
