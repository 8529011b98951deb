"""The console's chats under Pilot with a real tiny GGUF in the real runtime: a context that
fills up, failed prompts, new chat / clear, saved chats reopened after a restart, "Load with…"
remembered per model, Esc stopping only the console's own answer."""

from __future__ import annotations

import asyncio
import inspect
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from textual.message import Message
from textual.widgets import OptionList, Static

from tui.app import messages as app_messages
from tui.app.app import ModelDeckApp
from tui.app.screens import ChatListScreen, ConfirmScreen, LoadOptionsScreen
from tui.app.widgets import PromptConsole
from tui.chat import ChatStore
from tui.runtime.service import RuntimeService
from tui.runtime.types import GenerationMetrics, GenParams, LoadOptions
from tui.services import Services

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

pytest.importorskip("llama_cpp")

SIZE = (120, 40)
HOSTILE = "[bold]x[/] \x1b[2J"
SMALL = LoadOptions(context_length=256, parallel=1)  # fills up in a few answers
GREEDY = GenParams(temperature=0, max_tokens=40)


def text_of(widget: Any) -> str:
    return str(widget.render())


def build(tmp_path: Path) -> Services:
    """Real services on ``tmp_path`` (the same state dir each time: a restart), a CPU-only
    runtime, the tiny GGUF registered as "tiny"."""
    services = make_services(tmp_path, fixed_catalog=False)
    services.__dict__["runtime"] = RuntimeService(
        services.settings, services.inventory, memory_probe=fixed_probe(32 * GIB, ())
    )
    if services.inventory.get_model("tiny") is None:
        register_model(services.inventory, "tiny", tiny_gguf(), "gguf")
    return services


def row_of(app: ModelDeckApp, model_id: str) -> Any:
    return next(r for r in app.model_table.all_rows.values() if r.model_id == model_id)


@asynccontextmanager
async def chat_app(
    tmp_path: Path, options: LoadOptions | None = SMALL, params: GenParams = GREEDY,
    seen: list[Message] | None = None,
) -> AsyncIterator[tuple[ModelDeckApp, Any]]:
    """The app with "tiny" loaded (``options``: for models with none remembered) and the
    console focused, greedy answers."""
    services = build(tmp_path)
    app = make_app(services, sampler=no_gpu_sampler())
    app.load_options = options
    app.gen_params = params
    hook = seen.append if seen is not None else None
    try:
        async with app.run_test(size=SIZE, message_hook=hook) as pilot:
            await wait_ready(app, pilot)
            app.load_row(row_of(app, "tiny"))
            assert await wait_for(pilot, lambda: app.prompt_console.model_id == "tiny", 30)
            await pilot.press("e")
            yield app, pilot
    finally:
        services.close()


async def ask(pilot: Any, console: PromptConsole, prompt: str) -> None:
    await pilot.press(*prompt, "enter")
    assert await wait_for(pilot, lambda: not console.streaming, 30)
    await pilot.pause()


def log_text(console: PromptConsole) -> str:
    return "\n".join(console.output.lines)


# -- a conversation past the context -------------------------------------------------------


async def test_a_conversation_longer_than_the_context_keeps_working(tmp_path: Path) -> None:
    seen: list[Message] = []
    async with chat_app(tmp_path, seen=seen) as (app, pilot):
        console = app.prompt_console
        console.set_system_prompt("You are tiny.")
        for i in range(6):
            await ask(pilot, console, f"question {i} tell me about the model and the tokens")
            assert "error" not in text_of(console.metrics_line)
            assert "tok/s" in text_of(console.metrics_line)
        notes = re.findall(r"\[(\d+) earlier turns? left out to fit the 256-token context\]",
                           log_text(console))
        assert notes and int(notes[-1]) >= 1
        session = console.session
        assert session is not None and len(session.turns) == 12  # the chat itself is whole
        assert session.system == "You are tiny."
        # (the hook sees a message at each node it bubbles through)
        done = list({id(m): m for m in seen if isinstance(m, PromptConsole.AnswerDone)}.values())
        assert len(done) == 6
        assert all(m.metrics.prompt_tokens <= 256 - 40 for m in done)  # each prompt fit


async def test_a_failed_prompt_is_not_kept_and_returns_to_the_input(tmp_path: Path) -> None:
    async with chat_app(tmp_path) as (app, pilot):
        console = app.prompt_console
        await ask(pilot, console, "hello")
        assert console.session is not None and len(console.session.turns) == 2
        too_long = "word " * 300
        console.prompt_input.value = too_long
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: not console.streaming, 30)
        await pilot.pause()
        error = text_of(console.metrics_line)
        assert error.startswith("error: the prompt needs")
        # the whole line is shown, wrapped over several rows, to its last word
        assert error.endswith("(L: load with…))")
        assert console.metrics_line.size.height > 1
        assert console.metrics_line.has_class("-error")
        assert console.prompt_input.value == too_long.strip()
        assert len(console.session.turns) == 2  # the failed prompt is not in the chat
        saved = app.chat_store().open(console.session.id)
        assert saved is not None and len(saved.turns) == 2

        # edited and sent again, it is answered in the same conversation
        await pilot.press("ctrl+u", *"short again", "enter")
        assert await wait_for(pilot, lambda: not console.streaming, 30)
        assert "tok/s" in text_of(console.metrics_line)
        assert not console.metrics_line.has_class("-error")
        assert [m["content"] for m in console.session.turns[::2]] == ["hello", "short again"]


async def test_no_model_loaded_gives_the_prompt_back(tmp_path: Path) -> None:
    services = build(tmp_path)
    app = make_app(services, sampler=no_gpu_sampler())
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(app, pilot)
            await pilot.press("e", *"anyone there?", "enter")
            await pilot.pause()
            console = app.prompt_console
            assert text_of(console.metrics_line) == "error: no model loaded (enter or ctrl+o)"
            assert console.prompt_input.value == "anyone there?"
            assert not console.streaming
    finally:
        services.close()


# -- new chat, clear -------------------------------------------------------------------------


async def test_new_chat_and_clear(tmp_path: Path) -> None:
    async with chat_app(tmp_path) as (app, pilot):
        console = app.prompt_console
        store = app.chat_store()
        await ask(pilot, console, "first chat")
        first = console.session
        assert first is not None

        await pilot.press("ctrl+n")
        assert console.session is None
        assert console.output.lines[:2] == ["[new chat]", ""]
        await ask(pilot, console, "second chat")
        second = console.session
        assert second is not None and second.id != first.id
        assert [c.title for c in store.list("tiny")] == ["second chat", "first chat"]

        await ask(pilot, console, "more")
        await pilot.press("ctrl+l")  # same conversation, emptied (also where it is saved)
        assert console.session is second and second.turns == []
        assert "[chat cleared]" in console.output.lines and "> more" not in console.output.lines
        assert [c.title for c in store.list("tiny")] == ["first chat"]
        await ask(pilot, console, "after clear")
        assert console.session is second
        assert [m["content"] for m in second.turns[::2]] == ["after clear"]
        assert store.list("tiny")[0].id == second.id

        # the palette has them too
        app.model_table.focus()
        await pilot.press("ctrl+p", *"new chat")
        await pilot.pause(0.3)
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: console.session is None, 5)


# -- saved chats, reopened after a restart --------------------------------------------------


async def test_chats_are_saved_and_reopened_after_a_restart(tmp_path: Path) -> None:
    async with chat_app(tmp_path) as (app, pilot):
        console = app.prompt_console
        console.set_system_prompt("Be terse.")
        console.prompt_input.value = f"{HOSTILE} first question"  # ESC is no key to press
        await ask(pilot, console, "")
        await ask(pilot, console, "second question")
        answers = [m["content"] for m in console.session.turns[1::2]]
        chat_id = console.session.id

    async with chat_app(tmp_path) as (app, pilot):  # the same state dir: a restart
        console = app.prompt_console
        assert console.session is None and not console.output.lines
        app.model_table.focus()
        await pilot.press("ctrl+p", *"open chat")
        await pilot.pause(0.3)
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ChatListScreen), 10)
        options = app.screen.query_one(OptionList)
        assert options.option_count == 1
        label = str(options.get_option_at_index(0).prompt)
        assert label.startswith("[bold]x[/] \\x1b[2J first question  (4 messages")
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: console.session is not None, 10)
        session = console.session
        assert session.id == chat_id and session.system == "Be terse."
        assert console.system_prompt == "Be terse."
        lines = console.output.lines
        assert "> [bold]x[/] \\x1b[2J first question" in lines and "> second question" in lines
        assert any(line.startswith("[reopened: [bold]x[/]") for line in lines)
        shown = "".join(log_text(console).split())
        assert all("".join(a.split()) in shown for a in answers)

        # it goes on where it was
        assert app.focused is console.prompt_input
        await ask(pilot, console, "third question")
        assert len(session.turns) == 6
        assert app.chat_store().list("tiny")[0].messages == 6


async def test_a_saved_chat_can_be_deleted_from_the_list(tmp_path: Path) -> None:
    async with chat_app(tmp_path) as (app, pilot):
        console = app.prompt_console
        await ask(pilot, console, "delete me")
        app.action_open_chat()
        assert await wait_for(pilot, lambda: isinstance(app.screen, ChatListScreen), 10)
        await pilot.press("d")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.press("y")
        assert await wait_for(pilot, lambda: not isinstance(
            app.screen, ChatListScreen | ConfirmScreen), 10)
        assert app.chat_store().list("tiny") == []


# -- load options ----------------------------------------------------------------------------


async def set_field(pilot: Any, text: str) -> None:
    await pilot.press("ctrl+a", "ctrl+k", *text)


async def test_load_with_validates_and_is_remembered_per_model(tmp_path: Path) -> None:
    services = build(tmp_path)
    second = tmp_path / "tiny2.gguf"
    shutil.copyfile(tiny_gguf(), second)
    register_model(services.inventory, "tiny2", second, "gguf")
    app = make_app(services, sampler=no_gpu_sampler())
    runtime = services.runtime
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(app, pilot)
            table = app.model_table
            table.focus()
            table.move_cursor(row=table.get_row_index(row_of(app, "tiny").key))
            await pilot.press("L")
            assert await wait_for(pilot, lambda: isinstance(app.screen, LoadOptionsScreen), 10)
            screen = app.screen
            error = screen.query_one("#load-error", Static)
            assert screen.values() == {"context_length": "", "gpu_layers": "auto",
                                       "threads": "", "parallel": ""}
            await set_field(pilot, "lots")
            await pilot.press("enter")
            await pilot.pause()
            assert app.screen is screen
            assert text_of(error).startswith("context length must be a whole number from 64")
            await set_field(pilot, "320")
            await pilot.pause()
            assert text_of(error) == ""
            await pilot.press("tab")
            await set_field(pilot, "some")
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert text_of(error) == "GPU layers: auto, all or a number of layers (0 = CPU)"
            assert screen.focused is screen.field("gpu_layers")
            await set_field(pilot, "0")
            await pilot.press("tab")
            await set_field(pilot, "2")
            await pilot.press("tab")
            await set_field(pilot, "2")
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: app.prompt_console.model_id == "tiny", 30)
            loaded = runtime.loaded()[0]
            assert (loaded.context_length, loaded.gpu_layers, loaded.slots) == (320, 0, 2)
            wanted = LoadOptions(context_length=320, gpu_layers=0, threads=2, parallel=2)
            assert ChatStore(services.db).load_options("tiny") == wanted
            assert ChatStore(services.db).load_options("tiny2") is None
            model_line = text_of(app.prompt_console.query_one("#console-model"))
            assert model_line == "Model: tiny | ctx 320 | cpu | 2 threads | 2 parallel"

            # another model loads with the defaults, and "tiny" again with its options
            app.load_row(row_of(app, "tiny2"))
            assert await wait_for(pilot, lambda: app.prompt_console.model_id == "tiny2", 30)
            assert runtime.loaded()[0].context_length == 512
            app.load_row(row_of(app, "tiny"))
            assert await wait_for(pilot, lambda: app.prompt_console.model_id == "tiny", 30)
            assert runtime.loaded()[0].context_length == 320

            # reopened, the modal shows them; Esc changes nothing
            await pilot.press("L")
            assert await wait_for(pilot, lambda: isinstance(app.screen, LoadOptionsScreen), 10)
            assert app.screen.values() == {"context_length": "320", "gpu_layers": "0",
                                           "threads": "2", "parallel": "2"}
            await pilot.press("escape")
            assert await wait_for(pilot, lambda: not isinstance(app.screen, LoadOptionsScreen))
    finally:
        services.close()

    # after a restart too
    services = build(tmp_path)
    app = make_app(services, sampler=no_gpu_sampler())
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(app, pilot)
            app.load_row(row_of(app, "tiny"))
            assert await wait_for(pilot, lambda: app.prompt_console.model_id == "tiny", 30)
            assert services.runtime.loaded()[0].context_length == 320
    finally:
        services.close()


# -- the answer stream belongs to the console ------------------------------------------------


async def test_esc_stops_only_the_consoles_own_answer(tmp_path: Path) -> None:
    long = GenParams(temperature=0, max_tokens=30000)  # goes on until stopped
    async with chat_app(tmp_path, LoadOptions(context_length=32768, parallel=2),
                        params=long) as (app, pilot):
        runtime = app.services.runtime
        other: list[Any] = []

        async def another_client() -> None:
            async for item in runtime.generate("tiny", [{"role": "user", "content": "go"}],
                                               long, request_id="someone-else"):
                other.append(item)

        console = app.prompt_console
        await pilot.press(*"go on and on", "enter")
        assert await wait_for(
            pilot, lambda: console.streaming and len(console.output.lines) > 3, 20)
        task = asyncio.ensure_future(another_client())
        assert await wait_for(pilot, lambda: len(other) > 5, 20)
        # the console's worker streams the answer: no App-level message carries tokens
        workers = [w for w in app.workers if w.group == "answer"]
        assert len(workers) == 1 and workers[0].node is console
        before = len(other)
        await pilot.press("escape")
        assert not console.streaming
        assert "cancelled" in text_of(console.metrics_line)
        # the other request goes on (or ends by itself), it is not cancelled
        assert await wait_for(pilot, lambda: len(other) > before + 20 or task.done(), 20)
        if task.done():
            assert isinstance(other[-1], GenerationMetrics)
            assert other[-1].finish_reason != "cancelled"
        else:
            assert runtime.cancel("someone-else")
            await asyncio.wait_for(task, 20)
        session = console.session
        assert session is not None and session.turns[-1]["role"] == "assistant"
        assert session.turns[-1]["content"]  # the partial answer is kept


def test_the_app_has_no_chat_state_machine_left() -> None:
    gone = ("_prompt_submitted", "_generate", "_remember_answer", "_queue_tokens",
            "_flush_tokens", "_tokens_arrived", "_answer_finished", "_cancel_requested",
            "_cancel_answer", "_conversations")
    source = inspect.getsource(ModelDeckApp)
    assert not [name for name in gone if name in source]
    for name in ("TokensArrived", "AnswerStarted", "AnswerFinished"):
        assert not hasattr(app_messages, name)
    assert "TOKEN_FLUSH_S" not in source
