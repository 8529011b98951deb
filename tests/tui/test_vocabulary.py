"""One vocabulary in the dashboard: a model's size reads as on the command line — the same
digits and binary units, ``free -h``'s letters in narrow cells (table, downloads panel,
sidebar), the full unit in the delete dialog's prose and file list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.widgets import Static

from tui import formatting as fmt
from tui.app.screens import ConfirmScreen
from tui.app.views import JobView

from tests.support.app import make_app, make_services, no_gpu_sampler, wait_for, wait_ready
from tests.support.gguf import write_gguf
from tests.support.runtime import register_model

SIZE = (120, 40)


def text_of(widget: Any) -> str:
    return str(widget.render())


async def test_a_size_reads_the_same_in_table_panel_sidebar_and_delete_dialog(
        tmp_path: Path) -> None:
    services = make_services(tmp_path, fixed_catalog=False)
    path = write_gguf(services.settings.models_dir / "vocab-Q4_K_M.gguf",
                      tensor_shapes=((1600, 2016),))
    size = path.stat().st_size  # 12.3 MiB
    full, compact = fmt.size(size), fmt.size_compact(size)
    assert (full, compact) == ("12 MiB", "12Mi")
    register_model(services.inventory, "vocab", path, "gguf")
    sampler = no_gpu_sampler()
    app = make_app(services, sampler)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(app, pilot)
            table = app.model_table
            assert str(table.get_cell("model:vocab", "size")) == compact

            app.post_job(JobView("j1", "vocab", "downloading", size, size, speed_bps=size,
                                 eta_s=65))
            await wait_for(pilot, lambda: app.downloads_panel.row_for("j1") is not None)
            await pilot.pause()
            row = app.downloads_panel.row_for("j1")
            assert text_of(row.query_one(".job-bytes")) == f"{compact}/{compact}"
            assert text_of(row.query_one(".job-speed")) == f"{compact}/s ETA 1m05s"

            snap = sampler.snapshot
            sidebar = "\n".join(text_of(w) for w in app.sidebar.query(Static))
            ram = f"{fmt.size_compact(snap.ram_used)}/{fmt.size_compact(snap.ram_total)}"
            assert ram == "12Gi/64Gi" and ram in sidebar

            table.focus()
            table.move_cursor(row=table.get_row_index("model:vocab"))
            await pilot.press("d")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            dialog = app.screen
            assert f"frees {full} on the models volume" in dialog.question
            assert any(line.startswith("delete") and f" {full}  " in line
                       and line.endswith(path.name) for line in dialog.details), dialog.details
            await pilot.press("n")
    finally:
        services.close()
    assert path.exists()  # "n" kept it
