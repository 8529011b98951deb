"""SVG snapshots of the dashboard, stored in ``snapshots/test_snapshots/`` (top level).

Deterministic: fixed catalog and inventory, fixed sampler readings, ``MockClock`` progress bars,
a fixed ``now``, no cursor blink, ``animation_level = "none"``.
Update with ``pytest tests/tui/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_textual_snapshot

from tui.app.app import ModelDeckApp
from tui.app.views import JobView

from tests.support.app import (
    installed_record,
    make_app,
    make_services,
    no_gpu_sampler,
    wait_ready,
)
from tests.support.checks import REPO

SNAPSHOT_DIR = REPO / "snapshots"


class TopLevelSVGExtension(pytest_textual_snapshot.SVGImageExtension):
    """Store the SVGs in ``<repo>/snapshots/`` instead of ``tests/tui/__snapshots__/``."""

    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        return str(SNAPSHOT_DIR / "test_snapshots")


@pytest.fixture(autouse=True)
def _top_level_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    # No public setting for the folder: syrupy 4.8 has no ``--snapshot-dirname`` (tophat/syrupy
    # #810) and ``snap_compare`` itself calls ``snapshot.use_extension(SVGImageExtension)``,
    # replacing any extension a test sets; it looks that name up on its module at call time.
    monkeypatch.setattr(pytest_textual_snapshot, "SVGImageExtension", TopLevelSVGExtension)


def _app(tmp_path: Path, **settings: Any) -> ModelDeckApp:
    records = [
        installed_record(),
        installed_record("local-ft", catalog_id=None, name="my-finetune-q5", size=5_330_000_000,
                         tokens_per_s=None, used_ago=5 * 86400),
    ]
    sampler = settings.pop("sampler", None)
    return make_app(make_services(tmp_path, records=records, **settings), sampler=sampler)


async def _with_jobs(pilot: Any) -> None:
    app = pilot.app
    await wait_ready(app, pilot)
    panel = app.downloads_panel
    panel.post_job(JobView("j1", "Qwen2.5 7B Instruct", "downloading", 1_950_000_000,
                           4_680_000_000, 48_000_000, 57, row_key="entry:qwen2.5-7b-instruct-gguf"))
    panel.post_job(JobView("j2", "Gemma 2 2B it", "queued", 0, 1_710_000_000,
                           row_key="entry:gemma-2-2b-it-gguf"))
    await pilot.pause()


def test_main_dark(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(_app(tmp_path), terminal_size=(120, 40), run_before=_with_jobs)


def test_main_light(snap_compare: Any, tmp_path: Path) -> None:
    app = _app(tmp_path, theme="light")
    assert snap_compare(app, terminal_size=(120, 40), run_before=_with_jobs)


def test_main_80x24(snap_compare: Any, tmp_path: Path) -> None:
    app = _app(tmp_path, sampler=no_gpu_sampler())
    assert snap_compare(app, terminal_size=(80, 24), run_before=_with_jobs)


def test_ascii_mode(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(_app(tmp_path, ascii=True), terminal_size=(120, 40), run_before=_with_jobs)


def test_help_screen(snap_compare: Any, tmp_path: Path) -> None:
    async def run_before(pilot: Any) -> None:
        await wait_ready(pilot.app, pilot)
        await pilot.press("question_mark")

    assert snap_compare(_app(tmp_path), terminal_size=(120, 40), run_before=run_before)


def test_quit_confirm_modal(snap_compare: Any, tmp_path: Path) -> None:
    async def run_before(pilot: Any) -> None:
        await _with_jobs(pilot)
        await pilot.press("q")

    assert snap_compare(_app(tmp_path), terminal_size=(120, 40), run_before=run_before)


def test_load_anyway_confirm_modal(snap_compare: Any, tmp_path: Path) -> None:
    """Enter on a model the fit check refuses: a warning toast and "Load anyway?"."""
    from tui.app.screens import ConfirmScreen
    from tui.runtime.service import RuntimeService

    from tests.support.app import fixed_probe, wait_for
    from tests.support.runtime import register_model
    from tests.support.tiny_models import tiny_gguf

    app = _app(tmp_path, sampler=no_gpu_sampler())
    services = app.services
    # No GPU and 1 MiB of free RAM (fixed): the tiny model won't fit, whatever the machine.
    services.__dict__["runtime"] = RuntimeService(
        services.settings, services.inventory, memory_probe=fixed_probe(1 << 20, ())
    )
    register_model(services.inventory, "tiny-llama-Q8_0", tiny_gguf(), "gguf")

    async def run_before(pilot: Any) -> None:
        await wait_ready(app, pilot)
        table = app.model_table
        row = next(r for r in table.all_rows.values() if r.model_id == "tiny-llama-Q8_0")
        table.focus()
        table.move_cursor(row=table.get_row_index(row.key))
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)


def test_console_answer(snap_compare: Any, tmp_path: Path) -> None:
    async def run_before(pilot: Any) -> None:
        app = pilot.app
        await wait_ready(app, pilot)
        await pilot.press("e")
        console = app.prompt_console
        console.set_model("Llama 3.1 8B Instruct")
        console.start_answer("What is a GGUF file?")
        console.append_tokens("A single-file format for quantized model weights ")
        console.append_tokens("and metadata, read by llama.cpp.")
        from tui.app.views import MetricsView

        console.finish_answer(MetricsView(ttft_ms=184, tokens_per_s=41.2, tokens=17))
        await pilot.pause()

    assert snap_compare(_app(tmp_path), terminal_size=(120, 40), run_before=run_before)


def _hub_repos(hub: Any) -> None:
    from tests.fakehub.testing import gguf_bytes

    hub.add_repo("acme/qwen-7b-GGUF", {
        "qwen-7b-Q4_K_M.gguf": gguf_bytes(4096, 1),
        "qwen-7b-Q8_0.gguf": gguf_bytes(8192, 2),
        "README.md": b"qwen",
    }, downloads=12_345, likes=67, commit="a" * 40)
    hub.add_repo("other/qwen-tiny-GGUF", {"q-Q8_0.gguf": gguf_bytes(2048, 3)},
                 downloads=99, likes=1, commit="b" * 40)


def test_add_model_modal(snap_compare: Any, tmp_path: Path, hub: Any) -> None:
    from textual.widgets import SelectionList

    from tests.support.app import wait_for

    _hub_repos(hub)

    async def run_before(pilot: Any) -> None:
        app = pilot.app
        await wait_ready(app, pilot)
        await pilot.press("a", *"acme/qwen-7b-GGUF", "enter")
        files = app.screen.query_one("#add-files", SelectionList)
        assert await wait_for(pilot, lambda: files.option_count == 2, timeout=10)
        await pilot.press("space")
        await pilot.pause()

    assert snap_compare(_app(tmp_path), terminal_size=(120, 40), run_before=run_before)


def test_hub_search_modal(snap_compare: Any, tmp_path: Path, hub: Any) -> None:
    from textual.widgets import DataTable

    from tests.support.app import wait_for

    _hub_repos(hub)

    async def run_before(pilot: Any) -> None:
        app = pilot.app
        await wait_ready(app, pilot)
        await pilot.press("ctrl+f", *"qwen", "enter")
        table = app.screen.query_one("#hub-results", DataTable)
        assert await wait_for(pilot, lambda: table.row_count == 2, timeout=10)
        await pilot.pause()

    assert snap_compare(_app(tmp_path), terminal_size=(120, 40), run_before=run_before)


def test_gen_params_modal(snap_compare: Any, tmp_path: Path) -> None:
    """F3 in the console: the parameters, with the one-line error of a bad temperature."""

    async def run_before(pilot: Any) -> None:
        await wait_ready(pilot.app, pilot)
        await pilot.press("e", "f3", "ctrl+a", "ctrl+k", *"hot", "enter")
        await pilot.pause()

    assert snap_compare(_app(tmp_path), terminal_size=(120, 40), run_before=run_before)
