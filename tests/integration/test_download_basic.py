"""Happy paths: Hub repos (multi-file, LFS sha256, git blob ids), direct URLs, events."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tui.catalog import Catalog
from tui.download import DownloadEvent, JobSpec
from tui.download.service import DownloadService

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes, make_service, part_files, sha256


async def test_hub_repo_multi_file_verified_and_registered(
    hub: FakeHub, service: DownloadService, dl_settings
) -> None:
    big = gguf_bytes(9 << 20, seed=1)
    files = {"tiny-Q4_K_M.gguf": big, "README.md": b"# hi\n", "config.json": b"{}" * 700}
    repo = hub.add_repo("acme/tiny", files)
    job_id = service.enqueue(JobSpec(kind="hf", repo="acme/tiny", include=["*"]))
    [job] = await service.run_until_complete([job_id])
    assert job.state == "done", job.error
    root = dl_settings.models_dir / "acme" / "tiny"
    for name, data in files.items():
        assert (root / name).read_bytes() == data
    assert part_files(dl_settings.models_dir) == []
    assert not list(root.glob("*.lock"))
    # several Range connections were used for the big file (on the CDN), commit pinned in
    # the resolved URL
    gets = hub.requests_for("tiny-Q4_K_M.gguf", "GET")
    assert len(gets) >= 2 and all(r.host == "cdn" for r in gets)
    assert all(repo.commit in r.path for r in hub.requests_for("/resolve/"))
    assert all(r.headers.get("Accept-Encoding") == "identity" for r in gets)
    model = service.inventory.get_model(job.model_id)
    assert model is not None and model.source == "hf" and model.revision == repo.commit
    assert model.files[0].sha256 == sha256(big)


async def test_quant_selection_and_layout(hub: FakeHub, service: DownloadService, dl_settings
                                          ) -> None:
    hub.add_repo("acme/multi", {
        "m-Q4_K_M.gguf": gguf_bytes(1000, 2), "m-Q8_0.gguf": gguf_bytes(2000, 3),
        "sub/m-Q2_K-00001-of-00002.gguf": gguf_bytes(500, 4),
        "sub/m-Q2_K-00002-of-00002.gguf": gguf_bytes(500, 5),
    })
    job_id = service.enqueue(JobSpec(kind="hf", repo="acme/multi", quant="q2_k"))
    [job] = await service.run_until_complete([job_id])
    assert job.state == "done", job.error
    assert sorted(f.path for f in job.files) == [
        "sub/m-Q2_K-00001-of-00002.gguf", "sub/m-Q2_K-00002-of-00002.gguf"]
    assert (dl_settings.models_dir / "acme/multi/sub/m-Q2_K-00002-of-00002.gguf").is_file()
    assert not (dl_settings.models_dir / "acme/multi/m-Q8_0.gguf").exists()

    # no quant given but several exist -> a clear error naming them
    job_id = service.enqueue(JobSpec(kind="hf", repo="acme/multi"))
    [job] = await service.run_until_complete([job_id])
    assert job.state == "failed" and "Q4_K_M" in job.error and "Q8_0" in job.error


async def test_non_lfs_file_checked_against_git_blob_id(hub: FakeHub, service: DownloadService
                                                        ) -> None:
    hub.add_repo("acme/small", {"config.json": b'{"a": 1}', "m-Q4_0.gguf": gguf_bytes(100)})
    # the listing's blob id is wrong for config.json -> verification fails twice
    hub.repos["acme/small"].extra_listing = []
    from tests.fakehub.server import FakeFile

    real = hub.repos["acme/small"].files["config.json"]
    job_id = service.enqueue(JobSpec(kind="hf", repo="acme/small", include=["*"]))
    [job] = await service.run_until_complete([job_id])
    assert job.state == "done", job.error
    assert not real.lfs and job.files[0].blob_sha1 is not None

    # serve different bytes than listed: listing is computed from the same data, so
    # swap the data after listing by a 'change' fault on the GET only
    hub.add_repo("acme/bad", {"config.json": b'{"a": 1}'})
    hub.add_fault("acme/bad/resolve", "change", times=1, methods=("HEAD",), data=b'{"a": 2}')
    job_id = service.enqueue(JobSpec(kind="hf", repo="acme/bad", include=["*"]))
    [job] = await service.run_until_complete([job_id])
    assert job.state == "failed" and "verification" in job.error
    assert FakeFile  # imported for type reference


async def test_direct_url_with_sha256(hub: FakeHub, service: DownloadService, dl_settings) -> None:
    data = gguf_bytes(6 << 20, seed=7)
    url = hub.add_file("direct-model.gguf", data)
    job_id = service.enqueue(JobSpec(kind="url", url=url, sha256=sha256(data)))
    [job] = await service.run_until_complete([job_id])
    assert job.state == "done", job.error
    dest = dl_settings.models_dir / "direct" / "direct-model.gguf"
    assert dest.read_bytes() == data
    assert hub.requests_for("direct-model", "GET")[0].headers.get("Authorization") is None
    model = service.inventory.get_model(job.model_id)
    assert model is not None and model.source == "url" and model.source_ref == url


async def test_wrong_sha256_retries_once_then_fails_loudly(
    hub: FakeHub, service: DownloadService, dl_settings
) -> None:
    data = gguf_bytes(300_000, seed=8)
    url = hub.add_file("w.gguf", data)
    job_id = service.enqueue(JobSpec(kind="url", url=url, sha256="0" * 64))
    [job] = await service.run_until_complete([job_id])
    assert job.state == "failed"
    assert "failed verification twice" in job.error
    assert hub.bytes_served("w.gguf") == 2 * len(data)
    assert not (dl_settings.models_dir / "direct" / "w.gguf").exists()
    assert part_files(dl_settings.models_dir) == []
    assert service.inventory.list_models() == []


async def test_progress_events_are_rate_limited(hub: FakeHub, service: DownloadService) -> None:
    data = gguf_bytes(4 << 20, seed=9)
    url = hub.add_file("slow.gguf", data)
    hub.add_fault("slow.gguf", "slow", times=None, rate=4 << 20)
    events: list[DownloadEvent] = []
    service.subscribe(events.append)
    start = time.monotonic()
    job_id = service.enqueue(JobSpec(kind="url", url=url))
    [job] = await service.run_until_complete([job_id])
    elapsed = time.monotonic() - start
    assert job.state == "done", job.error
    progress = [e for e in events if e.state == "downloading"]
    assert len(progress) <= 10 * elapsed + 5
    assert len(progress) >= 3
    states = [e.state for e in events]
    assert states[0] == "queued" and states[-1] == "done"
    assert "verifying" in states
    last = progress[-1]
    assert last.total_bytes == len(data) and last.speed > 0
    done_values = [e.done_bytes for e in progress]
    assert done_values == sorted(done_values)


async def test_async_iterator_subscription(hub: FakeHub, service: DownloadService) -> None:
    url = hub.add_file("it.bin", b"x" * 5000)
    seen: list[str] = []

    async def consume() -> None:
        async for event in service.events():
            seen.append(event.state)
            if event.state in ("done", "failed"):
                return

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    job_id = service.enqueue(JobSpec(kind="url", url=url))
    await service.run_until_complete([job_id])
    await asyncio.wait_for(consumer, 5)
    assert seen[-1] == "done"


async def test_already_present_file_is_not_downloaded_again(
    hub: FakeHub, service: DownloadService
) -> None:
    data = gguf_bytes(2 << 20, seed=10)
    hub.add_repo("acme/again", {"a-Q4_0.gguf": data})
    [job] = await service.run_until_complete([service.enqueue(JobSpec(kind="hf",
                                                                      repo="acme/again"))])
    assert job.state == "done"
    hub.reset_counters()
    [job] = await service.run_until_complete([service.enqueue(JobSpec(kind="hf",
                                                                      repo="acme/again"))])
    assert job.state == "done"
    assert hub.bytes_served("a-Q4_0.gguf") == 0
    assert Path(job.files[0].dest).read_bytes() == data


async def test_expected_sha256_per_file_from_a_manifest(hub: FakeHub, service: DownloadService
                                                        ) -> None:
    data = gguf_bytes(200_000, 30)
    hub.add_repo("acme/man", {"m-Q4_0.gguf": data, "config.json": b'{"x": 1}'})
    ok = JobSpec(kind="hf", repo="acme/man", files=["m-Q4_0.gguf", "config.json"],
                 file_sha256={"m-Q4_0.gguf": sha256(data), "config.json": sha256(b'{"x": 1}')})
    [job] = await service.run_until_complete([service.enqueue(ok)])
    assert job.state == "done", job.error
    bad = JobSpec(kind="hf", repo="acme/man", files=["config.json"],
                  file_sha256={"config.json": "1" * 64})
    [job] = await service.run_until_complete([service.enqueue(bad)])
    assert job.state == "failed" and "verification" in job.error
    lfs_bad = JobSpec(kind="hf", repo="acme/man", files=["m-Q4_0.gguf"],
                      file_sha256={"m-Q4_0.gguf": "2" * 64})
    [job] = await service.run_until_complete([service.enqueue(lfs_bad)])
    assert job.state == "failed" and "differs" in job.error


async def test_catalog_entries_hf_and_url(hub: FakeHub, dl_settings) -> None:
    svc = make_service(dl_settings)
    svc.catalog = Catalog(svc.inventory)
    try:
        data = gguf_bytes(300_000, 40)
        hub.add_repo("acme/cat", {"c-Q4_K_M.gguf": data, "c-Q8_0.gguf": gguf_bytes(10, 41)})
        entry = svc.catalog.add_hf("acme/cat", quant="Q4_K_M", entry_id="cat-q4")
        url_data = gguf_bytes(100_000, 42)
        url = hub.add_file("cat-url.gguf", url_data)
        url_entry = svc.catalog.add_url(url, sha256=sha256(url_data), entry_id="cat-url")
        ids = [svc.enqueue(JobSpec(kind="catalog", catalog_id=entry.id)),
               svc.enqueue(JobSpec(kind="catalog", catalog_id=url_entry.id))]
        jobs = await svc.run_until_complete(ids)
        assert [j.state for j in jobs] == ["done", "done"], [j.error for j in jobs]
        assert [f.path for f in jobs[0].files] == ["c-Q4_K_M.gguf"]
        model = svc.inventory.get_model(jobs[0].model_id)
        assert model.catalog_id == "cat-q4" and model.source == "catalog"
        assert svc.inventory.get_model(jobs[1].model_id).catalog_id == "cat-url"
    finally:
        await svc.stop()
        svc.db.close()


async def test_network_fs_warning_reaches_events_and_the_cli(hub: FakeHub, service, dl_settings,
                                                            monkeypatch) -> None:
    """A models dir on NFS does not stop the pull, but the user is told (once per job) in the
    events the dashboard and `modeldeck pull` show, not only in the log."""
    from tui.cli import download_cmds
    from tui.download import service as service_module

    warning = "models is on nfs4: file locks may not work across machines"
    monkeypatch.setattr(service_module, "network_fs_warning", lambda root: warning)
    data = gguf_bytes(300_000, 77)
    url = hub.add_file("nfs.bin", data)
    job_id = service.enqueue(JobSpec(kind="url", url=url, sha256=sha256(data)))

    class Recorder(download_cmds._Renderer):
        def __init__(self) -> None:
            self.events: list = []
            self.notes: list[str] = []

        def update(self, event) -> None:
            self.events.append(event)

        def note(self, text: str) -> None:
            self.notes.append(text)

    rec = Recorder()
    [job] = await download_cmds._run(service, [job_id], rec)
    assert job.state == "done", job.error
    assert any(e.warning == warning for e in rec.events)
    assert rec.notes == [f"warning: {job.name}: {warning}"]
