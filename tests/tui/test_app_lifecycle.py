"""The App's load/unload flows against the real runtime (llama.cpp on a tiny GGUF): other
clients' answers are stopped only when the user says so; runtime state comes from the
runtime's events; the Fit column counts the slots a load would use."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tui.app import wiring
from tui.app.app import ModelDeckApp
from tui.app.messages import RuntimeChanged
from tui.app.screens import ConfirmScreen
from tui.app.views import ModelRow
from tui.runtime.errors import AnswerStoppedError
from tui.runtime.service import RuntimeService
from tui.runtime.types import GenParams, ModelState, RuntimeEvent

from tests.support.app import (
    GIB,
    fixed_probe,
    make_app,
    make_services,
    no_gpu_sampler,
    wait_for,
    wait_ready,
)
from tests.support.runtime import register_model
from tests.support.tiny_models import tiny_gguf

SIZE = (120, 40)
HELLO = [{"role": "user", "content": "Hello"}]


def _row(app: ModelDeckApp, model_id: str) -> ModelRow:
    return next(r for r in app.model_table.all_rows.values() if r.model_id == model_id)


def _services(tmp_path: Path, *model_ids: str) -> Any:
    services = make_services(tmp_path, fixed_catalog=False)
    # One text delta may wait for its reader: an answer nobody reads stays in progress.
    services.__dict__["runtime"] = RuntimeService(
        services.settings, services.inventory, memory_probe=fixed_probe(32 * GIB, ()),
        stream_buffer=1)
    for model_id in model_ids:  # a copy each: one inventory record per path
        path = tmp_path / f"{model_id}.gguf"
        shutil.copyfile(tiny_gguf(), path)
        register_model(services.inventory, model_id, path, "gguf")
    return services


async def _another_client(services: Any, model_id: str) -> Any:
    """An answer another client (a server's) has in progress on ``model_id``."""
    stream = services.runtime.generate(model_id, HELLO, GenParams(temperature=0, max_tokens=200),
                                       request_id="other-client")
    assert isinstance(await stream.__anext__(), str)
    return stream


async def _stopped(stream: Any) -> bool:
    try:
        async for _ in stream:
            pass
    except AnswerStoppedError:
        return True
    finally:
        await stream.aclose()
    return False


async def test_unload_of_a_model_others_are_using_asks_first(tmp_path: Path) -> None:
    services = _services(tmp_path, "tiny-a")
    app = make_app(services, sampler=no_gpu_sampler(), compute_fit=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        table = app.model_table
        table.focus()
        table.move_cursor(row=table.get_row_index(_row(app, "tiny-a").key))
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: _row(app, "tiny-a").status == "loaded", 60)
        other = await _another_client(services, "tiny-a")
        assert wiring.busy_models(services) == ["tiny-a"]
        await pilot.press("u")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
        question = app.screen.question
        assert "answering 1 request" in question and "Unload tiny-a anyway?" in question
        await pilot.press("n")
        await pilot.pause(0.2)
        assert services.runtime.is_loaded("tiny-a")
        await pilot.press("u")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
        await pilot.press("y")
        assert await wait_for(pilot, lambda: not services.runtime.is_loaded("tiny-a"), 30)
        assert await _stopped(other)
        assert await wait_for(pilot, lambda: _row(app, "tiny-a").status == "installed")
    services.close()


async def test_switching_away_from_a_model_others_are_using_asks_first(tmp_path: Path) -> None:
    services = _services(tmp_path, "tiny-a", "tiny-b")  # one model loaded at a time
    app = make_app(services, sampler=no_gpu_sampler(), compute_fit=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        app.load_row(_row(app, "tiny-a"))
        assert await wait_for(pilot, lambda: _row(app, "tiny-a").status == "loaded", 60)
        other = await _another_client(services, "tiny-a")
        app.load_row(_row(app, "tiny-b"))  # what ctrl+o's pick does
        assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 30)
        assert "Load tiny-b anyway?" in app.screen.question
        await pilot.press("n")
        await pilot.pause(0.2)
        assert services.runtime.is_loaded("tiny-a") and not services.runtime.is_loaded("tiny-b")
        assert app.prompt_console.model_name == "tiny-a"  # the failed switch left it as it was
        app.load_row(_row(app, "tiny-b"))
        assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 30)
        await pilot.press("y")
        assert await wait_for(pilot, lambda: services.runtime.is_loaded("tiny-b"), 60)
        assert await _stopped(other)
        assert app.prompt_console.model_name == "tiny-b"
    services.close()


async def test_the_console_label_follows_runtime_events_not_its_own_text(tmp_path: Path) -> None:
    services = _services(tmp_path, "tiny-a", "tiny-b")
    app = make_app(services, sampler=no_gpu_sampler(), compute_fit=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        console = app.prompt_console

        async def event(model_id: str, state: ModelState) -> None:
            app.post_message(RuntimeChanged(RuntimeEvent(model_id, state)))
            await pilot.pause()

        await event("tiny-a", ModelState.LOADING)
        assert console.model_name == "tiny-a (loading…)"
        await event("tiny-a", ModelState.LOADED)
        assert console.model_name == "tiny-a"
        await event("tiny-b", ModelState.LOADING)
        await event("tiny-b", ModelState.FAILED)
        assert console.model_name == "tiny-a"  # back to the model that still answers
        await event("tiny-a", ModelState.UNLOADED)
        assert console.model_name is None
    services.close()


async def test_catalog_rows_fit_with_the_slots_a_load_would_use(tmp_path: Path) -> None:
    verdicts = {}
    for slots in (1, 64):
        (tmp_path / str(slots)).mkdir()
        services = make_services(tmp_path / str(slots), parallel_requests=slots)
        services.__dict__["runtime"] = RuntimeService(  # one card, 20 GiB free
            services.settings, services.inventory, memory_probe=fixed_probe(vram_free=(20 * GIB,)))
        rows = wiring.load_rows(services)
        changed = await wiring.fit_for(services, rows)
        verdicts[slots] = {r.key: r.fit for r in changed}
        services.close()
    key = "entry:llama-3.1-8b-instruct-gguf"  # 8B Q4_K_M: one 4k context fits a 20 GiB card
    assert verdicts[1][key] == "gpu"
    assert verdicts[64][key] != "gpu"  # 64 of them do not


async def test_panels_shown_or_hidden_before_the_app_runs_apply_once_it_does(tmp_path: Path
                                                                            ) -> None:
    services = make_services(tmp_path)
    app = make_app(services, sampler=no_gpu_sampler(), compute_fit=False)
    app.show_console = True  # no widgets yet: the watchers must wait for them
    app.show_sidebar = False
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        assert app.query_one("#console").display
        assert not app.query_one("#sidebar").display
    services.close()
