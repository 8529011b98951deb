"""Every injected fault ends in a correct file or a clear, fast failure."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from tui.download import JobSpec
from tui.download import service as download_service
from tui.download.ratelimit import TokenBucket
from tui.download.service import DownloadService

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes, part_files, sha256
from tests.support.clock import FakeClock

SIZE = 5 << 20  # > 1 segment at 4 connections


async def _pull_url(service: DownloadService, url: str, **kw) -> object:
    [job] = await service.run_until_complete([service.enqueue(JobSpec(kind="url", url=url, **kw))])
    return job


def _dest(settings, name: str):
    return settings.models_dir / "direct" / name


async def test_server_ignoring_range_falls_back_to_one_stream(
    hub: FakeHub, service: DownloadService, dl_settings
) -> None:
    data = gguf_bytes(SIZE, 1)
    url = hub.add_file("nr.bin", data)
    hub.add_fault("nr.bin", "ignore_range", times=None)
    job = await _pull_url(service, url)
    assert job.state == "done", job.error
    assert _dest(dl_settings, "nr.bin").read_bytes() == data
    # one wasted full body at most, then a single stream
    assert hub.bytes_served("nr.bin") <= 2 * len(data) + 4 * (1 << 20)


async def test_wrong_content_range_start_is_retried(hub: FakeHub, service: DownloadService,
                                                    dl_settings) -> None:
    data = gguf_bytes(SIZE, 2)
    url = hub.add_file("cr.bin", data)
    hub.add_fault("cr.bin", "bad_content_range", times=2)
    job = await _pull_url(service, url, sha256=sha256(data))
    assert job.state == "done", job.error
    assert _dest(dl_settings, "cr.bin").read_bytes() == data


async def test_416_restarts_from_zero(hub: FakeHub, service: DownloadService, dl_settings
                                      ) -> None:
    data = gguf_bytes(SIZE, 3)
    url = hub.add_file("r416.bin", data)
    hub.add_fault("r416.bin", "status", times=1, status=416,
                  headers={"Content-Range": f"bytes */{len(data)}"})
    job = await _pull_url(service, url)
    assert job.state == "done", job.error
    assert _dest(dl_settings, "r416.bin").read_bytes() == data


async def test_content_changed_mid_download_restarts_with_new_etag(
    hub: FakeHub, service: DownloadService, dl_settings
) -> None:
    old, new = gguf_bytes(SIZE, 4), gguf_bytes(SIZE, 5)
    url = hub.add_file("ch.bin", old)
    # after the HEAD, the first GET finds new content: If-Range no longer matches -> 200
    hub.add_fault("ch.bin", "change", times=1, data=new)
    job = await _pull_url(service, url)
    assert job.state == "done", job.error
    assert _dest(dl_settings, "ch.bin").read_bytes() == new


async def test_dropped_connections_are_retried(hub: FakeHub, service: DownloadService,
                                               dl_settings) -> None:
    data = gguf_bytes(SIZE, 6)
    url = hub.add_file("drop.bin", data)
    hub.add_fault("drop.bin", "drop_after", times=3, nbytes=200_000)
    job = await _pull_url(service, url, sha256=sha256(data))
    assert job.state == "done", job.error
    assert _dest(dl_settings, "drop.bin").read_bytes() == data
    assert hub.bytes_served("drop.bin") < 1.2 * len(data)


async def test_persistent_drops_give_up_after_the_budget_without_progress(
    hub: FakeHub, service: DownloadService
) -> None:
    """Retries back off and go on until ``give_up_after`` has passed without a byte (on an
    injected clock: the backoff sleeps advance it), then one line; not after N tries."""
    clock = FakeClock()
    service.policy.clock, service.policy.sleep = clock, clock.async_sleep
    service.policy.base_delay, service.policy.max_delay = 1.0, 20.0
    service.policy.give_up_after = 120.0
    url = hub.add_file("dead.bin", gguf_bytes(100_000, 7))
    hub.add_fault("dead.bin", "drop_after", times=None, nbytes=0)
    job = await _pull_url(service, url)
    assert job.state == "failed" and "giving up after" in job.error
    assert "without progress" in job.error and "\n" not in job.error
    gets = hub.requests_for("dead.bin", "GET")
    assert len(gets) == len(clock.sleeps) + 1 > 7  # more than the old fixed 7 tries
    assert 120 - 20 * 1.25 <= clock.elapsed <= 120


async def test_stalled_connection_is_restarted(hub: FakeHub, service: DownloadService,
                                               dl_settings) -> None:
    data = gguf_bytes(1 << 20, 8)
    url = hub.add_file("stall.bin", data)
    hub.add_fault("stall.bin", "stall", times=1, seconds=1.5)
    states: list[str] = []
    service.subscribe(lambda e: states.append(e.state))
    start = time.monotonic()
    job = await _pull_url(service, url)
    assert job.state == "done", job.error
    assert time.monotonic() - start < 2.5  # stall_timeout is 0.5 s
    assert "stalled" in states
    assert _dest(dl_settings, "stall.bin").read_bytes() == data


@pytest.mark.parametrize("status", [429, 503])
async def test_rate_limit_and_unavailable_honour_retry_after(
    hub: FakeHub, service: DownloadService, dl_settings, status: int
) -> None:
    data = gguf_bytes(200_000, 9)
    url = hub.add_file("ra.bin", data)
    hub.add_fault("ra.bin", "status", times=2, status=status, headers={"Retry-After": "0.3"})
    start = time.monotonic()
    job = await _pull_url(service, url)
    assert job.state == "done", job.error
    assert time.monotonic() - start >= 0.55
    assert _dest(dl_settings, "ra.bin").read_bytes() == data


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_client_errors_fail_at_once(hub: FakeHub, service: DownloadService, dl_settings,
                                          status: int) -> None:
    url = hub.add_file("denied.bin", b"x" * 1000)
    hub.add_fault("denied.bin", "status", times=None, status=status, methods=("GET", "HEAD"))
    job = await _pull_url(service, url)
    assert job.state == "failed"
    assert str(status) in job.error
    assert len(hub.requests_for("denied.bin")) <= 2  # HEAD (+ one GET at most)
    assert part_files(dl_settings.models_dir) == []


async def test_redirect_to_other_host_does_not_forward_token(
    hub: FakeHub, service: DownloadService, dl_settings, monkeypatch, caplog
) -> None:
    token = "hf_TopSecretTokenValue1234567890"
    monkeypatch.setenv("HF_TOKEN", token)
    caplog.set_level(logging.DEBUG)
    cdn = FakeHub(share_with=hub).start()
    try:
        data = gguf_bytes(SIZE, 10)
        hub.add_repo("acme/redir", {"r-Q4_K_M.gguf": data})
        hub.add_fault("/acme/redir/resolve/", "redirect", times=None, methods=("GET", "HEAD"),
                      to=cdn.url)
        [job] = await service.run_until_complete(
            [service.enqueue(JobSpec(kind="hf", repo="acme/redir"))])
        assert job.state == "done", job.error
        origin_reqs = hub.requests_for("/resolve/")
        cdn_reqs = cdn.requests_for("/resolve/")
        assert origin_reqs and cdn_reqs
        assert all(r.headers.get("Authorization") == f"Bearer {token}" for r in origin_reqs)
        assert all("Authorization" not in r.headers for r in cdn_reqs)
        assert (dl_settings.models_dir / "acme/redir/r-Q4_K_M.gguf").read_bytes() == data
        assert token not in caplog.text
    finally:
        cdn.stop()


class _CountingBucket(TokenBucket):
    """A :class:`TokenBucket` that counts the bytes asked of it (both consume paths)."""

    def __init__(self, rate: int) -> None:
        super().__init__(rate)
        self.asked = 0
        self._count = threading.Lock()

    async def consume(self, amount: int) -> None:
        with self._count:
            self.asked += amount
        await super().consume(amount)

    def consume_blocking(self, amount: int, stop: Callable[[], bool] = lambda: False) -> None:
        with self._count:
            self.asked += amount
        super().consume_blocking(amount, stop)


async def test_bandwidth_cap(hub: FakeHub, service: DownloadService, dl_settings,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Every body byte of a ``limit_rate`` job is charged to a bucket of that rate. No wall
    time: the bucket's arithmetic is checked on an injected clock in the unit tier
    (``test_download_units.py::test_token_bucket_*``)."""
    made: list[_CountingBucket] = []

    def bucket(rate: int) -> _CountingBucket:
        made.append(_CountingBucket(rate))
        return made[-1]

    monkeypatch.setattr(download_service, "TokenBucket", bucket)
    data = gguf_bytes(600_000, 11)
    url = hub.add_file("cap.bin", data)
    job = await _pull_url(service, url, limit_rate=500_000)
    assert job.state == "done", job.error
    assert _dest(dl_settings, "cap.bin").read_bytes() == data
    [cap] = made
    assert cap.rate == 500_000
    assert cap.asked >= len(data)  # a retried piece is charged again


async def test_slow_server_still_completes(hub: FakeHub, service: DownloadService) -> None:
    data = gguf_bytes(500_000, 12)
    url = hub.add_file("slowish.bin", data)
    hub.add_fault("slowish.bin", "slow", times=None, rate=2_000_000)
    job = await _pull_url(service, url, sha256=sha256(data))
    assert job.state == "done", job.error
