"""The add dialog takes a pasted CivitAI model URL: it is downloaded from the (fake) CivitAI
API through the real engine and shows up in the table with its kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.widgets import Button, Static

from tui.app.screens import AddModelScreen
from tui.services import Services

from tests.fakecivitai import FakeCivitai, FakeFile, FakeModel, FakeVersion
from tests.fakecivitai.testing import lora_bytes
from tests.support.app import make_app, no_gpu_sampler, wait_for, wait_ready

SIZE = (160, 40)


async def test_pasted_civitai_url_downloads_with_its_kind(civitai: FakeCivitai,
                                                          services: Services) -> None:
    civitai.add(FakeModel(101, "Detail Tweaker XL", "LORA", [
        FakeVersion(202, "v2.0", "SDXL 1.0", [FakeFile("detail.safetensors", lora_bytes(2))])]))
    app = make_app(services, sampler=no_gpu_sampler(), watch_downloads=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("a")
        screen = app.screen
        assert isinstance(screen, AddModelScreen)
        screen.query_one("#add-tabs").active = "tab-url"  # type: ignore[attr-defined]
        await pilot.pause()
        url = screen.query_one("#add-url")
        url.value = "https://civitai.com/models/101/x?modelVersionId=999"  # type: ignore[attr-defined]
        screen.query_one("#add-url-ok", Button).press()
        assert await wait_for(pilot, lambda: not isinstance(app.screen, AddModelScreen),
                              timeout=10)
        assert await wait_for(pilot, lambda: bool(app.downloads_panel.jobs), timeout=10)
        assert await wait_for(pilot, lambda: any(  # a missing version: the job fails
            j.state == "failed" for j in app.downloads_panel.jobs.values()), timeout=20)

        await pilot.press("a")
        screen = app.screen
        screen.query_one("#add-tabs").active = "tab-url"  # type: ignore[attr-defined]
        await pilot.pause()
        url = screen.query_one("#add-url")
        url.value = "https://civitai.com/models/101/detail-tweaker-xl?modelVersionId=202"  # type: ignore[attr-defined]
        screen.query_one("#add-url-ok", Button).press()
        assert await wait_for(pilot, lambda: not isinstance(app.screen, AddModelScreen),
                              timeout=10)

        def row() -> Any:
            return next((r for r in app.model_table.all_rows.values()
                         if r.model_id and r.status == "installed"), None)

        assert await wait_for(pilot, lambda: row() is not None, timeout=30)
        assert row().kind == "lora"
    [model] = services.inventory.list_models()
    assert model.source_ref == "civitai:101@202"
    assert Path(model.path).parent.name == "detail-tweaker-xl-202"


async def test_a_bad_civitai_url_is_one_line_and_queues_nothing(civitai: FakeCivitai,
                                                                services: Services) -> None:
    app = make_app(services, sampler=no_gpu_sampler())
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        await pilot.press("a")
        screen = app.screen
        screen.query_one("#add-tabs").active = "tab-url"  # type: ignore[attr-defined]
        await pilot.pause()
        screen.query_one("#add-url").value = "https://civitai.com/images/123"  # type: ignore[attr-defined]
        screen.query_one("#add-url-ok", Button).press()
        error = screen.query_one("#add-error", Static)
        assert await wait_for(pilot, lambda: "CivitAI" in str(error.render()), timeout=10)
        assert "\n" not in str(error.render())
        assert isinstance(app.screen, AddModelScreen)
    assert services.downloads.list_jobs() == []
    assert services.catalog.entries() == [e for e in services.catalog.entries() if e.builtin]
