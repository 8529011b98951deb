"""Pilot tests of the dashboard's behaviour (headless, 120x40 unless said)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.command import CommandPalette
from textual.message import Message
from textual.widgets import DataTable, Static

from tui.app import wiring
from tui.app.app import ModelDeckApp
from tui.app.commands import palette_commands
from tui.app.screens import ConfirmScreen, GenParamsScreen, HelpScreen
from tui.app.views import COLUMN_KEYS, JobView, MetricsView, ModelRow
from tui.app.widgets import DownloadsPanel, ModelTable, PromptConsole
from tui.app.widgets.downloads_panel import JobBar
from tui.app.widgets.resource_sidebar import GpuBox

from tests.support.app import (
    NOW,
    FakeSampler,
    installed_record,
    make_app,
    make_services,
    no_gpu_sampler,
    wait_for,
    wait_ready,
)

SIZE = (120, 40)
QWEN = "entry:qwen2.5-7b-instruct-gguf"
LLAMA = "entry:llama-3.1-8b-instruct-gguf"


def text_of(widget: Any) -> str:
    """The plain text a Static shows."""
    return str(widget.render())


@pytest.fixture
def services(tmp_path: Path):
    services = make_services(tmp_path, records=[installed_record()])
    yield services
    services.close()


def names(app: ModelDeckApp) -> list[str]:
    table = app.model_table
    return [table.all_rows[k].name for k in table.visible_keys]


async def test_startup_shows_catalog_and_installed_rows(tmp_path: Path) -> None:
    services = make_services(
        tmp_path,
        records=[
            installed_record(catalog_id=None, name="my-local-model", model_id="local-1"),
        ],
        fixed_catalog=False,
    )
    builtin = services.catalog.entries()
    assert builtin, "builtin.json has entries"
    first = builtin[0]
    services.inventory.upsert_model(
        installed_record("cat-1", catalog_id=first.id, name="whatever.gguf")
    )
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        table = app.model_table
        assert table.row_count == len(builtin) + 1
        merged = table.get_model_row(f"entry:{first.id}")
        assert merged is not None and merged.status == "installed"
        assert merged.model_id == "cat-1"
        local = table.get_model_row("model:local-1")
        assert local is not None and local.status == "installed"
        assert str(table.get_cell(f"entry:{first.id}", "status")) == "installed"
        assert "of" in text_of(app.query_one("#table-status"))
    services.close()


async def test_filter_as_you_type_and_escape_clears(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        assert len(names(app)) == 4
        await pilot.press("slash")
        assert app.focused is app.query_one("#filter")
        await pilot.press("q", "w")
        assert names(app) == ["Qwen2.5 7B Instruct"]
        assert app.model_table.row_count == 1
        await pilot.press("backspace", "backspace", "g", "e", "m")
        assert names(app) == ["Gemma 2 2B it"]
        await pilot.press("escape")
        assert len(names(app)) == 4
        assert app.focused is app.model_table
        assert not app.query_one("#filter").has_class("-active")


async def test_sort_cycles_and_reverses(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        table = app.model_table
        await pilot.press("s")
        assert table.sort_column == "name"
        assert names(app) == sorted(names(app), key=str.lower)
        await pilot.press("S")
        assert names(app) == sorted(names(app), key=str.lower, reverse=True)
        await pilot.press("S", "s", "s")  # name -> status -> size
        assert table.sort_column == "size"
        assert names(app)[0] == "Gemma 2 2B it"
        # A header click sorts by that column.
        await pilot.click(table, offset=(column_x(table, "params"), 0))
        assert table.sort_column == "params"
        assert names(app)[-1] == "Llama 3.1 8B Instruct"


async def test_status_filter_installed_only(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("i")
        assert names(app) == ["Llama 3.1 8B Instruct"]
        assert "installed" in text_of(app.query_one("#table-status"))
        await pilot.press("i")
        assert len(names(app)) == 4
        await pilot.press("f", "f", "f")  # all -> installed -> downloads -> available
        assert app.model_table.status_filter == "available"
        assert len(names(app)) == 3


async def test_toggle_sidebar_downloads_console(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        sidebar, downloads, console = (
            app.query_one("#sidebar"), app.query_one("#downloads"), app.query_one("#console")
        )
        assert sidebar.display and downloads.display and not console.display
        await pilot.press("g", "w")
        assert not sidebar.display and not downloads.display
        await pilot.press("e")
        assert console.display
        assert app.focused is app.prompt_console.prompt_input
        await pilot.press("escape")  # not streaming: nothing happens
        app.model_table.focus()
        await pilot.press("g", "w", "e")
        assert sidebar.display and downloads.display and not console.display


async def test_narrow_terminal_collapses_sidebar_to_a_line(services) -> None:
    app = make_app(services)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_ready(app, pilot)
        assert not app.query_one("#sidebar").display
        line = app.query_one("#resource-line")
        assert line.display
        assert "GPU0 20Gi/24Gi 87%" in text_of(line)


def column_x(table: ModelTable, column: str) -> int:
    """A cell inside ``column`` on a line of the table."""
    x = 0
    for key, width in table.shown_columns:
        if key == column:
            return x + 1
        x += width + 2
    raise KeyError(column)


def shown_columns(table: ModelTable) -> list[str]:
    return [key for key, _ in table.shown_columns]


def assert_columns_fit(table: ModelTable) -> None:
    """No horizontal scrolling, and ID (with Name, when shown) takes every cell the other
    columns leave."""
    available = table.scrollable_content_region.width
    widths = dict(table.shown_columns)
    assert sum(w + 2 for w in widths.values()) == available
    assert table.virtual_size.width <= available
    assert table.max_scroll_x == 0 and not table.show_horizontal_scrollbar
    flexible = widths["id"] + widths.get("name", 0)
    others = sum(w + 2 for k, w in widths.items() if k not in ("id", "name"))
    assert flexible == available - others - 2 * len({"id", "name"} & widths.keys())


@pytest.mark.parametrize(
    ("size", "hidden"),
    [
        ((80, 24), {"name", "base", "tps", "last_used", "kind"}),
        ((100, 30), {"name", "base", "params", "tps", "last_used", "kind"}),  # sidebar from 100
        ((120, 40), {"name", "base", "tps", "last_used"}),
        ((130, 40), {"name", "base", "last_used"}),
        ((180, 40), set()),
    ],
)
async def test_columns_fit_the_width(services, size: tuple[int, int], hidden: set[str]) -> None:
    app = make_app(services)
    async with app.run_test(size=size) as pilot:
        await wait_ready(app, pilot)
        table = app.model_table
        assert shown_columns(table) == [k for k in COLUMN_KEYS if k not in hidden]
        assert_columns_fit(table)
        assert dict(table.shown_columns)["id"] >= 24
        line = table.render_line(table.get_row_index(LLAMA) + 1).text  # below the header
        assert "llama-3.1-8b-q4" in line  # the id the CLI takes
        assert ("Llama 3.1 8B Instruct" in line) == ("name" not in hidden)
        # Hidden columns keep their cells.
        assert str(table.get_cell(LLAMA, "last_used")) == "3h ago"
        assert table.get_cell(LLAMA, "name") == "Llama 3.1 8B Instruct"


async def test_columns_refit_on_resize_and_with_a_scrollbar(services) -> None:
    app = make_app(services)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(app, pilot)
        table = app.model_table
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert "last_used" not in shown_columns(table)
        assert_columns_fit(table)
        # Enough rows for a vertical scrollbar: the columns make room for it.
        wide = table.scrollable_content_region.width
        rows = [ModelRow(key=f"k{i}", name=f"model {i}", model_id=f"model-{i}", size_bytes=i + 1)
                for i in range(300)]
        table.set_rows(rows)
        await pilot.pause()
        assert table.show_vertical_scrollbar
        assert table.scrollable_content_region.width < wide
        assert_columns_fit(table)
        # ... and the rows scroll.
        table.move_cursor(row=100)
        await pilot.pause()
        assert table.scroll_y > 0
        assert "model-100 " in table.render_line(100 - int(table.scroll_y) + 1).text
        await pilot.resize_terminal(170, 40)
        await pilot.pause()
        assert shown_columns(table) == list(COLUMN_KEYS)
        assert_columns_fit(table)
        await pilot.resize_terminal(135, 40)
        await pilot.pause()
        # 105 cells less the scrollbar: all but Name, Base and Used (Used fits without it).
        without_name = [k for k in COLUMN_KEYS if k not in ("name", "base")]
        assert shown_columns(table) == without_name[:-1]
        assert_columns_fit(table)
        table.set_rows(rows[:5])
        await pilot.pause()
        assert not table.show_vertical_scrollbar
        assert shown_columns(table) == without_name
        assert_columns_fit(table)


async def test_used_times_refresh_on_a_timer(services, monkeypatch) -> None:
    from tui.app import app as app_module

    monkeypatch.setattr(app_module, "USED_REFRESH_S", 0.05)
    clock = [NOW]
    app = make_app(services, now=lambda: clock[0])
    async with app.run_test(size=(160, 40)) as pilot:  # wide enough to show Used
        await wait_ready(app, pilot)
        table = app.model_table
        assert table.used_refresh == 0.05
        assert str(table.get_cell(LLAMA, "last_used")) == "3h ago"
        clock[0] += 2 * 3600
        assert await wait_for(pilot, lambda: str(table.get_cell(LLAMA, "last_used")) == "5h ago")
        await pilot.pause()
        line = table.render_line(table.get_row_index(LLAMA) + 1).text
        assert line.rstrip().endswith("5h ago")


async def test_used_refresh_is_slower_with_low_redraw(tmp_path: Path) -> None:
    from tui.app.app import USED_REFRESH_LOW_REDRAW_S, USED_REFRESH_S

    assert USED_REFRESH_LOW_REDRAW_S > USED_REFRESH_S
    services = make_services(tmp_path, low_redraw=True)
    app = make_app(services)
    async with app.run_test(size=SIZE):
        assert app.model_table.used_refresh == USED_REFRESH_LOW_REDRAW_S
    services.close()


async def test_used_refresh_touches_only_changed_cells_on_screen(tmp_path: Path) -> None:
    services = make_services(tmp_path)
    clock = [NOW]
    app = make_app(services, now=lambda: clock[0])
    ago = [7200, 120]  # even rows: used 2h ago, odd rows: 2m ago
    rows = [
        ModelRow(key=f"k{i}", name=f"m{i}", status="installed", last_used_at=NOW - ago[i % 2])
        for i in range(200)
    ]
    async with app.run_test(size=(140, 40)) as pilot:  # Used is shown beside a scrollbar
        await wait_ready(app, pilot)
        table = app.model_table
        table.set_rows(rows)
        await pilot.pause()
        assert "last_used" in shown_columns(table)
        updated: list[str] = []
        refresh_line = table.refresh_line

        def spy(y: int) -> None:  # a virtual line: the header is line 0
            updated.append(table.visible_keys[y - 1])
            refresh_line(y)

        table.refresh_line = spy  # type: ignore[method-assign]
        table.refresh_used()
        assert updated == []  # the clock did not move: nothing to redraw
        clock[0] += 30 * 60  # 2m -> 32m ago; 2h ago stays 2h ago
        table.refresh_used()
        on_screen = table.size.height - 1  # rows below the header
        assert updated == [f"k{i}" for i in range(1, on_screen, 2)]
        assert str(table.get_cell("k1", "last_used")) == "32m ago"
        assert str(table.get_cell("k151", "last_used")) == "2m ago"  # off screen: later
        table.move_cursor(row=151)
        await pilot.pause()
        assert table.scroll_y > 0
        assert str(table.get_cell("k151", "last_used")) == "32m ago"  # scrolled to: caught up
        # A filter rebuilds the table (scrolled back to the top): its rows catch up too.
        table.filter_text = "m17"
        await pilot.pause()
        assert table.visible_keys == ["k17", *(f"k{i}" for i in range(170, 180))]
        assert str(table.get_cell("k175", "last_used")) == "32m ago"
    services.close()


async def test_help_screen_lists_every_binding(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one("#help-table", DataTable)
        rows = [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]
        descriptions = {r[2] for r in rows}
        for cls in (ModelDeckApp, ModelTable, DownloadsPanel, PromptConsole, GenParamsScreen):
            for binding in cls.BINDINGS:
                assert binding.description in descriptions, binding  # type: ignore[union-attr]
        assert ("Downloads", "R", "Retry") in rows
        assert ("Console", "f3", "Parameters") in rows
        assert ("Parameters", "^s", "Save") in rows
        assert any(r[2] == "Command palette" for r in rows)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_palette_finds_and_loads_a_model(services, monkeypatch) -> None:
    loaded: list[str] = []

    async def fake_load(_services: Any, model_id: str, force: bool = False,
                        options: Any = None) -> str:
        loaded.append(model_id)
        return "Llama 3.1 8B Instruct"

    monkeypatch.setattr(wiring, "load_model", fake_load)
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"load llama")
        await pilot.pause(0.3)
        await pilot.pause()
        options = app.screen.query_one("CommandList")
        prompts = [str(options.get_option_at_index(i).prompt)
                   for i in range(options.option_count)]
        assert any("Load Llama 3.1 8B Instruct" in p for p in prompts)
        await pilot.press("enter")
        await wait_for(pilot, lambda: bool(loaded) and app.prompt_console.model_name is not None)
        assert loaded == ["llama-3.1-8b-q4"]
        assert app.prompt_console.model_name == "Llama 3.1 8B Instruct"


async def test_palette_offers_downloads_per_quant(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        texts = [c[0] for c in palette_commands(app)]
        assert "Download Qwen2.5 7B Instruct Q4_K_M" in texts
        assert "Load Llama 3.1 8B Instruct" in texts
        assert "Download Llama 3.1 8B Instruct Q8_0" not in texts  # installed row
        assert {"Toggle sidebar", "Switch theme"} <= set(texts)


async def test_quit_asks_while_downloads_are_active(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        panel = app.downloads_panel
        panel.update_job(JobView("j1", "Qwen", "downloading", 10, 100, row_key=QWEN))
        panel.update_job(JobView("j2", "Gemma", "queued"))
        panel.update_job(JobView("j3", "Phi", "paused"))
        await pilot.pause()
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question == "2 downloads in progress will resume next start. Quit?"
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmScreen)
        assert app.return_code is None
        await pilot.press("q", "y")
        await pilot.pause()
        assert app.return_code == 0


async def test_quit_without_downloads_exits_at_once(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("q")
        await pilot.pause()
        assert app.return_code == 0


async def test_sidebar_with_two_gpus(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        sidebar = app.sidebar
        boxes = list(sidebar.query(GpuBox))
        assert [b.index for b in boxes] == [0, 1]
        box0 = "\n".join(text_of(w) for w in boxes[0].query(Static))
        assert "GPU0 NVIDIA RTX 4090" in box0
        assert "20Gi/24Gi" in box0 and "87%" in box0
        assert "temp 71C" in box0 and "power 320W/450W" in box0
        assert "5.5Gi" in text_of(sidebar.query_one("#res-own"))
        assert "200Gi free / 500Gi" in text_of(sidebar.query_one("#res-disk"))
        assert "23%" in text_of(sidebar.query_one("#res-cpu"))
        assert not sidebar.query_one("#res-gpu-status").display
        assert len(sidebar.query("Sparkline")) == 4  # cpu, ram, two GPUs
        # A second snapshot updates the same boxes in place.
        sampler = app.sampler
        assert isinstance(sampler, FakeSampler)
        sidebar.update_snapshot(sampler.snapshot, {})
        assert list(sidebar.query(GpuBox)) == boxes


async def test_sidebar_without_gpu(services) -> None:
    app = make_app(services, sampler=no_gpu_sampler())
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        sidebar = app.sidebar
        assert not list(sidebar.query(GpuBox))
        status = sidebar.query_one("#res-gpu-status")
        assert status.display and text_of(status) == "no GPU"


async def test_ascii_mode_has_no_block_glyphs(tmp_path: Path) -> None:
    services = make_services(tmp_path, records=[installed_record()], ascii=True)
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        assert app.has_class("-ascii")
        texts = [text_of(w) for w in app.sidebar.query(Static)]
        assert all(t.isascii() for t in texts), texts
        assert not app.sidebar.query("Sparkline")
        assert app.sidebar.styles.border_top[0] == "ascii"
    services.close()


async def test_downloads_panel_updates_rows_in_place(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        table = app.model_table
        repaints: list[tuple[Any, ...]] = []
        original_refresh = table.refresh

        def spy(*regions: Any, **kwargs: Any) -> Any:
            repaints.append(regions)
            return original_refresh(*regions, **kwargs)

        table.refresh = spy  # type: ignore[method-assign]
        first = JobView("j1", "Qwen2.5 7B Instruct", "connecting", 0, 4_000, row_key=QWEN)
        app.downloads_panel.post_job(first)
        await pilot.pause()
        panel = app.downloads_panel
        row = panel.row_for("j1")
        assert row is not None
        bar = row.query_one(JobBar)
        for done in (1_000, 2_000, 3_000):
            panel.post_job(JobView("j1", "Qwen2.5 7B Instruct", "downloading", done, 4_000,
                                   1_000_000, 10, row_key=QWEN))
        await pilot.pause()
        assert panel.row_for("j1") is row
        assert row.query_one(JobBar) is bar
        assert text_of(row.query_one(".job-pct")) == "75%"
        assert text_of(row.query_one(".job-state")) == "downloading"
        assert text_of(row.query_one(".job-speed")) == "977Ki/s ETA 10s"
        assert str(table.get_cell(QWEN, "status")) == "downloading 75%"
        # Updated in place: only Qwen's line was repainted, never the whole table.
        y = table.get_row_index(QWEN) + 1
        assert repaints and all(len(r) == 1 and r[0].y == y and r[0].height == 1
                                for r in repaints), repaints
        assert len(panel.query(".download-row")) == 1


async def test_job_transitions_notify_and_ring(services, monkeypatch) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        bells: list[int] = []
        monkeypatch.setattr(app, "bell", lambda: bells.append(1))
        panel = app.downloads_panel
        panel.post_job(JobView("j1", "Qwen", "downloading", 1, 10, row_key=QWEN))
        panel.post_job(JobView("j1", "Qwen", "stalled", 1, 10, row_key=QWEN))
        panel.post_job(JobView("j1", "Qwen", "failed", 1, 10, error="disk full", row_key=QWEN))
        await wait_for(pilot, lambda: len(app._notifications) == 2)
        titles = [n.title for n in app._notifications]
        assert titles == ["Download stalled", "Download failed"]
        assert len(bells) == 2
        assert str(app.model_table.get_cell(QWEN, "status")) == "failed"


async def test_job_warning_is_shown_once(services) -> None:
    app = make_app(services)
    nfs = "models is on nfs4: file locks may not work across machines"
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        for done in (1, 2, 3):
            app.downloads_panel.post_job(JobView("j1", "Qwen", "downloading", done, 10,
                                                 row_key=QWEN, warning=nfs))
        await pilot.pause()
        shown = [n for n in app._notifications if n.title == "Download warning"]
        assert [n.message for n in shown] == [f"Qwen: {nfs}"]


def test_job_updates_coalesce_per_job() -> None:
    changed = DownloadsPanel.JobChanged
    a1 = changed(JobView("a", "x", "downloading", 1))
    a2 = changed(JobView("a", "x", "downloading", 2))
    b = changed(JobView("b", "x", "downloading", 2))
    a_done = changed(JobView("a", "x", "done", 2))
    assert a2.can_replace(a1)
    assert not b.can_replace(a1)
    assert not a_done.can_replace(a2)  # a state change is never dropped


async def test_console_streams_tokens_and_esc_cancels(services) -> None:
    seen: list[Message] = []
    app = make_app(services)
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("e")
        console = app.prompt_console
        log = console.output
        console.start_answer("Say hello")
        console.append_tokens("Hel")
        console.append_tokens("lo, ")
        console.append_tokens("world")
        await pilot.pause()
        assert log.lines[-1] == "Hello, world"
        assert "> Say hello" in log.lines
        console.finish_answer(MetricsView(ttft_ms=120, tokens_per_s=35.5, tokens=3))
        await pilot.pause()
        assert text_of(console.metrics_line) == "TTFT 120 ms | 35.5 tok/s | 3 tokens"

        console.start_answer("again")
        console.append_tokens("partial")
        assert console.prompt_input.has_focus
        await pilot.press("escape")
        await pilot.pause()
        assert not console.streaming
        assert "cancelled" in text_of(console.metrics_line)


async def test_delete_asks_with_space_freed_and_calls_wiring(services, monkeypatch) -> None:
    deleted: list[str] = []

    def fake_delete(svc: Any, model_id: str) -> tuple[int, list[str]]:
        deleted.append(model_id)
        svc.inventory.delete_model(model_id)
        return 4_920_000_000, []

    monkeypatch.setattr(wiring, "delete_model", fake_delete)
    monkeypatch.setattr(
        wiring, "plan_delete", lambda _s, _id: (4_920_000_000, False, ["a.gguf  4.6 GiB"])
    )
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        app.model_table.move_cursor(row=0)
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        assert "frees 4.6 GiB" in app.screen.question
        await pilot.press("left", "enter")
        status = lambda: str(app.model_table.get_cell(LLAMA, "status"))  # noqa: E731
        await wait_for(pilot, lambda: status() == "available")
        assert deleted == ["llama-3.1-8b-q4"]
        assert str(app.model_table.get_cell(LLAMA, "status")) == "available"


async def test_load_errors_notify_instead_of_crashing(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        app.model_table.move_cursor(row=0)  # Llama, "installed" but its file does not exist
        await pilot.press("enter")
        messages = lambda: [n.message for n in app._notifications]  # noqa: E731
        await wait_for(pilot, lambda: any("gone from disk" in m for m in messages()))
        assert any("gone from disk" in m for m in messages())
        assert app.is_running
        assert app.prompt_console.model_name is None


async def test_theme_switch(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        assert app.theme == "textual-dark"
        await pilot.press("t")
        assert app.theme == "textual-light"


async def test_light_theme_from_settings(tmp_path: Path) -> None:
    services = make_services(tmp_path, theme="light")
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        assert app.theme == "textual-light"
    services.close()


async def test_model_picker_lists_installed_models(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("ctrl+o")
        assert isinstance(app.screen, CommandPalette)


async def test_real_sampler_fills_the_sidebar(tmp_path: Path) -> None:
    """The real ResourceSampler (psutil; no NVML on this machine) through the worker."""
    services = make_services(tmp_path)
    app = ModelDeckApp(services, now=lambda: 0.0, cursor_blink=False, watch_downloads=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        cpu = app.sidebar.query_one("#res-cpu")
        assert await wait_for(pilot, lambda: "%" in text_of(cpu), timeout=10)
        assert "free /" in text_of(app.sidebar.query_one("#res-disk"))
        assert any(w.group == "sampler" for w in app.workers)
    services.close()


async def test_large_tables_filter_and_sort_all_rows(tmp_path: Path) -> None:
    from tui.app.views import ModelRow

    services = make_services(tmp_path)
    app = make_app(services)
    rows = [
        ModelRow(key=f"k{i}", name=f"{'llama' if i % 2 else 'qwen'} [{i}]", model_id=f"m[{i}]",
                 size_bytes=i + 1)
        for i in range(2_500)
    ]
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        table = app.model_table
        table.set_rows(rows)
        await pilot.pause()
        assert len(table.visible_keys) == table.row_count == 2_500
        assert str(table.get_cell("k1", "name")) == "llama [1]"  # brackets are not markup
        table.move_cursor(row=table.row_count - 1)
        await pilot.pause()
        assert table.current_row() is rows[-1]
        bottom = table.scrollable_content_region.height - 1
        assert "m[2499]" in table.render_line(bottom).text  # the last row, scrolled to
        # Narrowing keeps the order.
        await pilot.press("slash", *"llama 1")
        expected = [r.key for r in rows if "llama" in r.name and "1" in r.name]
        assert table.visible_keys == expected
        assert table.row_count == len(expected)
        await pilot.press("escape")
        assert len(table.visible_keys) == 2_500
        # Sorting sorts all rows.
        table.sort_column = "size"
        table.sort_reverse = True
        assert table.visible_keys[0] == "k2499"
        await pilot.press("home")  # the cursor stayed on its row: back to the top
        assert "m[2499]" in table.render_line(1).text
    services.close()


async def test_in_place_update_of_a_row_off_screen(tmp_path: Path) -> None:
    import dataclasses

    from tui.app.views import ModelRow

    services = make_services(tmp_path)
    app = make_app(services)
    rows = [ModelRow(key=f"k{i}", name=f"m{i}") for i in range(1_000)]
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        table = app.model_table
        table.set_rows(rows)
        table.update_row(dataclasses.replace(rows[-1], status="installed"))
        assert table.get_model_row("k999").status == "installed"  # type: ignore[union-attr]
        await pilot.press("i")
        assert table.visible_keys == ["k999"]
        assert str(table.get_cell("k999", "status")) == "installed"
    services.close()


async def test_system_prompt_modal(services) -> None:
    from tui.app.screens import TextPromptScreen

    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("e", "f2")
        assert isinstance(app.screen, TextPromptScreen)
        await pilot.press(*"Be brief.", "enter")
        await pilot.pause()
        assert app.prompt_console.system_prompt == "Be brief."
        await pilot.press("f2", "escape")
        assert app.prompt_console.system_prompt == "Be brief."


class FakeDownloads:
    """The download service's surface the wiring uses (real records and events)."""

    event_rate = 10.0

    def __init__(self) -> None:
        from tui.download.jobs import JobRecord
        from tui.download.sources import JobSpec

        self.calls: list[tuple[str, ...]] = []
        self.subscribers: list[Any] = []
        self.started = self.stopped = False
        spec = JobSpec(kind="catalog", catalog_id="gemma-2-2b-it-gguf")
        self.jobs = {"old": JobRecord(id="old", kind="catalog", spec=spec, state="paused",
                                      name="Gemma 2 2B it", done_bytes=10, total_bytes=100)}

    def list_jobs(self) -> list[Any]:
        return list(self.jobs.values())

    def get_job(self, job_id: str) -> Any:
        return self.jobs[job_id]

    def subscribe(self, callback: Any) -> Any:
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def enqueue(self, spec: Any) -> str:
        from tui.download.jobs import JobRecord

        self.calls.append(("enqueue", spec.catalog_id, spec.quant))
        self.jobs["new"] = JobRecord(id="new", kind="catalog", spec=spec, state="queued",
                                     name="Qwen")
        return "new"

    async def pause(self, job_id: str) -> None:
        self.calls.append(("pause", job_id))

    def resume(self, job_id: str) -> None:
        self.calls.append(("resume", job_id))

    def publish(self, **fields: Any) -> None:
        from tui.download import DownloadEvent

        event = DownloadEvent(**{"speed": 0.0, "eta": None, **fields})
        for callback in list(self.subscribers):
            callback(event)


async def test_download_wiring_feeds_panel_and_routes_actions(services) -> None:
    fake = FakeDownloads()
    services.__dict__["downloads"] = fake
    app = ModelDeckApp(
        services, sampler=no_gpu_sampler(), now=lambda: 0.0, cursor_blink=False
    )
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        panel = app.downloads_panel
        assert await wait_for(pilot, lambda: fake.started and "old" in panel.jobs)
        gemma = "entry:gemma-2-2b-it-gguf"  # its row follows the panel's message
        assert await wait_for(
            pilot, lambda: str(app.model_table.get_cell(gemma, "status")) == "paused")
        # Rows read again (a download finished, another process changed the inventory): the
        # paused job still shows on its row.
        before = app.model_table.get_model_row(gemma)
        app.browser.load_rows()
        assert await wait_for(pilot, lambda: app.model_table.get_model_row(gemma) is not before)
        assert await wait_for(  # (more reloads may be on the way: each ends "paused")
            pilot, lambda: str(app.model_table.get_cell(gemma, "status")) == "paused", 10)
        # Enter on an available row queues its default quant.
        app.model_table.move_cursor(row=app.model_table.get_row_index(QWEN))
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: bool(fake.calls))
        assert fake.calls == [("enqueue", "qwen2.5-7b-instruct-gguf", "Q4_K_M")]
        fake.publish(job_id="new", name="Qwen", state="downloading", done_bytes=50,
                     total_bytes=200, speed=1e6, eta=3.0)
        assert await wait_for(
            pilot, lambda: str(app.model_table.get_cell(QWEN, "status")) == "downloading 25%")
        # Keys in the panel act on the selected job through the service.
        panel.focus()
        await pilot.press("r", "down", "p")
        assert await wait_for(pilot, lambda: len(fake.calls) == 3)
        assert fake.calls[1:] == [("resume", "old"), ("pause", "new")]
    assert fake.stopped
