"""The model list on Textual's public line API: filter, keys, ids, column fitting, line cache,
repaints of changed lines only, and hostile names shown literally."""

from __future__ import annotations

import dataclasses
import html
import unicodedata
from pathlib import Path
from typing import Any, ClassVar

import pytest
from textual import events
from textual.app import App, ComposeResult
from textual.geometry import Region

from tui.app.views import COLUMN_KEYS, ModelRow, fit_columns
from tui.app.widgets import ModelList

from tests.support.app import NOW, make_app, make_services, no_gpu_sampler, wait_for, wait_ready
from tests.support.checks import assert_no_control_chars
from tests.support.gguf import write_gguf

FAMILIES = ("llama", "qwen", "mistral", "gemma", "phi", "deepseek", "ｑｗｅｎ", "Straße")


class Host(App[None]):
    """Only the list, filling the screen; the messages it posts are kept."""

    CSS: ClassVar[str] = "ModelList { height: 1fr; }"

    def __init__(self, rows: list[ModelRow], clock: list[float] | None = None) -> None:
        super().__init__()
        self.rows = rows
        self.clock = clock or [NOW]
        self.messages: list[Any] = []

    def compose(self) -> ComposeResult:
        yield ModelList(now=lambda: self.clock[0], used_refresh=0, id="models")

    def on_mount(self) -> None:
        self.animation_level = "none"
        self.model_list.set_rows(self.rows)
        self.model_list.focus()

    @property
    def model_list(self) -> ModelList:
        return self.query_one(ModelList)

    def on_model_list_activated(self, message: ModelList.Activated) -> None:
        self.messages.append(message)

    def on_model_list_delete_requested(self, message: ModelList.DeleteRequested) -> None:
        self.messages.append(message)


def many_rows(n: int) -> list[ModelRow]:
    return [
        ModelRow(key=f"k{i}", name=f"{FAMILIES[i % len(FAMILIES)]} {i % 70}B v{i}",
                 model_id=f"{FAMILIES[i % len(FAMILIES)].lower()}-{i}", format="gguf",
                 quant=("Q4_K_M", "Q8_0", "IQ2_XXS")[i % 3], size_bytes=(i * 7919) % 10_007 + 1)
        for i in range(n)
    ]


def reference_filter(rows: list[ModelRow], text: str) -> list[str]:
    """What the filter must keep: rows whose id, name, format or quant contain every word,
    both sides NFKC-normalised and case-folded (written out, not through the code)."""
    def norm(s: str) -> str:
        return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", s).casefold())

    words = norm(text).split()
    keep = []
    for r in rows:
        hay = norm(" ".join(x for x in (r.model_id, r.name, r.format, r.quant) if x))
        if all(w in hay for w in words):
            keep.append(r.key)
    return keep


def line(model_list: ModelList, y: int) -> str:
    return model_list.render_line(y).text


async def test_filter_over_10000_rows_matches_a_reference() -> None:
    rows = many_rows(10_000)
    app = Host(rows)
    async with app.run_test(size=(120, 30)) as pilot:
        ml = app.model_list
        assert ml.row_count == 10_000
        for text in ("q", "qw", "qwen", "qwen 1", "qwen 1B", "QWEN 1b v1", "iq2", "strasse",
                     "STRASSE 5", "", "llama-9", "zzz", ""):
            ml.filter_text = text
            await pilot.pause()
            assert ml.visible_keys == reference_filter(rows, text), text
            shown = ml.visible_keys[: ml.scrollable_content_region.height - 1]
            for y, key in enumerate(shown, 1):  # the lines on screen are those rows
                assert ml.get_cell(key, "id") in line(ml, y)


async def test_full_width_text_typed_in_the_filter_finds_ascii_names(tmp_path: Path) -> None:
    services = make_services(tmp_path)
    app = make_app(services)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_ready(app, pilot)
            await pilot.press("slash", *"ｑｗｅｎ")
            table = app.model_table
            assert table.visible_keys == ["entry:qwen2.5-7b-instruct-gguf"]
            await pilot.press("space", *"Ｑ４")  # full-width Q4
            assert table.visible_keys == ["entry:qwen2.5-7b-instruct-gguf"]
    finally:
        services.close()


async def test_cursor_and_page_keys_keep_the_cursor_on_screen() -> None:
    app = Host(many_rows(500))
    async with app.run_test(size=(100, 21)) as pilot:  # 21 lines: header + 20 rows
        ml = app.model_list
        body = ml.scrollable_content_region.height - 1
        assert body == 20

        def on_screen() -> bool:
            top = ml.scroll_offset.y
            return top <= ml.cursor_row < top + body

        await pilot.press("down", "down")
        assert ml.cursor_row == 2 and ml.scroll_offset.y == 0
        await pilot.press("pagedown")
        assert ml.cursor_row == 2 + body and on_screen()
        await pilot.press("end")
        assert ml.cursor_row == 499 and ml.scroll_offset.y == 500 + 1 - (body + 1)
        assert ml.get_cell("k499", "id") in line(ml, body)  # the last line shows the last row
        await pilot.press("down")
        assert ml.cursor_row == 499
        await pilot.press("pageup")
        assert ml.cursor_row == 499 - body and on_screen()
        await pilot.press("up")
        assert ml.cursor_row == 498 - body and on_screen()
        await pilot.press("home")
        assert ml.cursor_row == 0 and ml.scroll_offset.y == 0
        await pilot.press("up")
        assert ml.cursor_row == 0
        # The mouse wheel scrolls without moving the cursor; a click selects a row.
        for _ in range(3):
            ml.post_message(events.MouseScrollDown(ml, 5, 5, 0, 1, 0, False, False, False))
        await pilot.pause()
        top = ml.scroll_offset.y
        assert top > 0 and ml.cursor_row == 0
        await pilot.click(ml, offset=(5, 3))
        assert ml.cursor_row == top + 2
        assert ml.current_row() is app.rows[top + 2]


async def test_ids_are_shown_and_enter_and_d_act_on_the_cursor_row() -> None:
    rows = [
        ModelRow(key="model:a", name="tiny-llama", model_id="tiny-llama-q8_0", status="installed"),
        ModelRow(key="model:b", name="tiny-llama", model_id="tiny-llama-q4_k_m",
                 status="installed"),
        ModelRow(key="entry:c", name="Qwen3 4B", entry_id="qwen3-4b-gguf"),
    ]
    app = Host(rows)
    async with app.run_test(size=(80, 10)) as pilot:
        ml = app.model_list
        header = line(ml, 0)
        assert header.split()[:2] == ["Status", "ID"]
        shown = [line(ml, y) for y in (1, 2, 3)]
        assert "tiny-llama-q8_0" in shown[0] and "tiny-llama-q4_k_m" in shown[1]
        assert "qwen3-4b-gguf" in shown[2]  # a catalog entry: the id `pull` takes
        await pilot.press("down", "enter")
        await pilot.press("d")
        await pilot.pause()
        activated, delete = app.messages
        assert isinstance(activated, ModelList.Activated)
        assert isinstance(delete, ModelList.DeleteRequested)
        assert activated.row.cli_id == delete.row.cli_id == "tiny-llama-q4_k_m"
        assert activated.control is ml and dataclasses.is_dataclass(activated)
        await pilot.press("down", "d")  # not installed: a warning, no request
        await pilot.pause()
        assert len(app.messages) == 2
        assert dataclasses.is_dataclass(ModelList.ViewChanged)


async def test_same_named_files_show_their_ids_and_d_asks_before_deleting(tmp_path: Path) -> None:
    """Four GGUF files whose inner name is the same: four rows told apart by their ids; a
    word typed on the table (``d`` in it) deletes nothing, and the file is kept after "no"."""
    from tui.app.screens import ConfirmScreen
    from tui.discovery import Scanner

    services = make_services(tmp_path, fixed_catalog=False)
    services.__dict__["catalog"] = type("NoCatalog", (), {"entries": lambda self: []})()
    models = services.settings.models_dir
    paths = [write_gguf(models / f"tiny-{q}.gguf", name="tiny-llama", file_type=t, seed=i)
             for i, (q, t) in enumerate((("q8", 7), ("q4", 15), ("q5", 17), ("f16", 1)))]
    Scanner(services.settings, services.inventory).scan()
    app = make_app(services, sampler=no_gpu_sampler())
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_ready(app, pilot)
            table = app.model_table
            assert table.row_count == 4
            ids = [table.get_cell(key, "id") for key in table.visible_keys]
            assert len(set(ids)) == 4 and {table.get_cell(k, "name") for k in
                                          table.visible_keys} == {"tiny-llama"}
            screen = html.unescape(app.export_screenshot()).replace("\xa0", " ")
            for model_id in ids:
                assert model_id in screen
            table.focus()
            await pilot.press(*"dod")  # letters meant for the filter land on the table
            assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
            assert await wait_for(pilot, lambda: not any(
                w.group == "delete" and not w.is_finished for w in app.workers), 10)
            await pilot.pause()
            asked = sum(isinstance(s, ConfirmScreen) for s in app.screen_stack)
            assert 1 <= asked <= 2  # one question per d (the second may reach the dialog)
            assert all(p.is_file() for p in paths)  # asked, nothing deleted yet
            await pilot.press(*"n" * asked)
            assert await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
            await pilot.pause()
            assert all(p.is_file() for p in paths)
            assert len(services.inventory.list_models()) == 4
    finally:
        services.close()


@pytest.mark.parametrize("width", [80, 100, 120, 130])
async def test_columns_fit_every_width(width: int) -> None:
    app = Host(many_rows(5))
    async with app.run_test(size=(width, 12)) as pilot:
        ml = app.model_list
        assert ml.shown_columns == fit_columns(width)
        assert sum(w + 2 for _, w in ml.shown_columns) == width
        for y in range(6):
            assert len(line(ml, y)) == width
        # More rows than lines: a scrollbar, and the columns make room for it.
        ml.set_rows(many_rows(50))
        await pilot.pause()
        assert ml.show_vertical_scrollbar
        assert ml.shown_columns == fit_columns(width - 2)
        assert not ml.show_horizontal_scrollbar and ml.max_scroll_x == 0


async def test_a_header_click_sorts_and_marks_the_column() -> None:
    app = Host(many_rows(30))
    async with app.run_test(size=(120, 20)) as pilot:
        ml = app.model_list
        keys = [key for key, _ in ml.shown_columns]
        x = sum(w + 2 for _, w in ml.shown_columns[:keys.index("size")])  # Size starts here
        await pilot.click(ml, offset=(x + 1, 0))
        assert ml.sort_column == "size" and not ml.sort_reverse
        assert "Size↑" in line(ml, 0)
        sizes = [r.size_bytes or 0 for r in map(ml.get_model_row, ml.visible_keys) if r]
        assert sizes == sorted(sizes)
        await pilot.click(ml, offset=(x + 1, 0))
        assert ml.sort_reverse and "Size↓" in line(ml, 0)


def count_row_renders(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Each line :class:`ModelList` draws (not taken from its cache), by the cells drawn."""
    drawn: list[tuple[str, ...]] = []
    real = ModelList._row_strip

    def spy(self: ModelList, cells: tuple[str, ...], *args: Any) -> Any:
        drawn.append(cells)
        return real(self, cells, *args)

    monkeypatch.setattr(ModelList, "_row_strip", spy)
    return drawn


async def test_unchanged_lines_come_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = many_rows(200)
    app = Host(rows)
    async with app.run_test(size=(120, 22)) as pilot:
        ml = app.model_list
        drawn = count_row_renders(monkeypatch)
        region = Region(0, 0, ml.size.width, ml.size.height)
        first = [s.text for s in ml.render_lines(region)]
        assert len(drawn) <= 21  # at most the rows on screen
        drawn.clear()
        assert [s.text for s in ml.render_lines(region)] == first
        assert drawn == []  # nothing drawn again
        ml.update_row(dataclasses.replace(rows[3], status="installed"))
        ml.render_lines(region)
        assert [cells[0] for cells in drawn] == ["installed"]  # only the changed row
        drawn.clear()
        await pilot.press("down")  # cursor row 0 -> 1: two lines change
        ml.render_lines(region)
        assert sorted(cells[1] for cells in drawn) == sorted(
            [ml.get_cell("k0", "id"), ml.get_cell("k1", "id")])
        drawn.clear()
        app.theme = "textual-light" if app.theme == "textual-dark" else "textual-dark"
        await pilot.pause()
        ml.render_lines(region)
        assert len(drawn) == 21  # new styles: every line drawn once ...
        drawn.clear()
        ml.render_lines(region)
        assert drawn == []  # ... and cached again


def spy_repaints(ml: ModelList) -> list[tuple[Region, ...]]:
    """The regions of every ``refresh`` of the list (empty tuple: the whole widget)."""
    calls: list[tuple[Region, ...]] = []
    real = ml.refresh

    def spy(*regions: Region, **kwargs: Any) -> Any:
        calls.append(regions)
        return real(*regions, **kwargs)

    ml.refresh = spy  # type: ignore[method-assign]
    return calls


async def test_updates_repaint_only_the_changed_lines() -> None:
    rows = many_rows(200)
    rows[4] = dataclasses.replace(rows[4], last_used_at=NOW - 120, status="installed")
    clock = [NOW]
    app = Host(rows, clock)
    async with app.run_test(size=(160, 22)) as pilot:
        ml = app.model_list
        await pilot.pause()
        calls = spy_repaints(ml)
        ml.update_rows(rows[:30])  # the same rows again: nothing to repaint
        assert calls == []
        ml.update_rows([dataclasses.replace(rows[5], status="downloading", progress=0.5),
                        dataclasses.replace(rows[150], status="queued")])  # 150: off screen
        assert [(r.y, r.height) for (r,) in calls] == [(6, 1)]  # row 5 is line 6
        calls.clear()
        ml.refresh_used()  # the clock did not move
        assert calls == []
        clock[0] += 3600  # an hour on: row 4's "2m ago" becomes "1h ago"
        ml.refresh_used()
        assert [(r.y, r.height) for (r,) in calls] == [(5, 1)]
        assert ml.get_cell("k4", "last_used") == "1h ago"
        calls.clear()
        await pilot.press("down")  # the cursor moves: its old and new lines only
        assert sorted((r.y, r.height) for (r,) in calls) == [(1, 1), (2, 1)]


async def test_low_redraw_job_updates_repaint_one_line(tmp_path: Path) -> None:
    from tui.app.views import JobView

    from tests.support.app import installed_record

    services = make_services(tmp_path, records=[installed_record()], low_redraw=True)
    app = make_app(services)
    qwen = "entry:qwen2.5-7b-instruct-gguf"
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_ready(app, pilot)
            table = app.model_table
            calls = spy_repaints(table)
            for done in range(1, 6):
                app.downloads_panel.post_job(
                    JobView("j1", "Qwen", "downloading", done, 10, row_key=qwen))
            await pilot.pause()
            y = table.get_row_index(qwen) + 1
            assert calls and all(len(c) == 1 and c[0].y == y and c[0].height == 1
                                 for c in calls), calls
            assert table.get_cell(qwen, "status") == "downloading 50%"
    finally:
        services.close()


async def test_markup_and_control_characters_are_shown_literally() -> None:
    rows = [
        ModelRow(key="a", name="[bold]x[/] \x1b[2J", model_id="[red]evil[/]\x9b31m\x07",
                 quant="Q4\u202e", status="installed"),
        ModelRow(key="b", name="ok", model_id="[link=http://x]y[/link]"),
    ]
    app = Host(rows)
    async with app.run_test(size=(160, 8)) as pilot:
        await pilot.pause()
        ml = app.model_list
        first = line(ml, 1)
        assert "[red]evil[/]\\x9b31m\\x07" in first
        assert "[bold]x[/] \\x1b[2J" in first
        assert "[link=http://x]y[/link]" in line(ml, 2)
        screen = html.unescape(app.export_screenshot()).replace("\xa0", " ")
        assert_no_control_chars(screen)
        assert "[red]evil[/]" in screen and "[bold]x[/]" in screen
        assert all(not s.style or not s.style.link for s in ml.render_line(2))


async def test_a_cut_id_ends_in_an_ellipsis() -> None:
    long_id = "a-very-long-model-id-from-a-hugging-face-cache-folder-Q4_K_M"
    app = Host([ModelRow(key="a", name="x", model_id=long_id)])
    async with app.run_test(size=(80, 6)):
        ml = app.model_list
        width = dict(ml.shown_columns)["id"]
        assert f" {long_id[: width - 1]}… " in line(ml, 1)
        assert ml.get_cell("a", "id") == long_id  # the whole id is still there


def test_column_keys_start_with_status_and_id() -> None:
    assert COLUMN_KEYS[:3] == ("status", "id", "name")


async def test_the_base_model_has_its_column_and_the_filter_finds_it(tmp_path: Path) -> None:
    """A LoRA from CivitAI (its base model in the metadata) and a catalog VAE show their base
    family in the Base column, and typing it filters to them."""
    from tui.app.views import row_from_record
    from tui.metadata.types import ModelMetadata
    from tui.store.records import ModelRecord

    lora = ModelRecord(id="detail-xl", name="detail-xl", format="safetensors", source="civitai",
                       path=str(tmp_path / "d.safetensors"), kind="lora",
                       metadata=ModelMetadata(format="safetensors", kind="lora",
                                              extra={"base_family": "sdxl", "rank": 8}))
    rows = [row_from_record(lora), ModelRow(key="entry:vae", name="flux vae", entry_id="vae",
                                            kind="vae", base="flux1"), *many_rows(5)]
    app = Host(rows)
    async with app.run_test(size=(160, 20)) as pilot:
        ml = app.model_list
        assert "base" in [key for key, _ in ml.shown_columns]
        assert ml.get_cell("model:detail-xl", "base") == "sdxl"
        assert ml.get_cell("entry:vae", "base") == "flux1"
        ml.filter_text = "sdxl"
        await pilot.pause()
        assert ml.visible_keys == ["model:detail-xl"]
