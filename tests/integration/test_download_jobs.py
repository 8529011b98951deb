"""Jobs: pause/resume/cancel/retry, the queue limit, crash reconciliation, disk full, locks,
hostile names, gated repos and token hygiene."""

from __future__ import annotations

import asyncio
import errno
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tui.download import JobSpec, engine
from tui.download import service as service_mod
from tui.download.jobs import JobRecord
from tui.download.service import DownloadService

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes, make_service, part_files, sha256


async def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def _pause_midway(service: DownloadService, hub: FakeHub, name: str, job_id: str,
                        size: int, timeout: float = 20.0) -> JobRecord:
    """Run the job until a third of ``size`` is served, pause it; the paused record."""
    runner = asyncio.create_task(service.run_until_complete([job_id]))
    await _wait_for(lambda: hub.bytes_served(name) > size // 3, timeout=timeout)
    job = await service.pause(job_id)
    await runner
    return job


async def test_pause_resume_keeps_bytes(hub: FakeHub, service: DownloadService, dl_settings
                                        ) -> None:
    data = gguf_bytes(4 << 20, 1)
    url = hub.add_file("p.bin", data)
    hub.add_fault("p.bin", "slow", times=None, rate=1 << 20)
    job_id = service.enqueue(JobSpec(kind="url", url=url, sha256=sha256(data)))
    job = await _pause_midway(service, hub, "p.bin", job_id, len(data), timeout=30)
    assert job.state == service.get_job(job_id).state == "paused"
    assert 0 < job.done_bytes < len(data)
    assert part_files(dl_settings.models_dir), "pause keeps the partial"
    assert job.files[0].segments and job.files[0].etag == f'"{sha256(data)}"'
    hub.clear_faults()
    service.resume(job_id)
    [job] = await service.run_until_complete([job_id])
    assert job.state == "done", job.error
    assert hub.bytes_served("p.bin") < 1.2 * len(data)
    gets = hub.requests_for("p.bin", "GET")
    assert any(r.headers.get("If-Range") == f'"{sha256(data)}"' for r in gets)
    assert Path(job.files[0].dest).read_bytes() == data


async def test_pause_resume_without_content_length(hub: FakeHub, service: DownloadService,
                                                  dl_settings) -> None:
    """A server that never says the size (chunked bodies): the partial is still resumed from
    its bytes under If-Range with the strong ETag, not thrown away."""
    data = gguf_bytes(4 << 20, 3)
    url = hub.add_file("nl.bin", data)
    hub.add_fault("nl.bin", "no_length", times=None, methods=("GET", "HEAD"))
    hub.add_fault("nl.bin", "slow", times=None, rate=1 << 20)
    job_id = service.enqueue(JobSpec(kind="url", url=url, sha256=sha256(data)))
    job = await _pause_midway(service, hub, "nl.bin", job_id, len(data), timeout=30)
    assert job.files[0].size is None and 0 < job.done_bytes < len(data)
    kept = job.done_bytes
    hub.clear_faults()
    hub.reset_counters()
    hub.add_fault("nl.bin", "no_length", times=None, methods=("GET", "HEAD"))
    service.resume(job_id)
    [job] = await service.run_until_complete([job_id])
    assert job.state == "done", job.error
    # Nothing kept was asked for again: every GET after the resume starts at the kept bytes
    # (a body abandoned on the threaded path, which does not decode chunked bodies, counts at
    # the server as sent, so the check is on what was asked and what the last answer carried).
    gets = hub.requests_for("nl.bin", "GET")
    assert gets and all(r.headers.get("Range") == f"bytes={kept}-" for r in gets)
    assert all(r.headers.get("If-Range") == f'"{sha256(data)}"' for r in gets)
    assert gets[-1].bytes_sent == len(data) - kept
    assert Path(job.files[0].dest).read_bytes() == data


async def test_cancel_deletes_partial_and_retry_starts_over(
    hub: FakeHub, service: DownloadService, dl_settings
) -> None:
    data = gguf_bytes(3 << 20, 2)
    url = hub.add_file("c.bin", data)
    hub.add_fault("c.bin", "slow", times=None, rate=1 << 20)
    job_id = service.enqueue(JobSpec(kind="url", url=url))
    runner = asyncio.create_task(service.run_until_complete([job_id]))
    await _wait_for(lambda: hub.bytes_served("c.bin") > 0)
    job = await service.cancel(job_id)
    await runner
    assert job.state == "cancelled"
    assert part_files(dl_settings.models_dir) == []
    hub.clear_faults()
    service.retry(job_id)
    [job] = await service.run_until_complete([job_id])
    assert job.state == "done", job.error
    assert Path(job.files[0].dest).read_bytes() == data


async def test_failed_job_retry_resumes_partial(hub: FakeHub, service: DownloadService) -> None:
    data = gguf_bytes(2 << 20, 3)
    url = hub.add_file("f.bin", data)
    hub.add_fault("f.bin", "drop_after", times=1, nbytes=300_000)
    hub.add_fault("f.bin", "status", times=None, skip=1, status=500)
    service.policy.max_tries = 2
    job_id = service.enqueue(JobSpec(kind="url", url=url))
    [job] = await service.run_until_complete([job_id])
    assert job.state == "failed" and "giving up" in job.error
    assert job.done_bytes > 0
    hub.clear_faults()
    served = hub.bytes_served("f.bin")
    service.retry(job_id)
    [job] = await service.run_until_complete([job_id])
    assert job.state == "done", job.error
    assert hub.bytes_served("f.bin") - served < len(data)


async def test_queue_runs_at_most_concurrent_downloads(hub: FakeHub, service: DownloadService
                                                       ) -> None:
    running: set[str] = set()
    peak = 0

    def watch(event) -> None:
        nonlocal peak
        if event.state in ("connecting", "downloading", "stalled", "verifying"):
            running.add(event.job_id)
        else:
            running.discard(event.job_id)
        peak = max(peak, len(running))

    service.subscribe(watch)
    ids = []
    for i in range(5):
        url = hub.add_file(f"q{i}.bin", gguf_bytes(300_000, 10 + i))
        ids.append(service.enqueue(JobSpec(kind="url", url=url)))
    hub.add_fault("/files/q", "slow", times=None, rate=1_500_000)
    jobs = await service.run_until_complete(ids)
    assert all(j.state == "done" for j in jobs)
    assert peak == service.settings.concurrent_downloads == 2


async def test_start_resumes_interrupted_jobs(hub: FakeHub, dl_settings) -> None:
    data = gguf_bytes(3 << 20, 4)
    url = hub.add_file("s.bin", data)
    hub.add_fault("s.bin", "slow", times=None, rate=1 << 20)
    first = make_service(dl_settings)
    job_id = first.enqueue(JobSpec(kind="url", url=url))
    await first.start()
    await _wait_for(lambda: hub.bytes_served("s.bin") > len(data) // 3)
    await first.stop()  # like a shutdown: the job stays queued
    assert first.jobs.require(job_id).state == "queued"
    first.db.close()
    hub.clear_faults()
    second = make_service(dl_settings)
    try:
        await second.start()
        [job] = await second.run_until_complete([job_id])
        assert job.state == "done", job.error
        assert hub.bytes_served("s.bin") < 1.2 * len(data)
    finally:
        await second.stop()
        second.db.close()


async def test_crash_between_rename_and_commit_is_reconciled(hub: FakeHub, dl_settings) -> None:
    data = gguf_bytes(1 << 20, 5)
    hub.add_repo("acme/crash", {"c-Q4_0.gguf": data})
    svc = make_service(dl_settings)
    job_id = svc.enqueue(JobSpec(kind="hf", repo="acme/crash"))
    [job] = await svc.run_until_complete([job_id])
    assert job.state == "done"
    # Make the database look like the process died right after os.replace.
    with svc.db.write() as tx:
        tx.execute("UPDATE jobs SET state = 'verifying', model_id = NULL WHERE id = ?", (job_id,))
        tx.execute("UPDATE job_files SET state = 'downloading' WHERE job_id = ?", (job_id,))
        tx.execute("DELETE FROM models")
    await svc.stop()
    svc.db.close()
    hub.reset_counters()
    again = make_service(dl_settings)
    try:
        await again.start()
        [job] = await again.run_until_complete([job_id])
        assert job.state == "done" and job.model_id
        assert hub.bytes_served() == 0
        assert again.inventory.get_model(job.model_id).files[0].sha256 == sha256(data)
    finally:
        await again.stop()
        again.db.close()


async def test_disk_full_mid_download_keeps_partial_and_resumes(
    hub: FakeHub, service: DownloadService, dl_settings, monkeypatch
) -> None:
    data = gguf_bytes(5 << 20, 6)
    url = hub.add_file("full.bin", data)
    written = 0
    real = engine.pwrite

    def full_disk(fd, chunk, offset):
        nonlocal written
        if written > 2 << 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        written += len(chunk)
        return real(fd, chunk, offset)

    monkeypatch.setattr(engine, "pwrite", full_disk)
    [job] = await service.run_until_complete([service.enqueue(JobSpec(kind="url", url=url))])
    assert job.state == "failed"
    part = dl_settings.models_dir / "direct" / "full.bin.part"
    assert "disk full" in job.error and str(part) in job.error and "bytes" in job.error
    assert part.exists() and job.done_bytes > 0
    monkeypatch.setattr(engine, "pwrite", real)
    served = hub.bytes_served("full.bin")
    service.retry(job.id)
    [job] = await service.run_until_complete([job.id])
    assert job.state == "done", job.error
    assert hub.bytes_served("full.bin") - served < len(data)
    assert Path(job.files[0].dest).read_bytes() == data


async def test_preflight_refuses_without_space(hub: FakeHub, service: DownloadService,
                                               dl_settings, monkeypatch) -> None:
    class Usage:
        free = 50 << 20

    monkeypatch.setattr(service_mod, "_disk_usage", lambda path: Usage())
    hub.add_repo("acme/huge", {"h-Q4_0.gguf": gguf_bytes(1 << 20, 7)})
    [job] = await service.run_until_complete(
        [service.enqueue(JobSpec(kind="hf", repo="acme/huge"))])
    assert job.state == "failed"
    assert "not enough space" in job.error and str(dl_settings.models_dir) in job.error
    assert "bytes" in job.error
    assert hub.requests_for("/resolve/") == []


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "C:\\x", "\\\\host\\share",
                                  "a\x00b", "ok/../../x"])
async def test_hostile_names_rejected_before_disk(hub: FakeHub, service: DownloadService,
                                                  dl_settings, tmp_path, name: str) -> None:
    repo = hub.add_repo("acme/evil", {"fine-Q4_0.gguf": gguf_bytes(100, 8)})
    repo.extra_listing = [{"rfilename": name, "size": 10, "blobId": "0" * 40}]
    [job] = await service.run_until_complete(
        [service.enqueue(JobSpec(kind="hf", repo="acme/evil", include=["*"]))])
    assert job.state == "failed"
    assert "remote file name" in job.error
    assert hub.requests_for("/resolve/") == []
    assert not dl_settings.models_dir.exists() or not any(
        p.is_file() for p in dl_settings.models_dir.rglob("*"))
    assert not (tmp_path.parent / "x").exists()


async def test_second_process_on_same_file_fails_clearly(
    hub: FakeHub, service: DownloadService, dl_settings
) -> None:
    url = hub.add_file("locked.bin", gguf_bytes(1000, 9))
    dest = dl_settings.models_dir / "direct" / "locked.bin"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from tui.download.preflight import DestLock
            DestLock(Path({str(dest)!r})).acquire()
            print("locked", flush=True)
            time.sleep(30)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        [job] = await service.run_until_complete(
            [service.enqueue(JobSpec(kind="url", url=url))])
        assert job.state == "failed"
        assert f"already being downloaded by pid {holder.pid}" in job.error
        assert not dest.exists()
    finally:
        holder.kill()
        holder.wait()
    service.retry(job.id)
    [job] = await service.run_until_complete([job.id])
    assert job.state == "done"


async def test_gated_repo_message_and_token_hygiene(
    hub: FakeHub, service: DownloadService, dl_settings, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    good = "hf_GoodTokenGoodTokenGoodToken42"
    data = gguf_bytes(1 << 20, 11)
    hub.add_repo("acme/gated", {"g-Q4_K_M.gguf": data}, gated=True, tokens={good})

    monkeypatch.setenv("HF_TOKEN", "hf_WrongTokenWrongTokenWrong99")
    [job] = await service.run_until_complete(
        [service.enqueue(JobSpec(kind="hf", repo="acme/gated"))])
    assert job.state == "failed"
    assert "https://huggingface.co/acme/gated" in job.error
    assert "HF_TOKEN" in job.error and "hf auth login" in job.error
    assert "hf_Wrong" not in job.error

    monkeypatch.setenv("HF_TOKEN", good)
    hub.reset_counters()
    [job] = await service.run_until_complete(
        [service.enqueue(JobSpec(kind="hf", repo="acme/gated"))])
    assert job.state == "done", job.error
    assert all(r.headers.get("Authorization") == f"Bearer {good}"
               for r in hub.requests_for("/resolve/"))
    assert good not in caplog.text and "hf_Wrong" not in caplog.text
    service.db.close()
    for f in dl_settings.state_dir.rglob("*"):
        if f.is_file():
            raw = f.read_bytes()
            assert good.encode() not in raw and b"hf_Wrong" not in raw, f


async def test_etag_changed_between_attempts_restarts_from_zero(
    hub: FakeHub, service: DownloadService
) -> None:
    old, new = gguf_bytes(3 << 20, 20), gguf_bytes(3 << 20, 21)
    url = hub.add_file("e.bin", old)
    hub.add_fault("e.bin", "slow", times=None, rate=1 << 20)
    job_id = service.enqueue(JobSpec(kind="url", url=url))
    await _pause_midway(service, hub, "e.bin", job_id, len(old))
    hub.clear_faults()
    hub.set_content("e.bin", new)
    hub.reset_counters()
    service.resume(job_id)
    [job] = await service.run_until_complete([job_id])
    assert job.state == "done", job.error
    assert Path(job.files[0].dest).read_bytes() == new
    assert hub.bytes_served("e.bin") == len(new)  # nothing of the old partial was kept
    assert all("If-Range" not in r.headers or r.headers["If-Range"] == f'"{sha256(new)}"'
               for r in hub.requests_for("e.bin", "GET"))


async def test_weak_etag_is_not_trusted_for_resume(hub: FakeHub, service: DownloadService
                                                   ) -> None:
    data = gguf_bytes(3 << 20, 22)
    url = hub.add_file("weak.bin", data, etag_style="weak")
    hub.add_fault("weak.bin", "slow", times=None, rate=1 << 20)
    job_id = service.enqueue(JobSpec(kind="url", url=url))
    await _pause_midway(service, hub, "weak.bin", job_id, len(data))
    hub.clear_faults()
    hub.reset_counters()
    service.resume(job_id)
    [job] = await service.run_until_complete([job_id])
    assert job.state == "done", job.error
    assert hub.bytes_served("weak.bin") == len(data)
    assert all("If-Range" not in r.headers for r in hub.requests_for("weak.bin"))
    assert Path(job.files[0].dest).read_bytes() == data


async def test_pause_from_another_process_via_control_request(
    hub: FakeHub, service: DownloadService, dl_settings
) -> None:
    data = gguf_bytes(3 << 20, 23)
    url = hub.add_file("x.bin", data)
    hub.add_fault("x.bin", "slow", times=None, rate=1 << 20)
    job_id = service.enqueue(JobSpec(kind="url", url=url))
    runner = asyncio.create_task(service.run_until_complete([job_id]))
    await _wait_for(lambda: hub.bytes_served("x.bin") > 0)
    other = make_service(dl_settings)  # e.g. `modeldeck jobs pause` in another pane
    try:
        job = await other.pause(job_id)
        assert job.state != "paused"  # it only asked the owner
        [final] = await asyncio.wait_for(runner, 5)
        assert final.state == "paused" and final.done_bytes > 0
        other.resume(job_id)
        hub.clear_faults()
        [final] = await other.run_until_complete([job_id])
        assert final.state == "done", final.error
        assert Path(final.files[0].dest).read_bytes() == data
    finally:
        await other.stop()
        other.db.close()
