"""Unit tests of the download building blocks (no network)."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
from pathlib import Path

import pytest

from tui.download import verify
from tui.download.engine import MIN_SEGMENT, is_strong, plan_pieces
from tui.download.errors import DiskFullError, redact
from tui.download.http import RetryPolicy, parse_retry_after
from tui.download.preflight import DestLock, check_free_space, fs_type, network_fs_warning
from tui.download.progress import EventThrottle, SpeedMeter
from tui.download.ratelimit import TokenBucket
from tui.download.sources import JobSpec, parse_source
from tui.download.verify import PrefixHasher
from tui.errors import InvalidInputError

from tests.support.clock import FakeClock


def test_pieces_cover_the_file_in_order() -> None:
    for size, conns in [(1, 8), (MIN_SEGMENT * 2 - 1, 8), (2 << 30, 8), (123_456_789, 3)]:
        pieces = plan_pieces(size, conns)
        assert pieces[0][0] == 0 and pieces[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    assert plan_pieces(100 << 20, 1) == [[0, 100 << 20, 0]]
    assert plan_pieces(0, 8) == []
    assert len(plan_pieces(2 << 30, 8)) >= 8


def test_strong_etags() -> None:
    assert is_strong('"abc"') and not is_strong('W/"abc"') and not is_strong(None)
    assert not is_strong("abc")


@pytest.mark.parametrize("mode", ["mapped", "pread"])
def test_prefix_hasher_out_of_order(tmp_path: Path, monkeypatch, mode: str) -> None:
    """In-place (mmap, windows crossed many times) and pread paths give the same digests."""
    monkeypatch.setattr(verify, "MAP_WINDOW", 64 << 10)
    monkeypatch.setattr(verify, "READ_CHUNK", 40_000)
    preads = []
    real_pread = os.pread
    monkeypatch.setattr(verify.os, "pread", lambda *a: preads.append(a) or real_pread(*a))
    data = random.Random(1).randbytes(3_000_000)
    path = tmp_path / "f"
    path.write_bytes(b"\0" * len(data))
    fd = os.open(path, os.O_RDWR)
    try:
        hasher = PrefixHasher(fd, len(data), git_blob=True)
        if mode == "pread":
            hasher._use_map = False
        cuts = [0, 700_000, 1_500_000, 2_200_000, len(data)]
        for i in (3, 1, 0, 2):
            os.pwrite(fd, data[cuts[i]:cuts[i + 1]], cuts[i])
            hasher.mark(cuts[i], cuts[i + 1])
        sha, sha1 = hasher.finish()
    finally:
        os.close(fd)
    assert sha == hashlib.sha256(data).hexdigest()
    assert sha1 == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert (len(preads) == 0) == (mode == "mapped")


def test_prefix_hasher_on_a_truncated_file_fails_cleanly(tmp_path: Path, monkeypatch) -> None:
    """A .part truncated under the hasher (shorter than its window): no mapping past the end
    (that would be SIGBUS), the pread fallback reports the short read."""
    monkeypatch.setattr(verify, "MAP_WINDOW", 64 << 10)
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100_000)
    fd = os.open(path, os.O_RDONLY)
    try:
        hasher = PrefixHasher(fd, 200_000)
        hasher.mark(0, 200_000)
        with pytest.raises(OSError, match="short read at offset 100000"):
            hasher.finish()
    finally:
        os.close(fd)


def test_prefix_hasher_reports_missing_range(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    try:
        hasher = PrefixHasher(fd, 100)
        hasher.mark(0, 50)
        with pytest.raises(OSError, match="missing"):
            hasher.finish()
    finally:
        os.close(fd)


async def test_token_bucket_rate() -> None:
    """The limiter's arithmetic on an injected clock (no wall time): 2 MB at 1 MB/s with a
    250 kB burst waits exactly 1.75 s, in sleeps of at most one chunk's shortfall."""
    clock = FakeClock()
    bucket = TokenBucket(1_000_000, clock=clock, async_sleep=clock.async_sleep)
    assert bucket.capacity == 250_000
    for _ in range(20):
        await bucket.consume(100_000)
    assert clock.elapsed == pytest.approx(1.75, abs=1e-6)
    assert clock.sleeps and max(clock.sleeps) <= 0.1 + 1e-9
    unlimited = TokenBucket(0, clock=clock, async_sleep=clock.async_sleep)
    slept = len(clock.sleeps)
    await unlimited.consume(10**9)
    bucket.set_rate(0)
    await bucket.consume(10**9)
    assert len(clock.sleeps) == slept


def test_token_bucket_idle_time_refills_only_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1_000_000, clock=clock, sleep=clock.sleep)
    bucket.consume_blocking(250_000)  # the initial burst passes at once
    assert clock.sleeps == []
    clock.advance(3600)  # an hour idle refills a quarter second's worth, not an hour's
    bucket.consume_blocking(250_000)
    assert clock.sleeps == []
    bucket.consume_blocking(100_000)
    assert clock.elapsed - 3600 == pytest.approx(0.1, abs=1e-6)


def test_token_bucket_chunk_above_the_burst_is_paid_by_the_next_caller() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1_000_000, clock=clock, sleep=clock.sleep)
    bucket.consume_blocking(1_000_000)  # a full burst lets one big chunk through now...
    assert clock.sleeps == []
    bucket.consume_blocking(1, stop=lambda: True)  # (a stopped caller does not wait)
    assert clock.sleeps == []
    bucket.consume_blocking(1)  # ...and the 750 kB overdraft is waited for next time
    assert clock.elapsed == pytest.approx(0.750001, abs=1e-6)
    assert max(clock.sleeps) <= 0.1 + 1e-9


def test_token_bucket_set_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(8_000_000, clock=clock, sleep=clock.sleep)  # burst 2 MB
    bucket.set_rate(100_000)  # burst down to the 64 KiB floor; saved tokens trimmed to it
    assert bucket.capacity == 65536
    bucket.consume_blocking(65536)
    assert clock.sleeps == []
    bucket.consume_blocking(50_000)
    assert clock.elapsed == pytest.approx(0.5, abs=1e-6)


def test_speed_meter_and_throttle() -> None:
    meter = SpeedMeter(half_life=1.0)
    meter.update(0, now=0.0)
    for i in range(1, 21):
        meter.update(i * 100, now=i * 0.1)
    assert 900 < meter.speed < 1100
    throttle = EventThrottle(rate=10)
    allowed = sum(throttle.allow("downloading", now=i * 0.001) for i in range(1000))
    assert allowed <= 11
    assert throttle.allow("paused", now=1.0005)  # state changes always pass


def test_retry_policy_and_retry_after() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=8)
    assert 0.75 <= policy.delay(1) <= 1.25
    assert policy.delay(10) <= 8 * 1.25
    assert policy.delay(1, retry_after=3) == 3
    assert policy.delay(1, retry_after=999) == 999  # a rate-limit window is waited out
    assert policy.delay(1, retry_after=10 ** 6) == policy.max_retry_after
    assert parse_retry_after("2") == 2 and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0


def test_redact_tokens() -> None:
    text = "failed with hf_abcdEFGH1234567890 and Authorization: Bearer secret123"
    out = redact(text)
    assert "hf_abcd" not in out and "secret123" not in out


def test_free_space_message(tmp_path: Path) -> None:
    class Usage:
        free = 10

    with pytest.raises(DiskFullError) as info:
        check_free_space(tmp_path / "models", 5 << 30, disk_usage=lambda p: Usage())
    assert str(tmp_path / "models") in str(info.value) and "bytes" in str(info.value)
    check_free_space(tmp_path, 0, disk_usage=lambda p: Usage())


def test_fs_type_and_nfs_warning(tmp_path: Path, monkeypatch) -> None:
    assert fs_type(tmp_path) is not None
    from tui.download import preflight

    monkeypatch.setattr(preflight, "fs_type", lambda p: "nfs4")
    assert "nfs4" in network_fs_warning(tmp_path)


def test_dest_lock_conflict_names_pid(tmp_path: Path) -> None:
    first = DestLock(tmp_path / "m.gguf")
    first.acquire()
    with pytest.raises(Exception, match=f"pid {os.getpid()}"):
        DestLock(tmp_path / "m.gguf").acquire()
    first.release(remove=True)
    second = DestLock(tmp_path / "m.gguf")
    second.acquire()
    second.release(remove=True)


def test_parse_source() -> None:
    assert parse_source("https://x.org/a/b.gguf").kind == "url"
    spec = parse_source("acme/m:Q4_K_M")
    assert spec.kind == "hf" and spec.repo == "acme/m" and spec.quant == "Q4_K_M"
    assert parse_source("my-entry", is_catalog_id=lambda s: s == "my-entry").kind == "catalog"
    with pytest.raises(InvalidInputError):
        parse_source("nope")
    with pytest.raises(InvalidInputError):
        JobSpec(kind="url", url="ftp://x")
    with pytest.raises(InvalidInputError):
        JobSpec(kind="url", url="http://x/y", sha256="zz")
    spec = JobSpec(kind="hf", repo="a/b", include=["*.gguf"])
    assert JobSpec.from_json(spec.to_json()) == spec
