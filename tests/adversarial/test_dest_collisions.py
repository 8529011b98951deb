"""Two downloads whose files would land on the same path never overwrite an installed model
or each other's partial: a direct URL gets its own folder, a Hub file is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tui.download import JobSpec
from tui.download.service import DownloadService

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes, make_service, sha256
from tests.support.checks import (
    assert_no_control_chars,
    assert_one_line_error,
    run_modeldeck,
    tree_digest,
)


@pytest.fixture
async def svc(dl_settings) -> AsyncIterator[DownloadService]:
    service = make_service(dl_settings)
    yield service
    await service.stop()
    service.db.close()


async def run(service: DownloadService, *specs: JobSpec):
    ids = [service.enqueue(spec) for spec in specs]
    return await service.run_until_complete(ids)


def direct(settings) -> Path:
    return settings.models_dir / "direct"


async def test_two_queued_urls_with_one_file_name_get_two_paths(hub: FakeHub, svc, dl_settings
                                                                ) -> None:
    one, two = gguf_bytes(300_000, 1), gguf_bytes(300_000, 2)
    hub.add_file("a/model.gguf", one)
    hub.add_file("b/model.gguf", two)
    a, b = await run(svc, JobSpec(kind="url", url=f"{hub.url}/files/a/model.gguf"),
                     JobSpec(kind="url", url=f"{hub.url}/files/b/model.gguf"))
    assert a.state == b.state == "done", (a.error, b.error)
    paths = {Path(a.files[0].dest), Path(b.files[0].dest)}
    assert len(paths) == 2 and direct(dl_settings) / "model.gguf" in paths
    assert {p.read_bytes() for p in paths} == {one, two}
    assert all(p.name == "model.gguf" and p.is_relative_to(direct(dl_settings)) for p in paths)
    models = {m.id: m for m in svc.inventory.list_models()}
    assert {m.files[0].sha256 for m in models.values()} == {sha256(one), sha256(two)}


async def test_a_url_never_overwrites_an_installed_model_of_the_same_name(
        hub: FakeHub, svc, dl_settings) -> None:
    one, two = gguf_bytes(200_000, 3), gguf_bytes(200_000, 4)
    hub.add_file("a/m.gguf", one)
    hub.add_file("b/m.gguf", two)
    [first] = await run(svc, JobSpec(kind="url", url=f"{hub.url}/files/a/m.gguf"))
    assert first.state == "done", first.error
    installed = direct(dl_settings) / "m.gguf"
    before = tree_digest(installed.parent, skip=(installed.parent / "m.gguf.lock",))
    [second] = await run(svc, JobSpec(kind="url", url=f"{hub.url}/files/b/m.gguf"))
    assert second.state == "done", second.error
    assert installed.read_bytes() == one
    assert tree_digest(installed.parent)["m.gguf"] == before["m.gguf"]
    assert Path(second.files[0].dest).read_bytes() == two
    assert svc.inventory.get_model(first.model_id).files[0].path == str(installed)
    # The same URL again is the same source: no third path.
    [again] = await run(svc, JobSpec(kind="url", url=f"{hub.url}/files/b/m.gguf"))
    assert again.state == "done" and again.files[0].dest == second.files[0].dest


async def test_a_users_own_file_is_not_touched(hub: FakeHub, svc, dl_settings) -> None:
    mine = direct(dl_settings) / "notes.gguf"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own bytes")
    data = gguf_bytes(100_000, 5)
    hub.add_file("notes.gguf", data)
    [job] = await run(svc, JobSpec(kind="url", url=f"{hub.url}/files/notes.gguf"))
    assert job.state == "done", job.error
    assert mine.read_bytes() == b"my own bytes"
    assert Path(job.files[0].dest) != mine and Path(job.files[0].dest).read_bytes() == data


async def test_a_hub_file_of_another_revision_is_refused_over_an_installed_model(
        hub: FakeHub, svc, dl_settings) -> None:
    hub.add_repo("acme/r", {"r-Q4_0.gguf": gguf_bytes(200_000, 6)}, commit="a" * 40)
    [first] = await run(svc, JobSpec(kind="hf", repo="acme/r"))
    assert first.state == "done", first.error
    folder = dl_settings.models_dir / "acme/r"
    before = tree_digest(folder)
    # Not the installed model's own file set (that would be its update): refused.
    hub.add_repo("acme/r", {"r-Q4_0.gguf": gguf_bytes(200_000, 7), "notes.md": b"hi"},
                 commit="b" * 40)
    [second] = await run(svc, JobSpec(kind="hf", repo="acme/r", include=["*"]))
    assert second.state == "failed"
    assert "already holds model" in second.error and "not overwriting" in second.error
    assert "\n" not in second.error
    assert_no_control_chars(second.error)
    assert tree_digest(folder) == before
    assert hub.requests_for("/resolve/bbbb") == []
    # The command line says it in one line and exits non-zero.
    await svc.stop()
    proc = await asyncio.to_thread(
        run_modeldeck, "pull", "acme/r", "--include", "*", "--json",
        env={"MODELDECK_MODELS_DIR": str(dl_settings.models_dir), "HF_ENDPOINT": hub.url,
             "MODELDECK_STATE_DIR": str(dl_settings.state_dir),
             "MODELDECK_SCAN_HF_CACHE": "false"})
    assert_one_line_error(proc, "already holds model", "not overwriting", "modeldeck rm")
    assert tree_digest(folder) == before


async def test_a_hub_job_never_takes_over_another_jobs_partial(hub: FakeHub, svc, dl_settings
                                                               ) -> None:
    hub.add_repo("acme/p", {"p-Q4_0.gguf": gguf_bytes(300_000, 8)}, commit="c" * 40)
    hub.add_fault("p-Q4_0.gguf", "drop_after", times=1, nbytes=100_000)
    hub.add_fault("p-Q4_0.gguf", "status", times=None, skip=1, status=500)
    svc.policy.max_tries = 2
    [first] = await run(svc, JobSpec(kind="hf", repo="acme/p"))
    assert first.state == "failed" and first.files  # planned, partial kept for a retry
    part = Path(first.files[0].dest + ".part")
    before = part.read_bytes()
    hub.clear_faults()
    hub.add_repo("acme/p", {"p-Q4_0.gguf": gguf_bytes(300_000, 9)}, commit="d" * 40)
    [second] = await run(svc, JobSpec(kind="hf", repo="acme/p"))
    assert second.state == "failed" and f"job {first.id}" in second.error
    assert part.read_bytes() == before
