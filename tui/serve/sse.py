"""Lean streaming: a ``text/event-stream`` response and a client-disconnect watcher.

:class:`EventStream` sends each chunk its iterator yields as one body message (flushed by the
server at once); it never reads the request: a :class:`DisconnectWatch` owns ``receive`` and
says when the client has gone, which stops the generation at the runtime's next step whether
a token is being written or the request still waits for its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import Response

DONE = b"data: [DONE]\n\n"


class Last(bytes):
    """The stream's last chunk: sent with the end of the body in one write."""


def event(data: Any) -> bytes:
    """One SSE ``data:`` event holding ``data`` as JSON."""
    return b"data: " + json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode() \
        + b"\n\n"


class EventStream(Response):
    """A ``200 text/event-stream`` of the chunks ``chunks`` yields (already SSE-framed; a
    :class:`Last` one ends it)."""

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[bytes], headers: dict[str, str] | None = None
                 ) -> None:
        self.chunks = chunks
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no",
                           **(headers or {})})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": self.raw_headers})
        try:
            async with contextlib.aclosing(self.chunks) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    if type(chunk) is Last:
                        break
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                else:
                    chunk = b""
            await send({"type": "http.response.body", "body": bytes(chunk), "more_body": False})
        except OSError:  # the client went away mid-write
            return


class DisconnectWatch:
    """Calls ``on_gone()`` once when the client disconnects (after the body was read)."""

    def __init__(self, receive: Any, on_gone: Callable[[], object]) -> None:
        self.gone = False
        self._on_gone = on_gone
        self._task = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                self._on_gone()
                return

    def close(self) -> None:
        """Stop watching (the response is complete)."""
        self._task.cancel()
