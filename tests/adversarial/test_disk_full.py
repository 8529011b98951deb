"""A full disk is reported as a full disk: once, one line, with the path and the bytes still
needed (``unknown`` for a file of unknown size, never negative); the partial keeps its good
bytes and a retry after freeing space resumes from them. On a real, small tmpfs where this
sandbox allows mounting one, and with each errno injected on the write path of both body
paths."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tui.download import JobSpec, engine, rawfetch
from tui.download import service as service_mod
from tui.download.service import DownloadService

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes, make_service
from tests.support.checks import assert_no_control_chars, assert_one_line_error, run_modeldeck

KiB, MiB = 1 << 10, 1 << 20


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted for this test (skipped, saying why, where mounting fails)."""
    where = tmp_path / "small"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real tmpfs needs root and mount(8); the injected-errno tests cover "
                    "the write path instead")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()[:120]}); the "
                    "injected-errno tests cover the write path instead")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture(params=["raw", "httpx"])
def body_path(request, monkeypatch) -> str:
    if request.param == "httpx":
        monkeypatch.setenv(rawfetch.DISABLE_ENV, "1")
    return request.param


@pytest.fixture
def small_pieces(monkeypatch) -> None:
    monkeypatch.setattr(engine, "MIN_SEGMENT", 256 * KiB)
    monkeypatch.setattr(service_mod, "SMALL_FILE", 512 * KiB)


@pytest.fixture
def no_fallocate(monkeypatch) -> None:
    """A file system without fallocate (ZFS, some network file systems): the .part is only
    truncated to size, so space runs out while writing, not when reserving."""
    monkeypatch.setattr(engine, "preallocate", lambda fd, size: os.ftruncate(fd, size))


@pytest.fixture
def space_looks_free(monkeypatch) -> None:
    """The preflight check passes (space taken by someone else after it ran)."""

    class Plenty:
        free = 1 << 40

    monkeypatch.setattr(service_mod, "_disk_usage", lambda path: Plenty())


def _service(dl_settings, models: Path) -> DownloadService:
    import dataclasses

    return make_service(dataclasses.replace(dl_settings, models_dir=models))


async def _pull(service: DownloadService, spec: JobSpec):
    [job] = await service.run_until_complete([service.enqueue(spec)])
    return job


async def _retry(service: DownloadService, job_id: str):
    service.retry(job_id)
    [job] = await service.run_until_complete([job_id])
    return job


def assert_disk_full(job, part: Path, *, needed: str | None = None) -> int:
    """One line, "disk full" once, the path, the bytes still needed (not negative)."""
    assert job.state == "failed", job.error
    error = job.error
    assert "\n" not in error and "Traceback" not in error
    assert_no_control_chars(error)
    assert error.count("disk full") == 1, error
    assert str(part) in error, error
    assert "-" not in error.split("still needed")[0].rsplit(":", 1)[-1], error
    m = re.search(r"\((\d+) bytes\) still needed", error)
    if needed == "unknown":
        assert "unknown bytes still needed" in error, error
        return -1
    assert m, error
    return int(m.group(1))


def assert_good_prefix(job, part: Path, data: bytes) -> int:
    """Every byte the partial counts as done is the file's; returns how many."""
    [jf] = job.files
    content = part.read_bytes()
    done = 0
    for start, _end, got in jf.segments or []:
        assert content[start:start + got] == data[start:start + got]
        done += got
    return done


# -- a real small tmpfs ------------------------------------------------------------------------


async def test_tmpfs_fills_up_while_writing_a_known_size(
        hub: FakeHub, dl_settings, small_fs, body_path, small_pieces, no_fallocate,
        space_looks_free) -> None:
    models = small_fs / "models"
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (4 * MiB))
    data = gguf_bytes(6 * MiB, 1)
    url = hub.add_file("big.gguf", data)
    service = _service(dl_settings, models)
    try:
        job = await _pull(service, JobSpec(kind="url", url=url))
        part = models / "direct" / "big.gguf.part"
        needed = assert_disk_full(job, part)
        kept = assert_good_prefix(job, part, data)
        assert 0 < kept < len(data) and needed == len(data) - kept
        filler.unlink()
        served = hub.bytes_served("big.gguf")
        job = await _retry(service, job.id)
        assert job.state == "done", job.error
        assert (models / "direct" / "big.gguf").read_bytes() == data
        assert hub.bytes_served("big.gguf") - served <= len(data) - kept + 4 * 256 * KiB
    finally:
        await service.stop()
        service.db.close()


async def test_tmpfs_fills_up_with_a_file_of_unknown_size(
        hub: FakeHub, dl_settings, small_fs, body_path) -> None:
    models = small_fs / "models"
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (5 * MiB))
    data = gguf_bytes(5 * MiB, 2)
    url = hub.add_file("nolen.gguf", data)
    hub.add_fault("nolen.gguf", "no_length", times=None, methods=("GET", "HEAD"))
    service = _service(dl_settings, models)
    try:
        job = await _pull(service, JobSpec(kind="url", url=url))
        part = models / "direct" / "nolen.gguf.part"
        assert_disk_full(job, part, needed="unknown")
        kept = assert_good_prefix(job, part, data)
        assert kept > 0
        filler.unlink()
        job = await _retry(service, job.id)
        assert job.state == "done", job.error
        assert (models / "direct" / "nolen.gguf").read_bytes() == data
        gets = hub.requests_for("nolen.gguf", "GET")
        assert gets[-1].headers.get("Range") == f"bytes={kept}-"  # resumed, not restarted
    finally:
        await service.stop()
        service.db.close()


async def test_tmpfs_too_small_to_reserve_the_file(hub: FakeHub, dl_settings, small_fs,
                                                   space_looks_free) -> None:
    models = small_fs / "models"
    data = gguf_bytes(9 * MiB, 3)
    url = hub.add_file("huge.gguf", data)
    service = _service(dl_settings, models)
    try:
        job = await _pull(service, JobSpec(kind="url", url=url))
        part = models / "direct" / "huge.gguf.part"
        assert "reserving space" in job.error
        assert assert_disk_full(job, part) == len(data)
    finally:
        await service.stop()
        service.db.close()


def test_cli_reports_a_full_disk_in_one_line(hub: FakeHub, tmp_path, small_fs) -> None:
    (small_fs / "filler").write_bytes(b"\0" * (6 * MiB))
    url = hub.add_file("cli.gguf", gguf_bytes(4 * MiB, 4))
    hub.add_fault("cli.gguf", "no_length", times=None, methods=("GET", "HEAD"))
    proc = run_modeldeck("pull", url, "--json", env={
        "MODELDECK_MODELS_DIR": str(small_fs / "models"),
        "MODELDECK_STATE_DIR": str(tmp_path / "state"), "MODELDECK_SCAN_HF_CACHE": "0"})
    err = assert_one_line_error(proc, "disk full", "unknown bytes still needed",
                                str(small_fs / "models" / "direct" / "cli.gguf.part"))
    assert err.lower().count("disk full") == 1
    assert (small_fs / "models" / "direct" / "cli.gguf.part").stat().st_size > 0


# -- injected errors on the write path ---------------------------------------------------------


def _failing_pwrite(after: int, how: str):
    """``engine.pwrite`` that fails once ``after`` bytes were written: raising ``how``'s
    errno, or writing half (``short``) or nothing (``zero``)."""
    real = engine.pwrite
    written = 0

    def pwrite(fd: int, data, offset: int) -> int:
        nonlocal written
        if written >= after:
            if how == "short":
                n = real(fd, memoryview(data)[:len(data) // 2], offset)
                written += n
                return n
            if how == "zero":
                return 0
            raise OSError(getattr(errno, how), os.strerror(getattr(errno, how)))
        n = real(fd, data, offset)
        written += n
        return n

    return pwrite


@pytest.mark.parametrize("how", ["ENOSPC", "EDQUOT", "EFBIG", "short", "zero"])
async def test_each_kind_of_full_disk_is_reported_as_such(
        hub: FakeHub, dl_settings, body_path, small_pieces, monkeypatch, how) -> None:
    data = gguf_bytes(2 * MiB, 5)
    url = hub.add_file("inj.gguf", data)
    service = make_service(dl_settings)
    real = engine.pwrite
    monkeypatch.setattr(engine, "pwrite", _failing_pwrite(768 * KiB, how))
    try:
        job = await _pull(service, JobSpec(kind="url", url=url))
        part = dl_settings.models_dir / "direct" / "inj.gguf.part"
        needed = assert_disk_full(job, part)
        kept = assert_good_prefix(job, part, data)
        assert kept > 0 and needed == len(data) - kept
        if how == "EDQUOT":
            assert "quota" in job.error
        monkeypatch.setattr(engine, "pwrite", real)
        job = await _retry(service, job.id)
        assert job.state == "done", job.error
        assert (dl_settings.models_dir / "direct" / "inj.gguf").read_bytes() == data
    finally:
        await service.stop()
        service.db.close()


async def test_an_io_error_is_one_line_and_keeps_the_partial(
        hub: FakeHub, dl_settings, body_path, small_pieces, monkeypatch) -> None:
    data = gguf_bytes(2 * MiB, 6)
    url = hub.add_file("eio.gguf", data)
    service = make_service(dl_settings)
    monkeypatch.setattr(engine, "pwrite", _failing_pwrite(512 * KiB, "EIO"))
    try:
        job = await _pull(service, JobSpec(kind="url", url=url))
        part = dl_settings.models_dir / "direct" / "eio.gguf.part"
        assert job.state == "failed" and "\n" not in job.error
        assert f"error writing {part}" in job.error and "disk full" not in job.error
        assert assert_good_prefix(job, part, data) > 0
    finally:
        await service.stop()
        service.db.close()


async def test_a_failed_fsync_is_disk_full_and_the_partial_is_not_trusted(
        hub: FakeHub, dl_settings, monkeypatch) -> None:
    """ENOSPC from fsync means written pages may be lost: the error says disk full, and the
    retry fetches the file again instead of trusting the partial's counters."""
    data = gguf_bytes(1 * MiB, 7)
    url = hub.add_file("sync.gguf", data)
    service = make_service(dl_settings)
    real = os.fsync
    failed: list[int] = []

    def fsync(fd: int) -> None:
        if not failed and os.readlink(f"/proc/self/fd/{fd}").endswith(".part"):
            failed.append(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(engine.os, "fsync", fsync)
    try:
        job = await _pull(service, JobSpec(kind="url", url=url))
        part = dl_settings.models_dir / "direct" / "sync.gguf.part"
        assert failed and assert_disk_full(job, part) > 0
        assert job.files[0].segments is None and job.done_bytes == 0
        served = hub.bytes_served("sync.gguf")
        job = await _retry(service, job.id)
        assert job.state == "done", job.error
        assert hub.bytes_served("sync.gguf") - served == len(data)
        assert (dl_settings.models_dir / "direct" / "sync.gguf").read_bytes() == data
    finally:
        await service.stop()
        service.db.close()
