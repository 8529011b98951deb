"""The API server inside the dashboard (Pilot, headless, REAL services): started and stopped
with its key, started on mount by ``serve_with_dashboard``, a bind failure as one line, and
its panel and the model table watched live while the official ``openai`` client makes real
requests against a tiny GGUF in llama.cpp, from another thread; and the console's
"(estimated)" mark on a token count an endpoint did not send."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tui.app.app import ModelDeckApp
from tui.serve.state import read_state

from tests.support.app import make_app, make_services, no_gpu_sampler, wait_for, wait_ready
from tests.support.checks import assert_no_control_chars
from tests.support.runtime import register_model
from tests.support.tiny_models import tiny_gguf

SIZE = (120, 40)
MODEL = "tiny-chat"


def recorded_notices(app: ModelDeckApp) -> list[tuple[str, str, str]]:
    """Record ``(title, message, severity)`` of every notification the app shows."""
    seen: list[tuple[str, str, str]] = []
    notify = app.notify

    def record(message: str, *, title: str = "", severity: Any = "information",
               **kwargs: Any) -> None:
        seen.append((title, str(message), str(severity)))
        notify(message, title=title, severity=severity, **kwargs)

    app.notify = record  # type: ignore[method-assign]
    return seen


def make_dashboard(tmp_path: Path, **settings: Any) -> ModelDeckApp:
    settings.setdefault("serve_port", 0)  # any free port
    settings.setdefault("parallel_requests", 2)
    settings.setdefault("keep_alive_minutes", 0.0)
    services = make_services(tmp_path, fixed_catalog=False, **settings)
    register_model(services.inventory, MODEL, tiny_gguf(), "gguf")
    return make_app(services, sampler=no_gpu_sampler())


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def row_status(app: ModelDeckApp) -> str:
    from tui.app.views import status_label

    row = next(r for r in app.model_table.all_rows.values() if r.model_id == MODEL)
    return status_label(row)


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Run a blocking client call off the app's loop (as another program would)."""
    return await asyncio.to_thread(fn)


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELDECK_SERVE_API_KEY", raising=False)


async def test_key_starts_server_panel_follows_requests_key_stops_it(tmp_path: Path) -> None:
    from openai import BadRequestError, OpenAI

    app = make_dashboard(tmp_path)
    notes = recorded_notices(app)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        panel = app.server_panel
        assert not panel.display or panel.has_class("-hidden")
        await pilot.press("A")
        assert await wait_for(pilot, lambda: app.api_server is not None)
        handle = app.api_server
        url = handle.url
        assert await wait_for(pilot, lambda: not panel.has_class("-hidden"))
        assert f"{url}/v1" in panel.text
        assert f"ssh -N -L {handle.port}:127.0.0.1:{handle.port}" in panel.text
        assert "in flight 0  queued 0  0 req/min  0 tok/min" in panel.text
        info = read_state(app.settings.state_dir)
        assert info is not None and info.port == handle.port  # `modeldeck ps` finds it

        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)

        def three_answers() -> list[int]:
            tokens = []
            for _ in range(2):
                done = client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hello"}],
                    max_tokens=6, temperature=0)
                tokens.append(done.usage.completion_tokens)
            stream = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=6,
                temperature=0, stream=True, stream_options={"include_usage": True})
            for chunk in stream:
                if chunk.usage is not None:
                    tokens.append(chunk.usage.completion_tokens)
            return tokens

        tokens = await in_thread(three_answers)
        assert len(tokens) == 3 and all(tokens)
        total = sum(tokens)
        assert await wait_for(
            pilot, lambda: f"3 req/min  {total} tok/min  (3 answered)" in panel.text), panel.text
        # The loaded model's row counts what the server answered with it.
        assert await wait_for(pilot, lambda: row_status(app) == "loaded, 3 req"), row_status(app)

        # An error a client was sent is the panel's last error, one clean line.
        def unknown_model() -> None:
            with pytest.raises(BadRequestError):
                client.chat.completions.create(
                    model="no-such\x1b[31mmodel", messages=[{"role": "user", "content": "x"}])

        await in_thread(unknown_model)
        assert await wait_for(pilot, lambda: "last error: 400" in panel.text), panel.text
        error_line = panel.text.splitlines()[-1]
        assert_no_control_chars(error_line)

        # The palette's entry says Stop now; the key stops it.
        from tui.app.commands import palette_commands

        labels = [label for label, _cb, _help in palette_commands(app)]
        assert "Stop API server" in labels and "Start API server" not in labels
        await pilot.press("A")
        assert await wait_for(pilot, lambda: app.api_server is None and not app.server.busy)
        assert await wait_for(pilot, lambda: panel.has_class("-hidden"))
        assert not panel.sampling
        assert port_closed(handle.port)
        assert read_state(app.settings.state_dir) is None
        assert ("API server", "API server stopped", "information") in notes
        # The model stays loaded for the console: the server shared the runtime.
        assert app.services.runtime.is_loaded(MODEL)
        assert await wait_for(pilot, lambda: row_status(app) == "loaded"), row_status(app)


async def test_port_in_use_is_one_line_and_nothing_breaks(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        app = make_dashboard(tmp_path, serve_port=port)
        notes = recorded_notices(app)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(app, pilot)
            await pilot.press("A")
            assert await wait_for(pilot, lambda: any(n[0] == "API server not started"
                                                     for n in notes)), notes
            await pilot.pause()
            [(_title, message, severity)] = [n for n in notes if n[0].startswith("API server")]
            assert severity == "error"
            assert "\n" not in message and "Traceback" not in message
            assert f"cannot listen on 127.0.0.1:{port}" in message
            assert "pick another --port" in message
            assert app.api_server is None and not app.server.busy
            assert app.server_panel.has_class("-hidden")
            assert read_state(app.settings.state_dir) is None
            # Nothing else broke: the table answers keys, and the key tries again.
            await pilot.press("down")
            notes.clear()
            await pilot.press("A")
            assert await wait_for(pilot, lambda: len(notes) == 1), notes
            assert notes[0][0] == "API server not started"
    finally:
        holder.close()


async def test_beyond_loopback_without_key_is_refused(tmp_path: Path) -> None:
    app = make_dashboard(tmp_path, serve_host="0.0.0.0")
    notes = recorded_notices(app)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("A")
        assert await wait_for(pilot, lambda: bool(notes)), notes
        title, message, severity = notes[0]
        assert title == "API server not started" and severity == "error"
        assert "refusing to listen on 0.0.0.0 without an API key" in message
        assert "MODELDECK_SERVE_API_KEY" in message and "\n" not in message
        assert app.api_server is None


@pytest.mark.parametrize("low_redraw", [False, True])
async def test_serve_with_dashboard_starts_on_mount_and_quit_stops(
        tmp_path: Path, low_redraw: bool) -> None:
    from tui.app.widgets.server_panel import INTERVAL, LOW_REDRAW_INTERVAL

    app = make_dashboard(tmp_path, serve_with_dashboard=True, low_redraw=low_redraw)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        assert await wait_for(pilot, lambda: app.api_server is not None)
        handle = app.api_server
        assert await wait_for(pilot, lambda: not app.server_panel.has_class("-hidden"))
        assert handle.url + "/v1" in app.server_panel.text
        assert app.server_panel.sampling
        assert app.server_panel.interval == (LOW_REDRAW_INTERVAL if low_redraw else INTERVAL)
        assert not port_closed(handle.port)
        await pilot.press("q")
    assert port_closed(handle.port)
    assert read_state(app.settings.state_dir) is None


# -- the console's "(estimated)" mark --------------------------------------------------------


def sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


@asynccontextmanager
async def endpoint(with_usage: bool) -> AsyncIterator[str]:
    """A real OpenAI-compatible server on 127.0.0.1 (aiohttp) streaming a 5-token answer,
    with or without ``usage`` (as vLLM without ``stream_options`` support)."""
    from aiohttp import web

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "remote"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in ("one", " two", " three", " four", " five"):
            await resp.write(sse({"object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {"content": piece}, "finish_reason": None}]}))
        await resp.write(sse({"object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        if with_usage:
            await resp.write(sse({"object": "chat.completion.chunk", "choices": [], "usage": {
                "prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("with_usage", [False, True])
async def test_console_marks_token_counts_an_endpoint_did_not_send(
        tmp_path: Path, with_usage: bool) -> None:
    from tui.runtime import ModelSpec

    app = make_dashboard(tmp_path)
    async with app.run_test(size=SIZE) as pilot, endpoint(with_usage) as url:
        await wait_ready(app, pilot)
        spec = ModelSpec.endpoint(url, "remote")
        await app.services.runtime.load(spec)
        console = app.prompt_console
        console.use_model(spec.id, "remote")
        app.show_console = True
        await pilot.pause()
        await pilot.press(*"hello", "enter")
        assert await wait_for(pilot, lambda: "5 tokens" in str(console.metrics_line.render()))
        line = str(console.metrics_line.render())
        assert ("5 tokens (estimated)" in line) == (not with_usage), line


async def test_stop_lets_an_answer_in_flight_finish(tmp_path: Path) -> None:
    """A request queued behind the console's answer is in flight and queued on the panel;
    stopping the server then lets it finish (graceful), and the runtime stays the console's."""
    from openai import OpenAI

    from tui.runtime.service import RuntimeService
    from tui.runtime.types import GenParams

    from tests.support.app import fixed_probe

    app = make_dashboard(tmp_path, parallel_requests=1)
    services = app.services
    services.__dict__["runtime"] = RuntimeService(  # one slot; a reader that stops, blocks
        services.settings, services.inventory, memory_probe=fixed_probe(), stream_buffer=1)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        runtime = services.runtime
        # The console's own answer takes the only slot and parks after its first token.
        held = runtime.generate(MODEL, [{"role": "user", "content": "hold"}],
                                GenParams(temperature=0, max_tokens=400))
        while not isinstance(await held.__anext__(), str):
            pass
        await pilot.press("A")
        assert await wait_for(pilot, lambda: app.api_server is not None)
        handle, panel = app.api_server, app.server_panel
        client = OpenAI(base_url=f"{handle.url}/v1", api_key="unused", max_retries=0,
                        timeout=60)

        def streamed() -> tuple[str, str | None]:
            text, finish = "", None
            for chunk in client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=6,
                    temperature=0, stream=True):
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
            return text, finish

        answer = asyncio.ensure_future(in_thread(streamed))
        assert await wait_for(pilot, lambda: "in flight 1  queued 1" in panel.text), panel.text
        await pilot.press("A")  # stop: no new connections, open answers get their time
        assert await wait_for(pilot, lambda: app.api_server is None and app.server.busy)
        await held.aclose()  # the slot frees: the queued answer runs to its end
        text, finish = await asyncio.wait_for(answer, 60)
        assert text and finish == "length"
        assert await wait_for(pilot, lambda: not app.server.busy and panel.has_class("-hidden"))
        assert port_closed(handle.port)
        assert runtime.is_loaded(MODEL)


async def test_quit_while_the_server_stops_waits_for_the_stop(tmp_path: Path) -> None:
    """Quitting while a stop waits on an answer in flight: the stop still ends (the open
    answer is cancelled after its grace) before the runtime closes; nothing is left
    listening and serve.json is gone."""
    import threading

    from openai import OpenAI

    from tui.runtime.service import RuntimeService
    from tui.runtime.types import GenParams

    from tests.support.app import fixed_probe

    app = make_dashboard(tmp_path, parallel_requests=1)
    services = app.services
    services.__dict__["runtime"] = RuntimeService(
        services.settings, services.inventory, memory_probe=fixed_probe(), stream_buffer=1)
    outcome: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        held = services.runtime.generate(MODEL, [{"role": "user", "content": "hold"}],
                                         GenParams(temperature=0, max_tokens=400))
        while not isinstance(await held.__anext__(), str):
            pass
        await pilot.press("A")
        assert await wait_for(pilot, lambda: app.api_server is not None)
        handle = app.api_server
        client = OpenAI(base_url=f"{handle.url}/v1", api_key="unused", max_retries=0,
                        timeout=60)

        def queued() -> None:
            try:
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=6)
                outcome.append("answered")
            except Exception as exc:
                outcome.append(type(exc).__name__)

        thread = threading.Thread(target=queued, daemon=True)
        thread.start()
        panel = app.server_panel
        assert await wait_for(pilot, lambda: "in flight 1  queued 1" in panel.text), panel.text
        await pilot.press("A")
        assert await wait_for(pilot, lambda: app.server.busy)
        await app.action_quit()  # no downloads: quits at once, the stop still under way
    assert port_closed(handle.port)
    assert read_state(app.settings.state_dir) is None
    thread.join(60)
    assert outcome and outcome[0] != "answered"  # cancelled after its grace, not hung
