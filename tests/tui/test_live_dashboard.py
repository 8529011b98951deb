"""The dashboard is the live picture: another process's ``modeldeck pull``, ``jobs cancel`` and
``rm``, and files copied into or deleted from the models dir, show up without a restart
(Pilot, headless; the other processes are real ``modeldeck`` subprocesses on the same state
dir, against the fake Hub)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tui.app.app import ModelDeckApp
from tui.discovery import Scanner
from tui.discovery_watch import FolderWatcher
from tui.download.jobs import JobStore
from tui.services import Services

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes
from tests.support.app import make_app, make_services, no_gpu_sampler, wait_for, wait_ready
from tests.support.checks import REPO
from tests.support.gguf import write_gguf
from tests.support.storage import organize_killed_after_rename

SIZE = (120, 40)

pytestmark = pytest.mark.slow


def _env(hub: FakeHub | None, services: Services) -> dict[str, str]:
    env = dict(
        os.environ, MODELDECK_STATE_DIR=str(services.settings.state_dir),
        MODELDECK_MODELS_DIR=str(services.settings.models_dir),
        MODELDECK_CONNECTIONS_PER_DOWNLOAD="2", MODELDECK_SCAN_HF_CACHE="0",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    return env


def _start(services: Services, hub: FakeHub | None, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tui", *args], env=_env(hub, services),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(services: Services, hub: FakeHub | None, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui", *args], env=_env(hub, services),
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _live_app(services: Services, **kwargs: Any) -> ModelDeckApp:
    kwargs.setdefault("watch_changes", True)
    return make_app(services, sampler=no_gpu_sampler(), compute_fit=False, **kwargs)


def _job(app: ModelDeckApp) -> Any:
    jobs = list(app.downloads_panel.jobs.values())
    return jobs[0] if len(jobs) == 1 else None


async def test_a_cli_pull_appears_progresses_and_finishes_in_the_dashboard(
        hub: FakeHub, tmp_path: Path) -> None:
    data = gguf_bytes(3 << 20, 11)
    hub.add_repo("acme/live", {"live-Q4_K_M.gguf": data})
    hub.add_fault("live-Q4_K_M.gguf", "slow", times=None, rate=512 << 10)
    services = make_services(tmp_path)
    app = _live_app(services, watch_folders=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        proc = _start(services, hub, "pull", "acme/live:Q4_K_M", "--quiet")
        try:
            assert await wait_for(pilot, lambda: (j := _job(app)) is not None
                                  and j.state == "downloading" and j.done_bytes > 0, 30)
            first = _job(app).done_bytes
            assert first < len(data)
            assert await wait_for(pilot, lambda: _job(app).done_bytes > first
                                  and (_job(app).speed_bps or 0) > 0, 30)
            assert await wait_for(pilot, lambda: _job(app).state == "done", 60)
            assert await wait_for(pilot, lambda: any(
                r.installed and r.quant == "Q4_K_M" for r in app.model_table.all_rows.values()),
                10)
        finally:
            _out, err = _stop(proc)
        assert proc.returncode == 0, err
        assert app.downloads_panel.active_count == 0
    (model,) = services.inventory.list_models()
    # Discovery saw the finished file too, and left the download's record as it was.
    assert model.source == "hf" and model.files[0].verified == "sha256"
    services.close()


async def test_jobs_cancel_in_another_process_shows_cancelled(hub: FakeHub, tmp_path: Path
                                                              ) -> None:
    data = gguf_bytes(4 << 20, 12)
    hub.add_repo("acme/cancel", {"cancel-Q4_K_M.gguf": data})
    hub.add_fault("cancel-Q4_K_M.gguf", "slow", times=None, rate=256 << 10)
    services = make_services(tmp_path, fixed_catalog=False)
    entry = services.catalog.add_hf("acme/cancel", quant="Q4_K_M", entry_id="cancel-me")
    row_key = f"entry:{entry.id}"
    app = _live_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        proc = _start(services, hub, "pull", entry.id, "--quiet")
        try:
            assert await wait_for(pilot, lambda: (j := _job(app)) is not None
                                  and j.state == "downloading" and j.done_bytes > 0, 30)
            table = app.model_table
            assert await wait_for(pilot, lambda: str(table.get_cell(row_key, "status"))
                                  .startswith("downloading "), 10)
            cancel = _run(services, hub, "jobs", "cancel", _job(app).job_id)
            assert cancel.returncode == 0, cancel.stderr
            assert await wait_for(pilot, lambda: _job(app).state == "cancelled", 30)
            assert await wait_for(pilot, lambda: str(table.get_cell(row_key, "status"))
                                  == "available", 10)
        finally:
            _stop(proc)
        assert app.downloads_panel.active_count == 0
        assert "cancelled" in str(app.downloads_panel.row_for(_job(app).job_id)._state.render())
    services.close()


async def test_the_dashboard_pauses_a_pull_another_process_runs_then_finishes_it(
        hub: FakeHub, tmp_path: Path) -> None:
    """Pause from the panel goes to the pull's process (``jobs.control``); the paused state
    comes back through the feed; resume runs the job here, to the end."""
    data = gguf_bytes(3 << 20, 13)
    hub.add_repo("acme/handover", {"handover-Q4_K_M.gguf": data})
    hub.add_fault("handover-Q4_K_M.gguf", "slow", times=None, rate=256 << 10)
    services = make_services(tmp_path)
    app = _live_app(services, watch_downloads=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        proc = _start(services, hub, "pull", "acme/handover:Q4_K_M", "--quiet")
        try:
            assert await wait_for(pilot, lambda: (j := _job(app)) is not None
                                  and j.state == "downloading" and j.done_bytes > 0, 30)
            assert not services.downloads.runs_here(_job(app).job_id)
            app.downloads_panel.focus()
            await pilot.press("p")
            assert await wait_for(pilot, lambda: _job(app).state == "paused", 30)
        finally:
            _out, err = _stop(proc)
        assert proc.returncode == 130, err  # the pull stopped: paused from the dashboard
        hub.clear_faults()
        await pilot.press("r")
        assert await wait_for(pilot, lambda: _job(app).state == "done", 60)
    (model,) = services.inventory.list_models()
    assert Path(model.path).read_bytes() == data
    services.close()


async def test_rm_in_another_process_removes_the_row(tmp_path: Path) -> None:
    services = make_services(tmp_path)
    write_gguf(services.settings.models_dir / "gone-Q4_K_M.gguf", name="Gone Model")
    Scanner(services.settings, services.inventory).scan()
    (model,) = services.inventory.list_models()
    app = _live_app(services)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        key = f"model:{model.id}"
        assert app.model_table.get_model_row(key) is not None
        removed = _run(services, None, "rm", model.id, "-y")
        assert removed.returncode == 0, removed.stderr
        assert await wait_for(pilot, lambda: app.model_table.get_model_row(key) is None, 10)
    services.close()


async def test_a_copied_gguf_appears_once_complete_and_a_deleted_one_is_missing(
        tmp_path: Path) -> None:
    services = make_services(tmp_path)
    settings = services.settings
    services.__dict__["folder_watcher"] = FolderWatcher(
        settings, services.inventory, settle=2.5, tick=0.05,
        busy=JobStore(services.db).dests_in_flight)
    data = write_gguf(tmp_path / "elsewhere" / "copied-Q8_0.gguf", name="Copied Model",
                      n_vocab=500, tensor_shapes=((128, 128), (128,))).read_bytes()
    app = _live_app(services, watch_folders=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        watcher = services.folder_watcher
        assert await wait_for(pilot, lambda: watcher.watched == watcher.roots, 10)
        dest = settings.models_dir / "copied-Q8_0.gguf"

        def rows() -> list[Any]:
            return [r for r in app.model_table.all_rows.values() if r.model_id]

        with open(dest, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            assert await wait_for(pilot, lambda: bool(watcher.pending), 10)
            time.sleep(0.3)  # growing slower than a copy would: still not read
            assert services.inventory.scan_cache_all() == {} and not rows()
            f.write(data[len(data) // 2:])
        assert await wait_for(pilot, lambda: len(rows()) == 1 and rows()[0].installed, 15)
        assert rows()[0].name == "Copied Model"
        dest.unlink()
        assert await wait_for(pilot, lambda: not rows()[0].installed, 15)
        (model,) = services.inventory.list_models()
        assert model.status == "missing"
    services.close()


async def test_a_broken_file_copied_in_is_one_escaped_line(tmp_path: Path) -> None:
    services = make_services(tmp_path)
    services.__dict__["folder_watcher"] = FolderWatcher(
        services.settings, services.inventory, settle=0.3, tick=0.05)
    app = _live_app(services, watch_folders=True)
    shown: list[str] = []
    notify = app.notify

    def record(message: str, **kwargs: Any) -> None:
        shown.append(message)
        notify(message, **kwargs)

    app.notify = record  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        watcher = services.folder_watcher
        assert await wait_for(pilot, lambda: watcher.watched == watcher.roots, 10)
        bad = services.settings.models_dir / "bad\x1b[2J.gguf"
        bad.write_bytes(b"GGUF" + bytes(range(256)) * 4)
        assert await wait_for(pilot, lambda: any("bad" in m for m in shown), 15)
        (line,) = [m for m in shown if "bad" in m]
        assert "\x1b" not in line and "\\x1b[2J" in line and "\n" not in line
        assert not services.inventory.list_models()
    services.close()


async def test_the_dashboard_finishes_an_interrupted_organize_at_start(tmp_path: Path) -> None:
    """``organize`` killed between a rename and its commit: the dashboard's start finishes the
    move (as ``ls`` and ``scan`` do) and says so, instead of showing the model missing."""
    services = make_services(tmp_path)
    settings = services.settings
    old = write_gguf(settings.models_dir / "one.gguf")
    Scanner(settings, services.inventory).scan()
    [model] = services.inventory.list_models()
    organize_killed_after_rename(settings, services.inventory)
    new = settings.models_dir / "llm" / "one.gguf"
    assert new.is_file() and not old.exists()
    app = _live_app(services, watch_folders=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(app, pilot)
        assert await wait_for(
            pilot, lambda: services.inventory.require_model(model.id).path == str(new), 20)
        assert await wait_for(pilot, lambda: any(
            "finished the interrupted move" in n.message for n in app._notifications), 10)
        assert services.inventory.require_model(model.id).status == "installed"
    services.close()
