"""The downloads panel for humans and keys that behave (Pilot, headless): order and counts,
details, cancel that asks, download keys from the table, Esc, help scrolling, the footer,
low-redraw repaints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input

from tui.app.app import ModelDeckApp
from tui.app.screens import ConfirmScreen, HelpScreen, JobDetailScreen
from tui.app.views import JobView
from tui.app.widgets import DownloadsPanel
from tui.download.jobs import JobStore
from tui.download.partials import PART
from tui.download.sources import JobSpec

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes, sha256
from tests.support.app import (
    NOW,
    installed_record,
    make_app,
    make_services,
    no_gpu_sampler,
    wait_for,
    wait_ready,
)

SIZE = (120, 40)
QWEN = "entry:qwen2.5-7b-instruct-gguf"
GEMMA = "entry:gemma-2-2b-it-gguf"
LLAMA = "entry:llama-3.1-8b-instruct-gguf"
DAY = 86400.0


@pytest.fixture
def services(tmp_path: Path):
    services = make_services(tmp_path, records=[installed_record()])
    yield services
    services.close()


def _jobs() -> list[JobView]:
    """Jobs in the order a listing gives them (oldest first), every state group."""
    return [
        JobView("old", "Old done", "done", 10, 10, updated_at=NOW - 3 * DAY),
        JobView("d1", "Done an hour ago", "done", 10, 10, updated_at=NOW - 3600),
        JobView("d2", "Done a minute ago", "done", 10, 10, updated_at=NOW - 60),
        JobView("f1", "Failed", "failed", 5, 10, error="disk full", updated_at=NOW - 30),
        JobView("a1", "Downloading", "downloading", 5, 10, 1e6, 5, row_key=QWEN),
        JobView("c1", "Cancelled", "cancelled", 0, 10, updated_at=NOW - 120),
        JobView("q1", "Queued", "queued", 0, 10, row_key=GEMMA),
        JobView("p1", "Paused", "paused", 3, 10),
    ]


async def _feed(pilot: Any, panel: DownloadsPanel, views: list[JobView]) -> None:
    for view in views:
        panel.post_job(view)
    await wait_for(pilot, lambda: set(panel.jobs) >= {v.job_id for v in views})
    await pilot.pause()


async def test_panel_orders_for_humans_and_its_title_counts_what_it_shows(services) -> None:
    app = make_app(services, sampler=no_gpu_sampler())
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_ready(app, pilot)
        panel = app.downloads_panel
        await _feed(pilot, panel, _jobs())
        # Going jobs first (oldest first), then failed, then finished newest first; the one
        # finished three days ago is hidden and said so.
        assert panel.shown_jobs == ["a1", "q1", "p1", "f1", "d2", "c1", "d1"]
        assert panel.border_title == "Downloads | 2 active | 1 paused | 1 failed | 3 finished"
        header = str(panel.query_one(".downloads-group").render())
        assert "3 finished" in header and "1 older than a day hidden" in header
        # At 80x24 the panel has three lines: the first is the running job, not a done one.
        region = panel.content_region
        widget, _ = app.screen.get_widget_at(region.x + 1, region.y)
        assert panel.row_for("a1") in widget.ancestors_with_self
        panel.focus()
        await pilot.press("o")  # the older ones too
        assert panel.shown_jobs[-1] == "old"
        assert panel.border_title.endswith("| 4 finished")
        for _ in range(4):  # to the finished header, then Enter folds the finished jobs
            await pilot.press("down")
        await pilot.press("enter")
        assert panel.shown_jobs == ["a1", "q1", "p1", "f1"]
        assert "4 finished (enter shows)" in str(panel.query_one(".downloads-group").render())
        assert panel.border_title.endswith("| 4 finished")  # folded, still listed
        await pilot.press("enter")
        assert len(panel.shown_jobs) == 8


async def test_a_job_leaving_its_group_moves_and_is_not_rebuilt(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        panel = app.downloads_panel
        await _feed(pilot, panel, _jobs())
        row = panel.row_for("a1")
        panel.post_job(JobView("a1", "Downloading", "done", 10, 10, row_key=QWEN,
                               updated_at=NOW))
        assert await wait_for(pilot, lambda: panel.shown_jobs[:3] == ["q1", "p1", "f1"])
        assert panel.shown_jobs[3] == "a1"  # the newest finished
        assert panel.row_for("a1") is row
        assert panel.border_title == "Downloads | 1 active | 1 paused | 1 failed | 4 finished"


async def test_enter_opens_the_details_with_the_whole_error(services) -> None:
    long_error = ("unreach.gguf: giving up after 12 tries over 10 minutes: connection refused "
                  "by 10.0.0.7:443 " + "x" * 200 + " check the URL or your network END-OF-IT")
    spec = JobSpec(kind="url", url="https://user:hunter2@example.com/unreach.gguf?t=hf_abcdefgh1")
    store = JobStore(services.db)
    job = store.create(spec)
    store.set_state(job.id, "failed", error=long_error)
    app = make_app(services)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_ready(app, pilot)
        panel = app.downloads_panel
        view = JobView(job.id, "unreach.gguf\x1b[2J", "failed", 0, None, error=long_error)
        await _feed(pilot, panel, [view])
        cell = panel.row_for(job.id).query_one(".job-speed")
        assert cell.size.width < len(long_error) // 4  # the row has room for its start only
        panel.focus()
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen))
        screen = app.screen
        assert await wait_for(pilot, lambda: screen.record is not None)
        text = " ".join(screen.text.split())
        assert " ".join(long_error.split()) in text
        assert "unreach.gguf\\x1b[2J" in text and "\x1b" not in text
        assert "https://example.com/unreach.gguf" in text
        assert "hunter2" not in text and "hf_abcdefgh1" not in text
        await pilot.press("escape")
        assert not isinstance(app.screen, JobDetailScreen)
        assert app.focused is panel


async def test_cancel_asks_and_no_keeps_the_partial(hub: FakeHub, tmp_path: Path) -> None:
    data = gguf_bytes(4 << 20, 21)
    url = hub.add_file("keep.gguf", data)
    hub.add_fault("keep.gguf", "slow", times=None, rate=256 << 10)
    services = make_services(tmp_path)
    app = make_app(services, sampler=no_gpu_sampler(), watch_downloads=True, compute_fit=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        job_id = services.downloads.enqueue(JobSpec(kind="url", url=url, sha256=sha256(data)))
        panel = app.downloads_panel

        def state() -> str | None:
            view = panel.jobs.get(job_id)
            return view.state if view is not None and view.done_bytes > 0 else None

        assert await wait_for(pilot, lambda: state() == "downloading", 30)
        record = JobStore(services.db).get(job_id)
        assert record is not None
        part = Path(record.files[0].dest + PART)
        assert await wait_for(pilot, part.exists, 10)
        panel.focus()
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        question = app.screen.question
        assert question.startswith("Cancel ") and "keep.gguf" in question
        assert "will be deleted" in question
        assert "partial (" in question
        await pilot.press("n")
        await pilot.pause(0.3)
        assert state() == "downloading" and part.exists()
        await pilot.press("c", "y")  # a letter never confirms a cancel (it deletes)
        assert part.exists()
        await pilot.press("left", "enter")
        assert await wait_for(pilot, lambda: panel.jobs[job_id].state == "cancelled", 30)
        assert not part.exists()
    services.close()


async def test_pause_and_resume_from_the_table_act_on_the_rows_job(hub: FakeHub,
                                                                   tmp_path: Path) -> None:
    data = gguf_bytes(4 << 20, 22)
    hub.add_repo("acme/tablekeys", {"tablekeys-Q4_K_M.gguf": data})
    hub.add_fault("tablekeys-Q4_K_M.gguf", "slow", times=None, rate=256 << 10)
    services = make_services(tmp_path, fixed_catalog=False)
    entry = services.catalog.add_hf("acme/tablekeys", quant="Q4_K_M", entry_id="table-keys")
    key = f"entry:{entry.id}"
    app = make_app(services, sampler=no_gpu_sampler(), watch_downloads=True, compute_fit=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        table = app.model_table
        table.focus()
        table.move_cursor(row=table.get_row_index(key))
        await pilot.press("enter")  # download the row's model
        panel = app.downloads_panel

        def job() -> JobView | None:
            return panel.job_for_row(key)

        assert await wait_for(pilot, lambda: (j := job()) is not None
                              and j.state == "downloading" and j.done_bytes > 0, 30)
        assert app.focused is table
        await pilot.press("p")  # on the table: the selected row's job, at once
        assert await wait_for(pilot, lambda: job().state == "paused", 30)
        assert not isinstance(app.screen, ConfirmScreen)
        assert str(table.get_cell(key, "status")) == "paused"
        await pilot.press("r")
        assert await wait_for(pilot, lambda: job().state in ("connecting", "downloading"), 30)
        hub.clear_faults()
        assert await wait_for(pilot, lambda: job().state == "done", 60)
    services.close()


async def test_letters_typed_on_the_table_never_destroy_without_asking(services) -> None:
    store = JobStore(services.db)
    running = store.create(JobSpec(kind="catalog", catalog_id="qwen2.5-7b-instruct-gguf"))
    store.set_state(running.id, "paused")
    failed = store.create(JobSpec(kind="catalog", catalog_id="gemma-2-2b-it-gguf"))
    store.set_state(failed.id, "cancelled")
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        panel = app.downloads_panel
        await _feed(pilot, panel, [
            JobView(running.id, "Qwen", "paused", 5, 10, row_key=QWEN),
            JobView(failed.id, "Gemma", "cancelled", 0, 10, row_key=GEMMA),
        ])
        table = app.model_table
        table.focus()

        async def on_row(key: str, letter: str) -> ConfirmScreen:
            table.move_cursor(row=table.get_row_index(key))
            await pilot.press(letter)
            assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen)), letter
            return app.screen  # type: ignore[return-value]

        assert (await on_row(QWEN, "c")).question.startswith("Cancel Qwen?")
        await pilot.press("n")
        assert (await on_row(GEMMA, "R")).question == "Retry Gemma?"
        await pilot.press("escape")
        question = (await on_row(LLAMA, "d")).question
        assert question.startswith(("Delete Llama", "Forget Llama"))
        await pilot.press("n")
        await pilot.pause()
        assert store.get(running.id).state == "paused"  # type: ignore[union-attr]
        assert store.get(failed.id).state == "cancelled"  # type: ignore[union-attr]
        assert services.inventory.get_model("llama-3.1-8b-q4") is not None
        await on_row(QWEN, "c")
        await pilot.press("left", "enter")
        assert await wait_for(pilot, lambda: store.get(running.id).state == "cancelled")


async def test_escape_goes_back_one_level(services) -> None:
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        table = app.model_table
        panel = app.downloads_panel
        panel.focus()
        await pilot.pause()
        await pilot.press("escape")  # panel -> table
        assert app.focused is table
        await pilot.press("slash", "q", "w")  # filter -> cleared, table
        await pilot.press("escape")
        assert app.focused is table and table.filter_text == ""
        await pilot.press("e")  # console -> table
        assert app.focused is app.prompt_console.prompt_input
        await pilot.press("escape")
        assert app.focused is table
        await pilot.press("question_mark", "escape")  # modal -> closed
        assert not isinstance(app.screen, HelpScreen)


async def test_x_clears_finished_jobs_here_and_in_the_inventory(services) -> None:
    store = JobStore(services.db)
    ids = {}
    for state in ("done", "cancelled", "failed", "paused"):
        job = store.create(JobSpec(kind="catalog", catalog_id="phi-3.5-mini-instruct"))
        store.set_state(job.id, state)
        ids[state] = job.id
    app = make_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        panel = app.downloads_panel
        await _feed(pilot, panel, [JobView(i, s, s, updated_at=NOW) for s, i in ids.items()])
        panel.focus()
        await pilot.press("x")
        assert await wait_for(pilot, lambda: set(panel.jobs) == {ids["failed"], ids["paused"]})
        assert {j.id for j in store.list()} == {ids["failed"], ids["paused"]}
        assert "finished" not in panel.border_title


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_help_scrolls_with_page_and_home_end_and_says_so(services, size) -> None:
    app = make_app(services)
    async with app.run_test(size=size) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("question_mark")
        screen = app.screen
        assert isinstance(screen, HelpScreen)
        table = screen.query_one("#help-table", DataTable)
        assert table.max_scroll_y > 0
        await pilot.press("end")
        assert await wait_for(pilot, lambda: table.scroll_y == table.max_scroll_y)
        await pilot.press("home")
        assert await wait_for(pilot, lambda: table.scroll_y == 0)
        await pilot.press("pagedown")
        assert await wait_for(pilot, lambda: table.scroll_y > 0)
        await pilot.press("pageup")
        assert await wait_for(pilot, lambda: table.scroll_y == 0)
        hint = str(screen.query_one("#help-hint").render())
        assert "PgUp PgDn Home End scroll" in hint and "Esc closes" in hint


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (100, 30)])
async def test_the_footers_last_cell_is_the_palette_key(services, size) -> None:
    app = make_app(services)
    async with app.run_test(size=size) as pilot:
        await wait_ready(app, pilot)
        width, height = size
        widget, _ = app.screen.get_widget_at(width - 1, height - 1)
        assert type(widget).__name__ == "FooterKey" and widget.has_class("-command-palette")
        assert widget.region.right == width


async def test_low_redraw_repaints_only_changed_rows_and_stands_still(tmp_path: Path) -> None:
    services = make_services(tmp_path, low_redraw=True)
    app = ModelDeckApp(services, sampler=no_gpu_sampler(), now=lambda: NOW, cursor_blink=True,
                       watch_downloads=False, watch_changes=False, watch_folders=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        panel = app.downloads_panel
        await _feed(pilot, panel, [
            JobView("a", "A", "downloading", 10, 1000, 1e6, 9, row_key=QWEN),
            JobView("b", "B", "downloading", 10, 1000, 1e6, 9, row_key=GEMMA),
        ])
        repaints: dict[str, int] = {}

        def spy(name: str, widget: Any) -> None:
            refresh = widget.refresh

            def counted(*args: Any, **kwargs: Any) -> Any:
                repaints[name] = repaints.get(name, 0) + 1
                return refresh(*args, **kwargs)

            widget.refresh = counted

        spy("panel", panel)
        for job_id in ("a", "b"):
            for child in panel.row_for(job_id).children:
                spy(f"{job_id}{''.join(sorted(child.classes))}", child)
        shown = panel.row_for("a").query_one(".job-bytes")
        for done in (100, 200, 300):
            panel.post_job(JobView("a", "A", "downloading", done, 1000, 1e6, 9, row_key=QWEN))
            assert await wait_for(pilot, lambda d=done: str(shown.render()).startswith(f"{d}B"))
        assert repaints.get("panel", 0) == 0  # no repaint of the whole panel
        assert not [name for name in repaints if name.startswith("b")]  # nor of B's row
        assert repaints.get("ajob-bytes") == 3  # A's bytes changed each time
        assert "ajob-name" not in repaints and "ajob-state" not in repaints
        # No blinking cursor, and the history lines stand still (hidden).
        assert not app.query_one("#filter").cursor_blink
        assert not app.prompt_console.prompt_input.cursor_blink
        assert all(not spark.display for spark in app.sidebar.query(".spark"))
        await pilot.press("a")  # a dialog's input does not blink either
        assert await wait_for(pilot, lambda: isinstance(app.focused, Input))
        assert not app.focused.cursor_blink
    services.close()


def test_the_app_has_no_job_coalescing_of_its_own() -> None:
    for name in ("_job_updated", "_flush_jobs", "apply_job", "post_job", "palette_commands"):
        assert not hasattr(ModelDeckApp, name), name
    message = DownloadsPanel.JobChanged(JobView("a", "x", "downloading", 1))
    assert message.can_replace(DownloadsPanel.JobChanged(JobView("a", "x", "downloading", 2)))
