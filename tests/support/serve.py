"""A real ``modeldeck serve`` in the test's process: uvicorn on 127.0.0.1 (an ephemeral port)
in its own thread and event loop, over real services (SQLite, llama.cpp, transformers).

Clients (the official ``openai`` package, ``httpx``) run in the test's thread as they would in
another program; :meth:`Served.call` runs a function in the server's loop (to read the
runtime, or to hold a model busy with a request of its own, as the console would).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui.runtime import GenParams, ModelState, RuntimeEvent
from tui.runtime.memory import FixedMemoryProbe
from tui.runtime.service import RuntimeService
from tui.services import Services, build_services
from tui.settings import Settings

from tests.support.runtime import GiB, register_model

LIMIT = 30.0  # seconds before a wait for something that should happen is called a hang

__all__ = ["LIMIT", "Held", "Served", "serve_settings", "served", "wait_until"]


def serve_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings for a test server: everything in ``tmp``, models never unloaded by time."""
    values: dict[str, Any] = {
        "models_dir": tmp / "models", "state_dir": tmp / "state", "scan_hf_cache": False,
        "keep_alive_minutes": 0.0, "parallel_requests": 4, "queue_limit": 32,
        "max_loaded_models": 2,
    }
    values.update(overrides)
    return Settings(**values)


def wait_until(predicate: Callable[[], bool], what: str, limit: float = LIMIT) -> None:
    """Poll ``predicate`` until it holds; AssertionError naming ``what`` after ``limit``."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@dataclass(eq=False)
class Served:
    """A running server and its services."""

    services: Services
    url: str
    loop: asyncio.AbstractEventLoop
    handle: Any
    events: list[RuntimeEvent] = field(default_factory=list)

    @property
    def runtime(self) -> RuntimeService:
        return self.services.runtime

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` in the server's loop (awaited if it returns a coroutine)."""
        async def run() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(LIMIT)

    def stats(self) -> Any:
        """The runtime's per-model scheduler stats (read in its loop)."""
        return self.call(self.runtime.stats)

    def loaded(self) -> list[Any]:
        return self.call(self.runtime.loaded)

    def serving(self, what: str | None = None) -> list[RuntimeEvent]:
        """SERVING events so far (of one kind: queued, started, finished, refused)."""
        return [e for e in list(self.events) if e.state == ModelState.SERVING
                and (what is None or e.message == what)]

    def hold(self, model_id: str, content: str = "hold the model") -> Held:
        """A request of the server's own (as the console's) that takes a slot and keeps it
        until :meth:`Held.release`: it reads one token, then not (needs ``stream_buffer=1``)."""
        held = Held(self, model_id)
        self.call(lambda: held.start(content))
        return held


class Held:
    """A runtime request parked after its first token (see :meth:`Served.hold`)."""

    def __init__(self, served: Served, model_id: str) -> None:
        self.served = served
        self.model_id = model_id
        self.stream: Any = None

    async def start(self, content: str) -> None:
        params = GenParams(temperature=0, max_tokens=400)
        self.stream = self.served.runtime.generate(
            self.model_id, [{"role": "user", "content": content}], params)
        while not isinstance(await asyncio.wait_for(self.stream.__anext__(), LIMIT), str):
            pass

    def release(self) -> None:
        self.served.call(self.stream.aclose)


@contextmanager
def served(settings: Settings, models: dict[str, tuple[Path, str]] | None = None, *,
           stream_buffer: int = 64, ram_free: int = 16 * GiB, **server_kwargs: Any
           ) -> Iterator[Served]:
    """Start a server over fresh services on ``settings`` with ``models`` registered
    (``{id: (path, format)}``); stops everything at exit."""
    services = build_services(settings)
    for model_id, (path, fmt) in (models or {}).items():
        register_model(services.inventory, model_id, path, fmt)
    services.__dict__["runtime"] = RuntimeService(
        settings, services.inventory, memory_probe=FixedMemoryProbe(ram_free, ram_total=ram_free),
        stream_buffer=stream_buffer)
    ready = threading.Event()
    box: dict[str, Any] = {}
    loop = asyncio.new_event_loop()

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            from tui.serve.server import start_server

            try:
                box["handle"] = await start_server(services, host="127.0.0.1", port=0,
                                                   **server_kwargs)
            except BaseException as exc:
                box["error"] = exc
            finally:
                ready.set()

        loop.run_until_complete(start())
        if "handle" in box:
            loop.run_forever()

    thread = threading.Thread(target=run, name="modeldeck-test-server", daemon=True)
    thread.start()
    ready.wait(LIMIT)
    if "error" in box:
        thread.join(LIMIT)
        services.close()
        raise box["error"]
    handle = box["handle"]
    result = Served(services, handle.url, loop, handle)
    unsubscribe = asyncio.run_coroutine_threadsafe(
        _subscribe(services.runtime, result.events), loop).result(LIMIT)
    try:
        yield result
    finally:
        async def stop() -> None:
            unsubscribe()
            await handle.stop()
            if "downloads" in services.__dict__:
                await services.downloads.stop()
            await services.runtime.aclose()

        try:
            asyncio.run_coroutine_threadsafe(stop(), loop).result(LIMIT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(LIMIT)
            loop.close()
            services.close()


async def _subscribe(runtime: RuntimeService, events: list[RuntimeEvent]) -> Callable[[], None]:
    return runtime.subscribe(events.append)
