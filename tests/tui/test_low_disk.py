"""The low-disk warning: shown when the models volume drops below ``low_disk_warning``, and
``F`` opens the reclaim proposal; confirming deletes through the safe path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tui.app.screens import ConfirmScreen
from tui.discovery import Scanner
from tui.resources.types import DiskReading

from tests.support.app import (
    GIB,
    FakeSampler,
    make_app,
    make_services,
    snapshot,
    wait_for,
    wait_ready,
)
from tests.support.gguf import write_gguf

SIZE = (120, 40)


def _sampler(free: int, total: int = 500 * GIB) -> FakeSampler:
    disk = DiskReading(path="/models", mount="/", used=total - free, total=total, free=free)
    return FakeSampler(dataclasses.replace(snapshot(), disks=(disk,)))


def _shelf(tmp_path: Path):
    services = make_services(tmp_path, fixed_catalog=False, low_disk_warning="10G")
    models = services.settings.models_dir
    old = write_gguf(models / "old" / "old.gguf", seed=1)
    new = write_gguf(models / "new" / "new.gguf", seed=2)
    Scanner(services.settings, services.inventory).scan()
    ids = {Path(m.path).stem: m.id for m in services.inventory.list_models()}
    services.inventory.touch_last_used(ids["old"], 1000)
    services.inventory.touch_last_used(ids["new"], 2000)
    return services, ids, old, new


async def test_low_disk_warns_and_f_opens_the_proposal(tmp_path: Path) -> None:
    services, ids, old, new = _shelf(tmp_path)
    app = make_app(services, _sampler(free=10 * GIB - 100))  # 100 bytes short
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(app, pilot)
            warn = app.sidebar.query_one("#res-disk-warn")
            assert await wait_for(pilot, lambda: warn.display)
            assert "Low disk" in str(warn.render()) and "F" in str(warn.render())
            await pilot.press("F")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            dialog = app.screen
            assert isinstance(dialog, ConfirmScreen)
            assert dialog.destructive and "Delete 1 item" in dialog.question
            assert len(dialog.details) == 1 and ids["old"] in dialog.details[0]
            assert ids["new"] not in dialog.details[0]
            await pilot.press("y")  # a typed y never confirms a delete
            await pilot.pause()
            assert app.screen is dialog and old.exists()
            await pilot.press("right", "enter")
            assert await wait_for(pilot, lambda: not old.exists())
            assert await wait_for(pilot, lambda: services.inventory.get_model(ids["old"])
                                  is None)
            assert new.exists() and services.inventory.get_model(ids["new"]) is not None
    finally:
        services.close()


async def test_no_warning_above_the_level_and_keep_deletes_nothing(tmp_path: Path) -> None:
    services, ids, old, new = _shelf(tmp_path)
    app = make_app(services, _sampler(free=200 * GIB))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(app, pilot)
            await pilot.pause()
            assert app.disk_usage == (200 * GIB, 500 * GIB)
            assert not app.sidebar.query_one("#res-disk-warn").display and not app.low_disk
            await pilot.press("F")
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen)
        # the same proposal, kept: nothing deleted
        app = make_app(services, _sampler(free=10 * GIB - 100))
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(app, pilot)
            assert await wait_for(pilot, lambda: app.low_disk)
            await pilot.press("F")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen)
        assert old.exists() and new.exists()
        assert {m.id for m in services.inventory.list_models()} == set(ids.values())
    finally:
        services.close()
