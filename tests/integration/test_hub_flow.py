"""The Hub flow against a faithful fake: a 302 with the file's metadata to a signed, expiring
CDN URL on another origin, a CDN whose ETag and HEAD vary, a rate-limited resolver.

``huggingface_hub`` itself is run against the fake in every mode (proof that the fake answers
as the Hub does), then ModelDeck in the same modes; then each behaviour on its own: resume
after ``kill -9`` without a CDN ETag, CDN refusals never "gated", one re-resolve for an
expired URL, resolver calls per file, rate limits waited out, the give-up budget.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tui.download import DownloadEvent, JobSpec, engine
from tui.download.service import DownloadService

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes, make_service
from tests.support.checks import REPO
from tests.support.clock import FakeClock

MiB = 1 << 20
TOKEN = "hf_FlowSecretTokenValue1234567890"

# Each mode: FakeHub attributes, plus ``rate_limit`` (limit, window seconds).
MODES: dict[str, dict] = {
    "strong-etag": {"cdn_etag": "strong"},
    "weak-etag": {"cdn_etag": "weak"},
    "no-etag": {"cdn_etag": "none"},
    "strong-etag-head-403": {"cdn_etag": "strong", "cdn_head": 403},
    "weak-etag-head-403": {"cdn_etag": "weak", "cdn_head": 403},
    "no-etag-head-403": {"cdn_etag": "none", "cdn_head": 403},
    "short-urls": {"cdn_etag": "none", "cdn_head": 403, "url_ttl": 1, "cdn_rate": 6 * MiB},
    "rate-limited": {"cdn_etag": "none", "cdn_head": 403, "rate_limit": (2, 1.0)},
    "xet-headers": {"xet": True},
}


def _set_mode(hub: FakeHub, mode: str) -> None:
    for key, value in MODES[mode].items():
        if key == "rate_limit":
            hub.rate_limit(*value)
        else:
            setattr(hub, key, value)


def _repo(hub: FakeHub, name: str, big: int = 9 * MiB) -> dict[str, bytes]:
    files = {f"{name}-Q4_K_M.gguf": gguf_bytes(big, len(name)), "README.md": b"# hi\n",
             "sub/config.json": b"{}" * 700}
    hub.add_repo(f"acme/{name}", files)
    return files


async def _pull(service: DownloadService, spec: JobSpec):
    [job] = await service.run_until_complete([service.enqueue(spec)])
    return job


def _no_token_to_the_cdn(hub: FakeHub) -> None:
    assert hub.cdn_auth_refused == 0
    assert all("Authorization" not in r.headers for r in hub.requests_for(host="cdn"))


# -- the fake is faithful: huggingface_hub works against it in every mode ----------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_huggingface_hub_downloads_in_every_mode(hub: FakeHub, tmp_path, monkeypatch,
                                                 mode: str) -> None:
    from huggingface_hub import constants, hf_hub_download, snapshot_download

    # The fake has no Xet CAS service: huggingface_hub must not take the Xet path.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    _set_mode(hub, mode)
    files = _repo(hub, "hf", big=3 * MiB)
    path = hf_hub_download("acme/hf", "hf-Q4_K_M.gguf", cache_dir=tmp_path / "one")
    assert Path(path).read_bytes() == files["hf-Q4_K_M.gguf"]
    folder = Path(snapshot_download("acme/hf", cache_dir=tmp_path / "all"))
    for name, data in files.items():
        assert (folder / name).read_bytes() == data
    assert hub.requests_for("/resolve/", "HEAD")  # resolved by HEAD, not followed…
    assert hub.requests_for("hf-Q4_K_M.gguf", "GET", host="cdn")  # …the bytes on the CDN
    assert all(r.headers.get("Authorization") == f"Bearer {TOKEN}"
               for r in hub.requests_for("/resolve/"))
    _no_token_to_the_cdn(hub)
    if mode == "rate-limited":
        assert any(r.status == 429 for r in hub.requests_for("/resolve/"))


# -- ModelDeck in the same modes ---------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
async def test_modeldeck_pulls_in_every_mode(hub: FakeHub, dl_settings, monkeypatch,
                                             mode: str) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    _set_mode(hub, mode)
    settings = dataclasses.replace(dl_settings, connections_per_download=2, stall_timeout=5.0)
    service = make_service(settings)
    if mode == "rate-limited":  # waits on an injected clock, shared with the fake's window
        clock = FakeClock(start=time.time())
        hub.clock = clock
        service.policy.clock, service.policy.sleep = clock, clock.async_sleep
    try:
        files = _repo(hub, "md")
        job = await _pull(service, JobSpec(kind="hf", repo="acme/md", include=["*"]))
    finally:
        await service.stop()
        service.db.close()
    assert job.state == "done", job.error
    root = settings.models_dir / "acme" / "md"
    for name, data in files.items():
        assert (root / name).read_bytes() == data
    _no_token_to_the_cdn(hub)
    for name in files:
        # An LFS file: one resolve (a second where its URL expired); a small git file is
        # answered by the resolver itself: its HEAD, then its GET.
        calls = len([r for r in hub.requests_for(f"/{name}") if "/resolve/" in r.path
                     and r.status != 429])
        most = 2 if name == "README.md" or mode == "short-urls" else 1
        assert 1 <= calls <= most, (name, calls)
    model = service.inventory.get_model(job.model_id)
    assert model.files[0].verified == "sha256"


# -- resume after kill -9 when the CDN sends no ETag -------------------------------------------


def test_kill_9_at_40_percent_without_cdn_etag_resumes(hub: FakeHub, tmp_path) -> None:
    """A real ``modeldeck pull`` killed at ~40% by SIGKILL, the CDN sending neither ETag nor
    Last-Modified: pulling again resumes from the partial (the file is pinned to a commit
    with the sha256 the Hub gave), so the fake serves at most 1.1x the file in all."""
    data = gguf_bytes(24 * MiB, 40)
    hub.add_repo("acme/k9", {"k9-Q4_K_M.gguf": data})
    hub.cdn_etag = "none"
    # Per connection: the kill lands mid-file with little unflushed (4 connections, progress
    # persisted every 0.5 s: at most 1 MiB of the 24 MiB lost to the kill).
    hub.cdn_rate = 512 * 1024
    env = dict(os.environ, HF_ENDPOINT=hub.url, MODELDECK_MODELS_DIR=str(tmp_path / "models"),
               MODELDECK_STATE_DIR=str(tmp_path / "state"), MODELDECK_SCAN_HF_CACHE="0",
               MODELDECK_CONNECTIONS_PER_DOWNLOAD="4",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                        os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "tui", "pull", "acme/k9:Q4_K_M", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while hub.bytes_served("k9-Q4_K_M.gguf") < 0.4 * len(data):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the download did not get to 40%"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first = hub.bytes_served("k9-Q4_K_M.gguf")
    assert first < len(data)
    hub.cdn_rate = None
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    dest = tmp_path / "models" / "acme" / "k9" / "k9-Q4_K_M.gguf"
    assert dest.read_bytes() == data
    served = hub.bytes_served("k9-Q4_K_M.gguf")
    assert served <= 1.1 * len(data), f"served {served / len(data):.2f}x the file"
    resumed = [r for r in hub.requests_for("k9-Q4_K_M.gguf", "GET", host="cdn")
               if "If-Range" in r.headers]
    assert resumed == []  # no ETag, so no If-Range: the commit and sha256 make it safe


@pytest.mark.parametrize("etag", ["strong", "weak", "none"])
async def test_a_paused_hub_file_resumes_whatever_the_cdn_etag(hub: FakeHub, service,
                                                                etag: str) -> None:
    """Pause, resume: the partial is kept in every CDN ETag mode; ``If-Range`` goes out only
    with the CDN's strong ETag (its own, not the sha256)."""
    hub.cdn_etag = etag
    hub.cdn_rate = 2 * MiB
    data = gguf_bytes(12 * MiB, 39)
    repo = hub.add_repo("acme/pr", {"pr-Q4_K_M.gguf": data})
    job_id = service.enqueue(JobSpec(kind="hf", repo="acme/pr"))
    runner = asyncio.create_task(service.run_until_complete([job_id]))
    deadline = time.monotonic() + 30
    while hub.bytes_served("pr-Q4_K_M.gguf") < len(data) // 3:
        assert time.monotonic() < deadline and not runner.done()
        await asyncio.sleep(0.02)
    paused = await service.pause(job_id)
    await runner
    assert paused.state == "paused" and paused.done_bytes > 0
    hub.cdn_rate = None
    hub.reset_counters()
    service.resume(job_id)
    [job] = await service.run_until_complete([job_id])
    assert job.state == "done", job.error
    assert Path(job.files[0].dest).read_bytes() == data
    assert hub.bytes_served("pr-Q4_K_M.gguf") <= len(data) - paused.done_bytes + MiB
    gets = hub.requests_for("pr-Q4_K_M.gguf", "GET", host="cdn")
    strong = f'"{repo.files["pr-Q4_K_M.gguf"].xet_hash}"'
    if etag == "strong":
        assert gets and all(r.headers.get("If-Range") == strong for r in gets)
    else:
        assert all("If-Range" not in r.headers for r in gets)


# -- CDN refusals are never "gated"; the Hub's answers are -------------------------------------


async def test_cdn_refusing_head_on_a_public_repo_is_not_gated(hub: FakeHub, service) -> None:
    hub.cdn_head = 403
    data = gguf_bytes(5 * MiB, 41)
    hub.add_repo("acme/pub", {"pub-Q4_K_M.gguf": data})
    job = await _pull(service, JobSpec(kind="hf", repo="acme/pub"))
    assert job.state == "done", job.error
    heads = hub.requests_for("pub-Q4_K_M.gguf", "HEAD", host="cdn")
    probes = [r for r in hub.requests_for("pub-Q4_K_M.gguf", "GET", host="cdn")
              if r.headers.get("Range") == "bytes=0-0"]
    assert heads and all(r.status == 403 for r in heads)
    assert len(probes) == 1 and probes[0].status == 206  # the ranged GET probe instead


async def test_a_cdn_that_keeps_refusing_is_reported_as_such(hub: FakeHub, service) -> None:
    hub.add_repo("acme/deny", {"deny-Q4_K_M.gguf": gguf_bytes(2 * MiB, 42)})
    hub.add_fault("/xet-bridge-us/", "status", times=None, methods=("GET", "HEAD"), status=403)
    job = await _pull(service, JobSpec(kind="hf", repo="acme/deny"))
    assert job.state == "failed"
    assert "gated" not in job.error and "refused" in job.error and "403" in job.error
    assert "\n" not in job.error and "X-Amz" not in job.error
    assert hub.resolver_calls("deny-Q4_K_M.gguf") == 2  # resolved once more, then stopped


async def test_a_gated_repo_is_gated(hub: FakeHub, service, monkeypatch) -> None:
    hub.add_repo("acme/gate", {"gate-Q4_K_M.gguf": gguf_bytes(MiB, 43)}, gated=True,
                 tokens={TOKEN})
    job = await _pull(service, JobSpec(kind="hf", repo="acme/gate"))
    assert job.state == "failed" and "gated or private" in job.error
    assert hub.requests_for(host="cdn") == []
    # The Hub's API refusing with GatedRepo is "gated" too.
    hub.add_repo("acme/gate2", {"g2-Q4_K_M.gguf": gguf_bytes(MiB, 44)})
    hub.add_fault("/api/models/acme/gate2", "status", times=None, status=403,
                  headers={"X-Error-Code": "GatedRepo", "X-Error-Message": "restricted"})
    job = await _pull(service, JobSpec(kind="hf", repo="acme/gate2"))
    assert job.state == "failed" and "gated or private" in job.error
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    job = await _pull(service, JobSpec(kind="hf", repo="acme/gate"))
    assert job.state == "done", job.error
    _no_token_to_the_cdn(hub)


# -- expiring URLs and resolver calls ----------------------------------------------------------


async def test_an_expired_url_mid_download_is_resolved_once_more(
        hub: FakeHub, service, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    data = gguf_bytes(24 * MiB, 45)
    hub.add_repo("acme/exp", {"exp-Q4_K_M.gguf": data})
    hub.cdn_rate = 2 * MiB
    runner = asyncio.create_task(_pull(service, JobSpec(kind="hf", repo="acme/exp")))
    deadline = time.monotonic() + 30
    while hub.bytes_served("exp-Q4_K_M.gguf") < 0.2 * len(data):
        assert time.monotonic() < deadline and not runner.done()
        await asyncio.sleep(0.02)
    hub.expire_urls()  # the pieces still to start find their URL expired
    hub.cdn_rate = None
    job = await asyncio.wait_for(runner, 60)
    assert job.state == "done", job.error
    assert Path(job.files[0].dest).read_bytes() == data
    refused = [r for r in hub.requests_for("exp-Q4_K_M.gguf", host="cdn") if r.status == 403]
    assert refused, "no piece met the expired URL"
    assert hub.resolver_calls("exp-Q4_K_M.gguf") == 2  # one more for every refused piece
    assert hub.bytes_served("exp-Q4_K_M.gguf") <= len(data) + MiB
    # A signed URL is a credential: not in ModelDeck's log, the database or the job's record.
    assert all("X-Amz-Signature" not in r.getMessage() for r in caplog.records
               if r.name.startswith("tui"))
    service.db.close()
    for f in service.settings.state_dir.rglob("*"):
        if f.is_file():
            assert b"X-Amz-Signature" not in f.read_bytes(), f


async def test_a_url_near_its_expiry_is_resolved_again_before_it_fails(
        hub: FakeHub, dl_settings) -> None:
    """A 1-second URL: later pieces get a fresh one first, none meets a 403."""
    hub.url_ttl = 1
    hub.cdn_rate = 2 * MiB
    data = gguf_bytes(16 * MiB, 46)
    hub.add_repo("acme/ttl", {"ttl-Q4_K_M.gguf": data})
    service = make_service(dataclasses.replace(dl_settings, connections_per_download=1,
                                               stall_timeout=5.0))
    try:
        job = await _pull(service, JobSpec(kind="hf", repo="acme/ttl", connections=2))
    finally:
        await service.stop()
        service.db.close()
    assert job.state == "done", job.error
    assert [r for r in hub.requests_for("ttl-Q4_K_M.gguf", host="cdn") if r.status == 403] == []
    assert hub.resolver_calls("ttl-Q4_K_M.gguf") >= 2


async def test_resolver_calls_per_file_do_not_grow_with_pieces(hub: FakeHub, service) -> None:
    data = gguf_bytes(48 * MiB, 47)
    hub.add_repo("acme/many", {"many-Q4_K_M.gguf": data})
    job = await _pull(service, JobSpec(kind="hf", repo="acme/many"))
    assert job.state == "done", job.error
    pieces = engine.plan_pieces(len(data), service.settings.connections_per_download)
    gets = hub.requests_for("many-Q4_K_M.gguf", "GET", host="cdn")
    assert len(pieces) >= 10 and len(gets) >= len(pieces)
    assert hub.resolver_calls("many-Q4_K_M.gguf") == 1


# -- rate limits and the give-up budget --------------------------------------------------------


async def test_429_with_ratelimit_is_waited_out_in_the_waiting_state(hub: FakeHub, service
                                                                      ) -> None:
    """``RateLimit: "resolvers";r=0;t=2`` and no ``Retry-After``: ModelDeck waits the window
    out (on an injected clock shared with the fake), shows it, and finishes."""
    clock = FakeClock(start=time.time())
    hub.clock = clock
    service.policy.clock, service.policy.sleep = clock, clock.async_sleep
    hub.rate_limit(1, 2.0)  # one resolve per 2 s: the second file meets a 429
    hub.add_repo("acme/rl", {"a-Q4_K_M.gguf": gguf_bytes(2 * MiB, 48),
                             "config.json": b"{}" * 700})
    events: list[DownloadEvent] = []
    service.subscribe(events.append)
    job = await _pull(service, JobSpec(kind="hf", repo="acme/rl", include=["*"]))
    assert job.state == "done", job.error
    limited = [r for r in hub.requests_for("/resolve/") if r.status == 429]
    assert limited and all("Retry-After" not in r.headers for r in limited)
    waiting = [e.detail for e in events if e.state == "waiting"]
    assert waiting and all(re.fullmatch(r"waiting for the Hub's rate limit, \d+s", d)
                           for d in waiting), waiting
    assert "waiting for the Hub's rate limit, 3s" in waiting  # t=2, plus a second's margin
    assert sum(clock.sleeps) >= 3
    assert events[-1].state == "done"


def test_the_cli_shows_the_rate_limit_wait(hub: FakeHub, tmp_path, monkeypatch, capsys
                                           ) -> None:
    from tui.cli import main

    hub.rate_limit(1, 1.0, retry_after=True)
    hub.add_repo("acme/cli", {"c-Q4_K_M.gguf": gguf_bytes(MiB, 50),
                              "config.json": b"{}" * 700})
    monkeypatch.setenv("MODELDECK_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MODELDECK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MODELDECK_SCAN_HF_CACHE", "0")
    assert main(["pull", "acme/cli", "--include", "*", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"acme/cli: waiting for the Hub's rate limit, \d+s", err), err


async def test_a_rate_limit_past_the_budget_fails_at_once_with_one_line(hub: FakeHub, service
                                                                         ) -> None:
    clock = FakeClock()
    service.policy.clock, service.policy.sleep = clock, clock.async_sleep
    hub.add_repo("acme/wait", {"w-Q4_K_M.gguf": gguf_bytes(MiB, 52)})
    hub.add_fault("/resolve/", "status", times=None, methods=("GET", "HEAD"), status=429,
                  headers={"RateLimit": '"resolvers";r=0;t=3600'})
    job = await _pull(service, JobSpec(kind="hf", repo="acme/wait"))
    assert job.state == "failed"
    assert "asks to wait 1h00m more" in job.error and "give_up_after" in job.error
    assert "\n" not in job.error
    assert clock.sleeps == [] and hub.resolver_calls() == 1


async def test_a_failing_resolver_is_retried_until_the_budget_then_one_line(
        hub: FakeHub, dl_settings) -> None:
    """``give_up_after`` (minutes, from the settings) bounds the retries, on an injected
    clock: no wall time."""
    clock = FakeClock()
    service = make_service(dataclasses.replace(dl_settings, give_up_after=1.5))
    policy = service.policy
    policy.clock, policy.sleep = clock, clock.async_sleep
    policy.base_delay, policy.max_delay = 1.0, 20.0
    hub.add_repo("acme/down", {"d-Q4_K_M.gguf": gguf_bytes(MiB, 53)})
    hub.add_fault("/resolve/", "status", times=None, methods=("GET", "HEAD"), status=503)
    try:
        job = await _pull(service, JobSpec(kind="hf", repo="acme/down"))
    finally:
        await service.stop()
        service.db.close()
    assert job.state == "failed"
    assert "giving up after" in job.error and "HTTP 503" in job.error
    assert "\n" not in job.error
    assert hub.resolver_calls() == len(clock.sleeps) + 1 > 7
    assert 90 - 20 * 1.25 <= clock.elapsed <= 90
    assert job.files  # planned: `jobs retry` resumes it


# -- the fake by hand ----------------------------------------------------------------------------


def test_the_fake_runs_by_hand_and_modeldeck_pulls_from_it(tmp_path) -> None:
    """``python -m tests.fakehub`` (how a user without internet tries the Hub flow), then a
    real ``modeldeck pull`` against it; the fake's counters come from ``/_fakehub/stats``."""
    import json
    import urllib.request

    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "README.md").write_text("# by hand\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
        str(REPO), os.environ.get("PYTHONPATH")])))
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakehub", "--port", "0", "--repo", f"acme/hand={folder}",
         "--random", "acme/hand/hand-Q4_K_M.gguf=6M", "--cdn-etag", "none", "--cdn-head", "403",
         "--rate-limit", "100/60"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = fake.stdout.readline().strip()
        assert line.startswith("HF_ENDPOINT=http://127.0.0.1:"), fake.stderr.read()
        endpoint = line.split("=", 1)[1]
        pull = subprocess.run(
            [sys.executable, "-m", "tui", "pull", "acme/hand", "--include", "*", "--quiet"],
            env=dict(env, HF_ENDPOINT=endpoint, MODELDECK_MODELS_DIR=str(tmp_path / "models"),
                     MODELDECK_STATE_DIR=str(tmp_path / "state"), MODELDECK_SCAN_HF_CACHE="0"),
            capture_output=True, text=True, timeout=120)
        assert pull.returncode == 0, pull.stderr
        got = tmp_path / "models" / "acme" / "hand"
        assert (got / "README.md").read_text() == "# by hand\n"
        assert (got / "hand-Q4_K_M.gguf").stat().st_size == 6 * MiB
        with urllib.request.urlopen(f"{endpoint}/_fakehub/stats", timeout=10) as resp:
            stats = json.load(resp)
        assert stats["resolver_calls"] <= 3 and stats["cdn_auth_refused"] == 0
    finally:
        fake.send_signal(signal.SIGTERM)
        try:
            fake.wait(10)
        except subprocess.TimeoutExpired:
            fake.kill()
            fake.wait()


async def test_an_untrusted_certificate_fails_at_once_not_after_the_budget(
        service, monkeypatch) -> None:
    """Retrying until ``give_up_after`` is for transient failures; a certificate that does not
    verify is one line at once, naming the way to add a CA."""
    import ssl

    import trustme

    cert = trustme.CA().issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = FakeHub(ssl_context=ctx).start()
    try:
        url = server.add_file("tls.gguf", gguf_bytes(MiB, 54))
        job = await _pull(service, JobSpec(kind="url", url=url))
    finally:
        server.stop()
    assert job.state == "failed"
    assert "not trusted" in job.error and "SSL_CERT_FILE" in job.error
    assert "\n" not in job.error
