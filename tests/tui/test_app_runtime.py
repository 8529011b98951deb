"""The dashboard against REAL services: fakehub downloads, llama.cpp on a tiny GGUF, deletion,
the add-model and Hub-search modals (Pilot, headless)."""

from __future__ import annotations

import io
import re
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console
from textual.geometry import Region
from textual.widgets import Button, DataTable, SelectionList, Static

from tui import formatting
from tui.app.app import ModelDeckApp
from tui.app.screens import AddModelScreen, ConfirmScreen, HubSearchScreen
from tui.app.views import MetricsView
from tui.app.widgets.answer_log import wrap_line
from tui.runtime.service import RuntimeService
from tui.runtime.types import GenParams, LoadOptions
from tui.services import Services

from tests.fakehub import FakeHub
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
from tests.support.tiny_models import make_tiny_gguf, tiny_gguf

SIZE = (120, 40)
MIB = 1 << 20


def text_of(widget: Any) -> str:
    """The plain text a Static shows."""
    return str(widget.render())


def cpu_runtime(services: Services, ram_free: int = 32 * GIB) -> None:
    """Swap in a runtime that sees no GPU and ``ram_free`` bytes of RAM."""
    services.__dict__["runtime"] = RuntimeService(
        services.settings, services.inventory, memory_probe=fixed_probe(ram_free, ())
    )


def row_by_model(app: ModelDeckApp, model_id: str) -> Any:
    return next(r for r in app.model_table.all_rows.values() if r.model_id == model_id)


def status_of(app: ModelDeckApp, model_id: str) -> str:
    return row_by_model(app, model_id).status


async def focus_row(app: ModelDeckApp, pilot: Any, key: str) -> None:
    table = app.model_table
    table.focus()
    table.move_cursor(row=table.get_row_index(key))
    await pilot.pause()


def notices(app: ModelDeckApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


@pytest.fixture
def services(tmp_path: Path):
    svc = make_services(tmp_path, fixed_catalog=False)
    cpu_runtime(svc)
    yield svc
    svc.close()


# -- (a) the full flow ----------------------------------------------------------------------


async def test_add_repo_download_load_generate_unload(
    hub: FakeHub, services: Services, tmp_path: Path
) -> None:
    gguf = make_tiny_gguf(tmp_path / "tiny.gguf")
    hub.add_repo("acme/tiny-GGUF", {"tiny-Q8_0.gguf": gguf.read_bytes(), "README.md": b"hi"})
    app = make_app(services, sampler=no_gpu_sampler(), watch_downloads=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("a")
        assert isinstance(app.screen, AddModelScreen)
        await pilot.press(*"acme/tiny-GGUF", "enter")
        files = app.screen.query_one("#add-files", SelectionList)
        assert await wait_for(pilot, lambda: files.option_count == 1, timeout=10)
        label = str(files.get_option_at_index(0).prompt)
        assert "Q8_0" in label and "tiny-Q8_0.gguf" in label and "cpu" in label
        files.focus()
        await pilot.press("space")
        assert files.selected == [0]
        await pilot.click("#add-hub-ok")
        ok = await wait_for(pilot, lambda: not isinstance(app.screen, AddModelScreen))
        assert ok, text_of(app.screen.query_one("#add-error"))

        # The download runs: the panel shows it, then the row turns installed in place.
        panel = app.downloads_panel
        assert await wait_for(pilot, lambda: bool(panel.jobs), timeout=10)

        def installed() -> Any:
            # Installed *and* reloaded from the inventory (the row then carries the model id).
            return next((r for r in app.model_table.all_rows.values()
                         if "tiny-GGUF" in r.name and r.status == "installed"
                         and r.model_id is not None), None)

        assert await wait_for(pilot, lambda: installed() is not None, timeout=30)
        assert await wait_for(
            pilot, lambda: all(j.state == "done" for j in panel.jobs.values()), timeout=10
        )
        row = installed()
        assert row.model_id is not None
        assert any("Download finished" in n for n in notices(app))

        # Load it from the table: loading → loaded in the status and the console label.
        await focus_row(app, pilot, row.key)
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: status_of(app, row.model_id) == "loaded", 30)
        assert app.prompt_console.model_name == row.name

        # Ask; tokens stream into the console; metrics follow. Greedy decoding: a sampled
        # answer from the tiny random model can be a lone end token (no text, no speed).
        app.gen_params = GenParams(temperature=0, max_tokens=32)
        await pilot.press("e")
        await pilot.press(*"Hello", "enter")
        console = app.prompt_console
        assert await wait_for(pilot, lambda: not console.streaming, timeout=30)
        lines = console.output.lines
        answer = lines[lines.index("> Hello") + 1:]
        assert "".join(answer).strip(), lines
        assert "tok/s" in text_of(console.metrics_line)
        assert "TTFT" in text_of(console.metrics_line)

        # Unload with u (from the table).
        app.model_table.focus()
        await pilot.press("u")
        assert await wait_for(pilot, lambda: status_of(app, row.model_id) == "installed", 10)
        assert console.model_name is None
        assert not services.runtime.loaded()


# -- (b) cancel -----------------------------------------------------------------------------


@asynccontextmanager
async def long_answer_console(services: Services) -> AsyncIterator[tuple[ModelDeckApp, Any]]:
    """The app with "tiny-long" (32k context, greedy, up to 30,000 tokens: answers that go on
    until cancelled) loaded and the console focused."""
    path = tiny_gguf(context_length=32768)
    register_model(services.inventory, "tiny-long", path, "gguf")
    app = make_app(services, sampler=no_gpu_sampler())
    app.load_options = LoadOptions(context_length=32768)
    app.gen_params = GenParams(temperature=0, max_tokens=30000)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        app.load_row(row_by_model(app, "tiny-long"))
        assert await wait_for(pilot, lambda: status_of(app, "tiny-long") == "loaded", 30)
        await pilot.press("e")
        yield app, pilot


async def test_escape_cancels_a_long_generation_quickly(services: Services) -> None:
    async with long_answer_console(services) as (app, pilot):
        await pilot.press(*"Go on forever", "enter")
        console = app.prompt_console
        assert await wait_for(
            pilot, lambda: len(console.output.lines[-1]) > 20 and console.streaming, 10
        )
        started = time.perf_counter()
        await pilot.press("escape")
        assert await wait_for(pilot, lambda: not services.runtime.generating, timeout=3)
        elapsed = time.perf_counter() - started
        assert elapsed < 1.5
        assert not console.streaming
        assert "cancelled" in text_of(console.metrics_line)
        # The partial answer is kept in the conversation and the model answers again.
        history = console.session.turns
        assert [m["role"] for m in history] == ["user", "assistant"]
        app.gen_params = GenParams(temperature=0, max_tokens=8)
        await pilot.press(*"Again", "enter")
        assert await wait_for(pilot, lambda: not console.streaming and len(history) == 4, 10)
        assert "tok/s" in text_of(console.metrics_line)


# -- (b2) the console wraps answers ---------------------------------------------------------

# Unwrapped, a long answer gave the console log a horizontal scrollbar whose thumb showed as a
# stray block glyph under the answer, while streaming and after it (also after Esc).
BLOCK_GLYPHS = frozenset("▏▎▍▌▋▊▉█▐")


def region_text(app: ModelDeckApp, region: Region) -> str:
    """The characters on screen inside ``region`` (scrollbars included), rows joined."""
    screen = Console(
        width=app.size.width,
        height=app.size.height,
        file=io.StringIO(),
        record=True,
        force_terminal=True,
        color_system="truecolor",
        legacy_windows=False,
        safe_box=False,
    )
    screen.print(app.screen._compositor.render_update(full=True))
    rows = screen.export_text(styles=False).splitlines()
    return "\n".join(row[region.x : region.right] for row in rows[region.y : region.bottom])


def assert_wrapped(app: ModelDeckApp, streamed: str | None) -> None:
    """Lines fit, no horizontal scrollbar or block glyph; the answer shows ``streamed``
    (when given) but for the spaces the lines were broken at."""
    log = app.prompt_console.output
    assert log.wrap_width > 0
    assert all(cell_len(line) <= log.wrap_width for line in log.lines), log.lines
    assert not log.show_horizontal_scrollbar
    shown = region_text(app, log.region)
    assert not BLOCK_GLYPHS & set(shown), shown
    if streamed is not None:
        answer = "".join(log.lines[log.lines.index("> Hello") + 1 :])
        assert "".join(answer.split()) == "".join(streamed.split())


def test_wrap_line_breaks_at_spaces_and_counts_cells() -> None:
    assert wrap_line("the quick brown fox", 10) == ["the quick", "brown fox"]
    assert wrap_line("abcdefghij klm", 4) == ["abcd", "efgh", "ij", "klm"]
    assert wrap_line("漢字漢字漢", 5) == ["漢字", "漢字", "漢"]  # two cells each
    assert wrap_line("漢", 1) == ["漢"]  # wider than the line: still moves on
    assert wrap_line("fits", 4) == ["fits"] and wrap_line("any", 0) == ["any"]
    assert wrap_line("ends at a break ", 15) == ["ends at a break", ""]  # next text: new line


async def test_console_wraps_long_answers_and_rewraps_on_resize(services: Services) -> None:
    tokens = [f"word{i} " for i in range(60)] + ["x" * 150]
    app = make_app(services, sampler=no_gpu_sampler())
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("e")
        console = app.prompt_console
        log = console.output
        console.start_answer("Hello")
        for token in tokens[:30]:
            console.append_tokens(token)
        await pilot.pause()
        assert console.streaming and len(log.lines) > 3
        assert_wrapped(app, "".join(tokens[:30]))
        for token in tokens[30:]:
            console.append_tokens(token)
        console.finish_answer(MetricsView(ttft_ms=5, tokens_per_s=50.0, tokens=61))
        await pilot.pause()
        assert_wrapped(app, "".join(tokens))
        first, second = log.lines[1:3]
        assert first.startswith("word0 word1 ") and first[-1].isdigit()
        assert second.startswith("word")  # broken at a space (dropped), not inside a word
        assert "x" * log.wrap_width in log.lines  # no space to break at: cut

        wide = log.wrap_width
        await pilot.resize_terminal(104, 40)  # still wide enough to show the sidebar
        assert await wait_for(pilot, lambda: 0 < log.wrap_width < wide)
        await pilot.pause()
        assert_wrapped(app, "".join(tokens))


async def test_streamed_answer_wraps_while_streaming_after_esc_and_at_the_end(
    services: Services,
) -> None:
    async with long_answer_console(services) as (app, pilot):
        console = app.prompt_console
        log = console.output
        await pilot.press(*"Hello", "enter")
        assert await wait_for(pilot, lambda: console.streaming and len(log.lines) > 4, 10)
        assert_wrapped(app, None)  # part of the answer may still wait for the next flush
        await pilot.press("escape")
        assert await wait_for(pilot, lambda: not services.runtime.generating, timeout=3)
        await pilot.pause()
        assert "cancelled" in text_of(console.metrics_line)
        assert_wrapped(app, console.session.turns[-1]["content"])

        console.new_chat()
        app.gen_params = GenParams(temperature=0, max_tokens=300)
        await pilot.press(*"Hello", "enter")
        assert await wait_for(pilot, lambda: not console.streaming, 30)
        await pilot.pause()
        assert "tok/s" in text_of(console.metrics_line)
        assert len(log.lines) > 3
        assert_wrapped(app, console.session.turns[-1]["content"])


# -- (c) won't fit --------------------------------------------------------------------------


async def test_wont_fit_is_refused_unless_forced(tmp_path: Path) -> None:
    services = make_services(tmp_path, fixed_catalog=False)
    cpu_runtime(services, ram_free=1 * MIB)
    register_model(services.inventory, "tiny", tiny_gguf(), "gguf")
    app = make_app(services, sampler=no_gpu_sampler())
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        row = row_by_model(app, "tiny")
        assert await wait_for(pilot, lambda: row_by_model(app, "tiny").fit == "no")
        await focus_row(app, pilot, row.key)
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
        assert "Load anyway?" in app.screen.question
        assert any("won't fit" in n for n in notices(app))
        assert not any("--force" in n for n in notices(app))  # a CLI hint; the dialog asks
        await pilot.press("n")
        await pilot.pause(0.2)
        assert not services.runtime.is_loaded("tiny")
        assert status_of(app, "tiny") == "installed"
        # Forced: it loads.
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
        await pilot.press("y")
        assert await wait_for(pilot, lambda: status_of(app, "tiny") == "loaded", 30)
    services.close()


# -- (d) delete -----------------------------------------------------------------------------


async def test_delete_confirms_space_freed_and_refuses_while_loaded(
    services: Services,
) -> None:
    target = services.settings.models_dir / "tiny" / "tiny.gguf"
    target.parent.mkdir(parents=True)
    shutil.copy(tiny_gguf(), target)
    size = target.stat().st_size
    register_model(services.inventory, "tiny", target, "gguf")
    app = make_app(services, sampler=no_gpu_sampler())
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        row = row_by_model(app, "tiny")
        # Loaded: refused.
        app.load_row(row)
        assert await wait_for(pilot, lambda: status_of(app, "tiny") == "loaded", 30)
        await focus_row(app, pilot, row.key)
        await pilot.press("d")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("unload first" in n for n in notices(app))
        await pilot.press("u")
        assert await wait_for(pilot, lambda: status_of(app, "tiny") == "installed", 10)
        # Unloaded: asks with the space freed; "Keep" keeps.
        await pilot.press("d")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        assert f"frees {formatting.size(size)}" in app.screen.question
        await pilot.press("n")
        assert target.exists()
        await pilot.press("d")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.press("y")  # a letter never confirms a delete
        assert isinstance(app.screen, ConfirmScreen) and target.exists()
        await pilot.press("left", "enter")
        assert await wait_for(pilot, lambda: row.key not in app.model_table.all_rows, 10)
        assert not target.exists()
        assert services.inventory.get_model("tiny") is None
        assert any(f"freed {formatting.size(size)}" in n for n in notices(app))


async def test_a_word_typed_on_the_table_deletes_nothing(
    services: Services, tmp_path: Path
) -> None:
    """"deploy" typed at the table: ``d`` opens the delete dialog, its ``y`` must not answer."""
    target = services.settings.models_dir / "tiny.gguf"
    shutil.copy(tiny_gguf(), target)
    register_model(services.inventory, "tiny", target, "gguf")
    app = make_app(services, sampler=no_gpu_sampler())
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await focus_row(app, pilot, row_by_model(app, "tiny").key)
        await pilot.press(*"deploy")
        await pilot.pause(0.3)
        assert target.is_file() and services.inventory.get_model("tiny") is not None
        if isinstance(app.screen, ConfirmScreen):  # the dialog is still asking
            await pilot.press("escape")
        assert target.is_file()


# -- (e) add modal errors -------------------------------------------------------------------


async def test_add_modal_bad_inputs_show_one_line_errors(
    hub: FakeHub, services: Services, tmp_path: Path
) -> None:
    app = make_app(services, sampler=no_gpu_sampler())
    before = len(services.catalog.entries())
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("a")
        screen = app.screen
        assert isinstance(screen, AddModelScreen)
        error = screen.query_one("#add-error", Static)

        async def shows_error() -> str:
            assert await wait_for(pilot, lambda: bool(text_of(error)), timeout=10)
            text = text_of(error)
            assert "\n" not in text
            return text

        await pilot.press(*"not a repo", "enter")
        assert "repo" in (await shows_error()).lower()
        repo_input = screen.query_one("#add-repo")
        repo_input.value = "acme/missing"
        screen.show_error("")
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert "missing" in (await shows_error())
        # Adding with nothing listed.
        screen.show_error("")
        await pilot.click("#add-hub-ok")
        assert "select" in (await shows_error())

        tabs = screen.query_one("#add-tabs")
        tabs.active = "tab-url"  # type: ignore[attr-defined]
        await pilot.pause()
        screen.query_one("#add-url").value = "ftp://example.com/x.gguf"  # type: ignore[attr-defined]
        screen.show_error("")
        screen.query_one("#add-url-ok", Button).press()
        assert "URL" in (await shows_error())
        screen.query_one("#add-url").value = "https://example.com/x.gguf"  # type: ignore[attr-defined]
        screen.query_one("#add-sha").value = "xyz"  # type: ignore[attr-defined]
        screen.show_error("")
        screen.query_one("#add-url-ok", Button).press()
        assert "sha256" in (await shows_error())

        tabs.active = "tab-local"  # type: ignore[attr-defined]
        await pilot.pause()
        screen.query_one("#add-path").value = str(tmp_path / "nope.gguf")  # type: ignore[attr-defined]
        screen.show_error("")
        screen.query_one("#add-local-ok", Button).press()
        assert "no such file" in (await shows_error())
        (tmp_path / "bad.gguf").write_bytes(b"not a gguf at all")
        screen.query_one("#add-path").value = str(tmp_path / "bad.gguf")  # type: ignore[attr-defined]
        screen.show_error("")
        screen.query_one("#add-local-ok", Button).press()
        await shows_error()
        assert app.screen is screen
        await pilot.press("escape")
    assert len(services.catalog.entries()) == before
    assert services.inventory.list_models() == []


async def test_add_modal_registers_a_local_file(services: Services, tmp_path: Path) -> None:
    path = make_tiny_gguf(tmp_path / "local-tiny.gguf")
    app = make_app(services, sampler=no_gpu_sampler())
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("a")
        screen = app.screen
        screen.query_one("#add-tabs").active = "tab-local"  # type: ignore[attr-defined]
        await pilot.pause()
        screen.query_one("#add-path").value = str(path)  # type: ignore[attr-defined]
        screen.query_one("#add-local-ok", Button).press()
        assert await wait_for(pilot, lambda: app.screen is not screen, 10)
        assert await wait_for(pilot, lambda: any(
            r.installed and r.model_id for r in app.model_table.all_rows.values()), 10)
    records = services.inventory.list_models()
    assert len(records) == 1 and records[0].path == str(path.resolve())


# -- (f) Hub search -------------------------------------------------------------------------


async def test_hub_search_lists_repos_and_opens_the_picker(
    hub: FakeHub, services: Services
) -> None:
    hub.add_repo("acme/qwen-7b-GGUF", {"qwen-Q4_K_M.gguf": b"GGUF" + bytes(4096)},
                 downloads=12_345, likes=67)
    hub.add_repo("other/qwen-tiny-GGUF", {"q-Q8_0.gguf": b"GGUF" + bytes(2048)},
                 downloads=99, likes=1)
    hub.add_repo("acme/llama-GGUF", {"l-Q8_0.gguf": b"GGUF" + bytes(2048)}, downloads=5)
    app = make_app(services, sampler=no_gpu_sampler())
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("ctrl+f")
        assert isinstance(app.screen, HubSearchScreen)
        await pilot.press(*"qwen", "enter")
        table = app.screen.query_one("#hub-results", DataTable)
        assert await wait_for(pilot, lambda: table.row_count == 2, timeout=10)
        assert [str(table.get_cell_at((i, 0))) for i in range(2)] == [
            "acme/qwen-7b-GGUF", "other/qwen-tiny-GGUF"
        ]
        assert str(table.get_cell_at((0, 1))) == "12.3k"
        assert str(table.get_cell_at((0, 2))) == "67"
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: isinstance(app.screen, AddModelScreen))
        files = app.screen.query_one("#add-files", SelectionList)
        assert await wait_for(pilot, lambda: files.option_count == 1, timeout=10)
        assert "Q4_K_M" in str(files.get_option_at_index(0).prompt)


async def test_enter_on_a_multi_quant_row_offers_the_quants(tmp_path: Path) -> None:
    from textual.command import CommandPalette

    services = make_services(tmp_path)
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await focus_row(app, pilot, "entry:llama-3.1-8b-instruct-gguf")
        await pilot.press("enter")
        assert isinstance(app.screen, CommandPalette)
        await pilot.pause(0.3)
        options = app.screen.query_one("CommandList")
        prompts = [str(options.get_option_at_index(i).prompt)
                   for i in range(options.option_count)]
        assert any("Q4_K_M" in p for p in prompts) and any("Q8_0" in p for p in prompts)
    services.close()


async def test_jobs_left_queued_resume_at_start(hub: FakeHub, services: Services) -> None:
    """A job queued (or interrupted) before the app started runs when the app starts."""
    from tui.download.sources import JobSpec

    from tests.fakehub.testing import gguf_bytes, sha256

    data = gguf_bytes(256 * 1024, 7)
    url = hub.add_file("left-over.gguf", data)
    job_id = services.downloads.enqueue(JobSpec(kind="url", url=url, sha256=sha256(data)))
    app = make_app(services, sampler=no_gpu_sampler(), watch_downloads=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        panel = app.downloads_panel
        assert await wait_for(pilot, lambda: job_id in panel.jobs, timeout=10)
        assert await wait_for(pilot, lambda: panel.jobs[job_id].state == "done", timeout=30)
        assert await wait_for(pilot, lambda: any(
            r.installed and "left-over" in r.name for r in app.model_table.all_rows.values()
        ), timeout=10)


async def test_panel_keys_pause_and_resume_a_real_download(
    hub: FakeHub, services: Services
) -> None:
    from tui.download.sources import JobSpec

    from tests.fakehub.testing import gguf_bytes, sha256

    data = gguf_bytes(4 * MIB, 8)
    url = hub.add_file("slow.gguf", data)
    app = make_app(services, sampler=no_gpu_sampler(), watch_downloads=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        job_id = services.downloads.enqueue(
            JobSpec(kind="url", url=url, sha256=sha256(data), limit_rate=1 * MIB)
        )
        panel = app.downloads_panel
        assert await wait_for(
            pilot, lambda: job_id in panel.jobs and panel.jobs[job_id].state == "downloading", 10
        )
        panel.focus()
        await pilot.press("p")
        assert await wait_for(pilot, lambda: panel.jobs[job_id].state == "paused", 10)
        await pilot.press("r")
        assert await wait_for(pilot, lambda: panel.jobs[job_id].state == "done", 30)


# -- (g) generation parameters (F3) ---------------------------------------------------------


def test_stop_strings_are_comma_separated_with_escapes() -> None:
    from tui.app.screens.gen_params import ParamError, format_stop, parse_stop

    assert parse_stop("") == ()
    assert parse_stop(" User: , ###,, ") == ("User:", "###")
    assert parse_stop(r"\n, a\,b, c\\d, \t") == ("\n", "a,b", "c\\d", "\t")
    for stop in [("\n", "a,b", "c\\d", "\t"), ("User:",), ()]:
        assert parse_stop(format_stop(stop)) == stop
    for bad in ("a\\", r"\x"):
        with pytest.raises(ParamError) as info:
            parse_stop(bad)
        assert info.value.field == "stop" and "backslash" in str(info.value)


def test_parse_params_names_what_is_allowed() -> None:
    from tui.app.screens.gen_params import ParamError, describe_params, parse_params

    good = {"temperature": "0", "top_p": "0.95", "max_tokens": "64", "seed": "", "stop": ""}
    params = parse_params(good)
    assert params == GenParams(temperature=0, top_p=0.95, max_tokens=64, seed=None)
    assert describe_params(params) == "temperature 0 | top_p 0.95 | max 64 tokens"
    seeded = parse_params({**good, "seed": " 7 ", "stop": r"\n"})
    assert (seeded.seed, seeded.stop) == (7, ("\n",))
    assert describe_params(seeded).endswith("| seed 7 | stop \\n")
    bad = {
        "temperature": ["hot", "-0.1", "2.5", "nan", ""],
        "top_p": ["0", "1.5", "x"],
        "max_tokens": ["0", "-3", "8.5", "many", ""],
        "seed": ["-1", "1.5", str(2**32), "abc"],
    }
    allowed = {"temperature": "between 0 and 2", "top_p": "above 0 and at most 1",
               "max_tokens": "at least 1", "seed": "or blank"}
    for name, values in bad.items():
        for value in values:
            with pytest.raises(ParamError) as info:
                parse_params({**good, name: value})
            assert info.value.field == name
            assert allowed[name] in str(info.value) and "\n" not in str(info.value)


async def set_field(pilot: Any, text: str) -> None:
    """Replace the focused field's text (keys only)."""
    await pilot.press("ctrl+a", "ctrl+k", *text)


async def test_parameters_modal_sets_greedy_and_max_tokens_for_answers(
    services: Services,
) -> None:
    from tui.app.screens import GenParamsScreen

    register_model(services.inventory, "tiny", tiny_gguf(), "gguf")
    app = make_app(services, sampler=no_gpu_sampler())
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        app.load_row(row_by_model(app, "tiny"))
        assert await wait_for(pilot, lambda: status_of(app, "tiny") == "loaded", 30)
        await pilot.press("e", "f3")
        screen = app.screen
        assert isinstance(screen, GenParamsScreen)
        assert screen.values() == {"temperature": "0.7", "top_p": "0.95", "max_tokens": "512",
                                   "seed": "", "stop": ""}
        assert screen.focused is screen.field("temperature")
        await set_field(pilot, "0")
        await pilot.press("tab", "tab")  # top_p, then max tokens
        assert screen.focused is screen.field("max_tokens")
        await set_field(pilot, "8")
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: app.screen is not screen, 5)
        assert app.gen_params == GenParams(temperature=0, top_p=0.95, max_tokens=8)
        summary = "temperature 0 | top_p 0.95 | max 8 tokens"
        assert f"Parameters: {summary}" in [n.message for n in app._notifications]
        console = app.prompt_console
        assert text_of(console.query_one("#console-model")) == (
            f"Model: tiny | ctx 512 | cpu | {summary}")

        # The focus is back on the prompt line: ask; the answer stops at 8 tokens.
        assert app.focused is console.prompt_input
        await pilot.press(*"Hello", "enter")
        assert await wait_for(pilot, lambda: not console.streaming, timeout=30)
        metrics = text_of(console.metrics_line)
        count = re.search(r"(\d+) tokens?\b", metrics)
        assert count is not None and 1 <= int(count.group(1)) <= 8, metrics
        assert "tok/s" in metrics

        # Reopened, the modal shows the saved values; ctrl+s saves too.
        await pilot.press("f3")
        screen = app.screen
        assert isinstance(screen, GenParamsScreen)
        assert screen.values()["temperature"] == "0" and screen.values()["max_tokens"] == "8"
        await pilot.press("tab", "tab", "tab", *"42", "tab", *r"\n, User:", "ctrl+s")
        assert await wait_for(pilot, lambda: app.screen is not screen, 5)
        assert app.gen_params == GenParams(temperature=0, top_p=0.95, max_tokens=8, seed=42,
                                           stop=("\n", "User:"))


async def test_parameters_modal_rejects_bad_values_and_escape_cancels(
    services: Services,
) -> None:
    from tui.app.screens import GenParamsScreen

    app = make_app(services, sampler=no_gpu_sampler())
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("e", "f3")
        screen = app.screen
        assert isinstance(screen, GenParamsScreen)
        error = screen.query_one("#params-error", Static)

        await set_field(pilot, "hot")
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen and app.gen_params is None
        assert text_of(error) == "temperature must be between 0 and 2 (0 = greedy)"
        assert screen.focused is screen.field("temperature")

        await set_field(pilot, "0")  # typing clears the error
        await pilot.pause()
        assert text_of(error) == ""
        await pilot.press("tab", "tab")
        await set_field(pilot, "0")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen and app.gen_params is None
        assert text_of(error) == "max tokens must be a whole number of at least 1"
        assert screen.focused is screen.field("max_tokens")
        assert "\n" not in text_of(error)

        # ctrl+r fills in the defaults (not saved yet); Esc drops everything.
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert screen.values()["temperature"] == "0.7"
        await pilot.press("escape")
        assert await wait_for(pilot, lambda: app.screen is not screen, 5)
        assert app.gen_params is None
        assert not any(n.message.startswith("Parameters") for n in app._notifications)
        assert app.focused is app.prompt_console.prompt_input
        assert text_of(app.prompt_console.query_one("#console-model")) == (
            "Model: none loaded (ctrl+o)"
        )

        # The palette opens it too (from the table).
        app.model_table.focus()
        await pilot.press("ctrl+p", *"generation par")
        await pilot.pause(0.3)
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: isinstance(app.screen, GenParamsScreen), 5)
        await pilot.press("escape")
        assert app.gen_params is None
