"""The dashboard shows a registered remote engine's models as rows (status ``remote``); Enter
on one loads it through the OpenAI client backend (no download) and the console answers from
the upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tui.remote.registry import add_remote

from tests.support.app import make_app, make_services, no_gpu_sampler, wait_for, wait_ready
from tests.support.upstream import FakeUpstream

SIZE = (120, 40)


@pytest.fixture
def services(tmp_path: Path) -> Any:
    svc = make_services(tmp_path, fixed_catalog=False)
    yield svc
    svc.close()


async def test_remote_rows_load_and_answer(services: Any) -> None:
    with FakeUpstream() as up:
        add_remote(services.settings.state_dir, "up", up.url)
        app = make_app(services, sampler=no_gpu_sampler())
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(app, pilot)
            table = app.model_table
            assert await wait_for(pilot, lambda: "remote:up/m1" in table.all_rows)
            row = table.all_rows["remote:up/m1"]
            assert row.status == "remote" and row.model_id == "up/m1"
            assert table.get_cell("remote:up/m1", "status") == "remote"
            table.focus()
            table.move_cursor(row=table.get_row_index("remote:up/m1"))
            await pilot.pause()
            await pilot.press("enter")
            runtime = services.runtime
            assert await wait_for(pilot, lambda: runtime.is_loaded("up/m1"), timeout=20)
            assert not app.downloads_panel.jobs  # loaded, never downloaded
            await pilot.press(*"hello", "enter")
            console = app.prompt_console
            assert await wait_for(pilot, lambda: not console.streaming and any(
                "t1" in str(line) for line in console.output.lines), timeout=20)
            await runtime.aclose()
