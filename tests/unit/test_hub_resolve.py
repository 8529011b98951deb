"""The pure parts of the Hub flow: rate-limit headers, signed-URL lifetimes, the Hub's
metadata headers, the resolve cache, the give-up budget and the waiting state's text."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tui.app.views import JobView, job_speed_text, job_state_text
from tui.app.wiring import job_view_from
from tui.download.http import HttpStatusError, RetryPolicy, parse_ratelimit, parse_retry_after
from tui.download.progress import DownloadEvent
from tui.download.resolve import ResolveCache, Resolved, hub_metadata, url_ttl
from tui.errors import InvalidInputError
from tui.settings import Settings, load_settings

from tests.support.clock import FakeClock

SHA = "a" * 64
COMMIT = "b" * 40


@pytest.mark.parametrize(("value", "expected"), [
    ('"resolvers";r=0;t=42', (0, 42.0)),
    ('"api";r=12;t=55', (12, 55.0)),
    ('"resolvers" ; r = 0 ; t = 7, "other";r=5;t=1', (0, 7.0)),
    (None, None), ("", None), ("garbage", None), ('"x";r=-1;t=5', None),
    ('"x";r=0;t=' + "9" * 40, None),  # a 40-digit reset is not a number we trust
])
def test_parse_ratelimit(value, expected) -> None:
    assert parse_ratelimit(value) == expected


def test_retry_after_is_bounded() -> None:
    assert parse_retry_after("2") == 2 and parse_retry_after("0.5") == 0.5
    for hostile in ("-5", "1e400", "nan", "inf", "9" * 40, "soon"):
        assert parse_retry_after(hostile) is None, hostile


def test_a_429_waits_for_the_ratelimit_window_else_retry_after() -> None:
    def err(headers: dict[str, str], status: int = 429) -> HttpStatusError:
        return HttpStatusError(status, "https://hub/x?sig=1", httpx.Headers(headers))

    assert err({"RateLimit": '"resolvers";r=0;t=2'}).retry_after == 3.0  # +1 s, as hf does
    assert err({"RateLimit": '"resolvers";r=0;t=2', "Retry-After": "9"}).retry_after == 3.0
    assert err({"RateLimit": '"resolvers";r=4;t=2', "Retry-After": "9"}).retry_after == 9.0
    assert err({"Retry-After": "9"}, 503).retry_after == 9.0
    assert err({}).retry_after is None
    assert "sig=1" not in str(err({}))


def test_url_ttl_from_s3_and_cloudfront_signatures() -> None:
    s3 = ("https://cas-bridge.xethub.hf.co/x/y?X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600"
          "&X-Amz-Signature=abc")
    assert url_ttl(s3) == 3600
    # The answer's Date says it was signed 10 minutes ago (server clock): 50 minutes left.
    assert url_ttl(s3, "Thu, 01 Jan 2026 00:10:00 GMT") == 3000
    cf = "https://cdn-lfs.hf.co/r/x?Expires=1767227400&Signature=s&Key-Pair-Id=k"
    # Measured against the server's Date, not the local clock (which may be skewed).
    assert url_ttl(cf, "Thu, 01 Jan 2026 00:00:00 GMT", wall=lambda: 0.0) == 1800
    assert url_ttl("https://cdn/x?a=1") is None
    assert url_ttl("https://cdn/x?X-Amz-Expires=99999999999") == 7 * 86_400  # bounded
    assert url_ttl(cf, "Thu, 01 Jan 2026 01:00:00 GMT") == 0  # already expired


def test_hub_metadata_is_validated() -> None:
    h = httpx.Headers({"X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{SHA}"',
                       "X-Linked-Size": "123"})
    assert hub_metadata(h) == (COMMIT, SHA, 123)
    bad = httpx.Headers({"X-Repo-Commit": "../../etc", "X-Linked-Etag": 'W/"xyz"',
                         "X-Linked-Size": "-1"})
    assert hub_metadata(bad) == (None, None, None)
    assert hub_metadata(httpx.Headers({"ETag": '"x"'})) is None


def test_resolve_cache_reuses_until_near_expiry_or_refused() -> None:
    clock = FakeClock()
    cache = ResolveCache(clock=clock)
    src = "https://hub/acme/x/resolve/c/f.gguf"
    entry = Resolved(url="https://cdn/a?sig=1", source=src, ttl=3600, expires=clock() + 3600)
    cache.put(entry)
    assert cache.fresh(src) is not None
    clock.advance(3600 - 61)
    assert cache.fresh(src) is not None
    clock.advance(2)  # within a minute of expiry: resolve again first
    assert cache.fresh(src) is None
    cache.put(entry := Resolved(url="https://cdn/b?sig=2", source=src, ttl=10,
                                expires=clock() + 10))
    assert cache.fresh(src, stale=entry) is None  # the CDN refused it
    clock.advance(8.9)
    assert cache.fresh(src) is not None  # a short-lived URL: a tenth of its life as margin
    clock.advance(0.2)
    assert cache.fresh(src) is None
    cache.put(Resolved(url=src, source=src))  # the bytes at the URL itself: nothing to keep
    assert cache.fresh(src) is None


def test_give_up_budget_counts_time_without_progress() -> None:
    clock = FakeClock()
    policy = RetryPolicy(give_up_after=600, clock=clock)
    since = clock()
    assert not policy.exhausted(30, since, 20)
    clock.advance(590)
    assert not policy.exhausted(31, since, 10)
    assert policy.exhausted(31, since, 10.5)
    assert RetryPolicy(max_tries=2, clock=clock).exhausted(2, clock(), 0)
    # Minutes of retries are thousands of failures: the backoff stays a number.
    assert policy.delay(5000) <= policy.max_delay * 1.25


def test_give_up_after_setting() -> None:
    assert Settings(models_dir=Path("m"), state_dir=Path("s")).give_up_after == 10
    settings = load_settings(env={"MODELDECK_GIVE_UP_AFTER": "2.5"})
    assert settings.give_up_after == 2.5
    assert settings.source_of("give_up_after") == "env MODELDECK_GIVE_UP_AFTER"
    for bad in ("0", "inf", "nan", "-1", "1e400"):
        with pytest.raises(InvalidInputError, match="give_up_after"):
            load_settings(env={"MODELDECK_GIVE_UP_AFTER": bad})


def test_the_waiting_state_reaches_the_dashboard_row() -> None:
    event = DownloadEvent(job_id="j", name="acme/x", state="waiting", done_bytes=0,
                          total_bytes=None, speed=0.0, eta=None,
                          detail="waiting for the Hub's rate limit, 42s",
                          wait_for="the Hub's rate limit", wait_s=42)
    view = job_view_from(event)
    assert view.active
    assert job_state_text(view) == "waiting 42s"  # fits the state column (13)
    assert job_speed_text(view) == "the Hub's rate limit"  # fits the speed column (20)
    assert event.to_dict()["detail"] == "waiting for the Hub's rate limit, 42s"
    assert event.to_dict()["wait_s"] == 42
    other = JobView("j", "x", "downloading", wait_for="stale", wait_s=3)
    assert job_speed_text(other) == "" and job_state_text(other) == "downloading"
