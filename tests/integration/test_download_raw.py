"""The threaded body path (``tui.download.rawfetch``): used by default, faults handled, and the
httpx path (proxies / opt-out) still correct under the same faults."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import threading
import time

import httpx
import pytest
import trustme
from huggingface_hub.utils import close_session

from tui.download import JobSpec, engine, rawfetch
from tui.download.http import make_client
from tui.download.ratelimit import TokenBucket
from tui.download.service import DownloadService

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes, make_service, sha256
from tests.integration import test_download_faults as faults
from tests.integration import test_download_jobs as jobs
from tests.support.clock import FakeClock


def _fetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "modeldeck-fetch" and t.is_alive()]


async def test_bodies_are_received_in_threads(hub: FakeHub, service: DownloadService,
                                              dl_settings, monkeypatch) -> None:
    data = gguf_bytes(9 << 20, 31)
    url = hub.add_file("thr.bin", data)
    calls: list[int] = []
    real = engine.FileTransfer._receive

    def spy(self, resp, seg, acc, progress):
        calls.append(acc.start)
        return real(self, resp, seg, acc, progress)

    monkeypatch.setattr(engine.FileTransfer, "_receive", spy)
    job = await faults._pull_url(service, url, sha256=sha256(data))
    assert job.state == "done", job.error
    assert (dl_settings.models_dir / "direct" / "thr.bin").read_bytes() == data
    assert len(calls) >= 2  # several pieces, each in its own thread
    assert hub.bytes_served("thr.bin") == len(data)
    for _ in range(100):
        if not _fetch_threads():
            break
        time.sleep(0.01)
    assert not _fetch_threads()


async def test_connector_only_without_proxies_or_opt_out(monkeypatch) -> None:
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", rawfetch.DISABLE_ENV):
        monkeypatch.delenv(var, raising=False)
    client = make_client(pool_size=4, stall_timeout=3.0)
    try:
        conn = rawfetch.connector_for(client)
        assert conn is not None and conn.stall_timeout == 3.0
        assert conn.user_agent.startswith("modeldeck/")
        monkeypatch.setenv(rawfetch.DISABLE_ENV, "1")
        assert rawfetch.connector_for(client) is None
        monkeypatch.delenv(rawfetch.DISABLE_ENV)
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
        assert rawfetch.connector_for(client) is None
    finally:
        await client.aclose()
    mocked = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    try:
        monkeypatch.delenv("HTTPS_PROXY")
        assert rawfetch.connector_for(mocked) is None  # a custom transport keeps httpx
    finally:
        await mocked.aclose()


def _serve_once(payload: bytes) -> tuple[int, threading.Thread]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def run() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(payload)
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv.getsockname()[1], t


def _connector() -> rawfetch.Connector:
    return rawfetch.Connector(user_agent="t", connect_timeout=2, stall_timeout=2,
                              ssl_context=None)


def test_interim_responses_are_skipped_and_headers_parsed() -> None:
    port, t = _serve_once(b"HTTP/1.1 100 Continue\r\n\r\n"
                          b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 5-9/10\r\n"
                          b"Content-Length: 5\r\nETag: \"x\"\r\n\r\nhello")
    resp = _connector().open(rawfetch.Handle(), f"http://127.0.0.1:{port}/f", {}, None, None)
    try:
        assert resp.status_code == 206
        assert resp.headers["content-range"] == "bytes 5-9/10"
        assert resp.body_length == 5 and resp.head == b"hello" and not resp.chunked
    finally:
        resp.close()
    t.join(5)


@pytest.mark.parametrize("payload", [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nno-colon\r\n\r\n",
                                     b"HTTP/1.1 200 OK\r\n"])
def test_malformed_heads_are_protocol_errors(payload: bytes) -> None:
    port, t = _serve_once(payload)
    with pytest.raises(httpx.RemoteProtocolError):
        _connector().open(rawfetch.Handle(), f"http://127.0.0.1:{port}/f", {}, None, None)
    t.join(5)


def test_error_status_raises_with_headers() -> None:
    from tui.download.http import HttpStatusError

    port, t = _serve_once(b"HTTP/1.1 503 Busy\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(HttpStatusError) as info:
        _connector().open(rawfetch.Handle(), f"http://127.0.0.1:{port}/f", {}, None, None)
    assert info.value.status == 503 and info.value.retry_after == 2.0
    t.join(5)


def test_abort_unblocks_a_waiting_request() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)  # accepts (backlog) but never answers
    handle = rawfetch.Handle()
    conn = rawfetch.Connector(user_agent="t", connect_timeout=2, stall_timeout=30,
                              ssl_context=None)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            conn.open(handle, f"http://127.0.0.1:{srv.getsockname()[1]}/f", {}, None, None)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.2)
    start = time.monotonic()
    handle.abort()
    t.join(5)
    srv.close()
    assert not t.is_alive() and time.monotonic() - start < 2
    assert errors and isinstance(errors[0], rawfetch.Aborted | httpx.HTTPError)


def _clocked_bucket(rate: int) -> tuple[TokenBucket, FakeClock]:
    clock = FakeClock()
    return TokenBucket(rate, clock=clock, sleep=clock.sleep, async_sleep=clock.async_sleep), clock


def test_token_bucket_is_shared_by_threads() -> None:
    bucket, clock = _clocked_bucket(1 << 20)  # 1 MiB/s, burst 256 KiB

    def take() -> None:
        for _ in range(8):
            bucket.consume_blocking(64 << 10)

    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    # 1 MiB in total, 256 KiB of it from the initial burst: 0.75 s of waiting, one waiter at
    # a time (two buckets would have let each thread through in 0.25 s)
    assert clock.elapsed == pytest.approx(0.75, abs=1e-6)


async def test_token_bucket_async_and_threads_draw_on_the_same_tokens() -> None:
    import asyncio

    def take() -> None:
        for _ in range(8):
            bucket.consume_blocking(64 << 10)

    # One after the other: the coroutine finds the tokens the thread used gone.
    bucket, clock = _clocked_bucket(1 << 20)
    await asyncio.to_thread(take)
    for _ in range(8):
        await bucket.consume(64 << 10)
    assert clock.elapsed == pytest.approx(0.75, abs=1e-6)
    # At the same time: never more than the burst plus the rate allows.
    bucket, clock = _clocked_bucket(1 << 20)
    thread = threading.Thread(target=take)
    thread.start()
    for _ in range(8):
        await bucket.consume(64 << 10)
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()
    assert clock.elapsed >= 0.75 - 1e-6


# -- the httpx body path (used behind proxies) under the same faults -------------------------

HTTPX_PATH_TESTS = [
    faults.test_server_ignoring_range_falls_back_to_one_stream,
    faults.test_wrong_content_range_start_is_retried,
    faults.test_416_restarts_from_zero,
    faults.test_content_changed_mid_download_restarts_with_new_etag,
    faults.test_dropped_connections_are_retried,
    faults.test_stalled_connection_is_restarted,
    faults.test_bandwidth_cap,
]


@pytest.mark.parametrize("case", HTTPX_PATH_TESTS, ids=lambda f: f.__name__)
async def test_fault_on_httpx_body_path(case, hub: FakeHub, service: DownloadService,
                                        dl_settings, monkeypatch) -> None:
    monkeypatch.setenv(rawfetch.DISABLE_ENV, "1")
    called: list[int] = []
    monkeypatch.setattr(engine.FileTransfer, "_receive", lambda *a: called.append(1))
    kwargs = {"hub": hub, "service": service}
    params = case.__code__.co_varnames[: case.__code__.co_argcount]
    if "dl_settings" in params:
        kwargs["dl_settings"] = dl_settings
    if "monkeypatch" in params:
        kwargs["monkeypatch"] = monkeypatch
    await case(**kwargs)
    assert not called


async def test_disk_full_on_httpx_body_path(hub: FakeHub, service: DownloadService,
                                            dl_settings, monkeypatch) -> None:
    monkeypatch.setenv(rawfetch.DISABLE_ENV, "1")
    await jobs.test_disk_full_mid_download_keeps_partial_and_resumes(
        hub, service, dl_settings, monkeypatch)


async def test_pause_resume_on_httpx_body_path(hub: FakeHub, service: DownloadService,
                                               dl_settings, monkeypatch) -> None:
    monkeypatch.setenv(rawfetch.DISABLE_ENV, "1")
    await jobs.test_pause_resume_keeps_bytes(hub, service, dl_settings)


def _distinct_connections(server: FakeHub, match: str) -> int:
    return len({r.peer for r in server.requests_for(match, "GET")})


def _assert_reused(server: FakeHub, match: str, pieces: int, connections: int) -> None:
    """At most ``connections`` sockets for ``pieces`` requests; a retried request (a stall
    on a loaded box) may add one new socket each, never one per piece."""
    gets = server.requests_for(match, "GET")
    retries = len(gets) - pieces
    assert retries >= 0
    assert _distinct_connections(server, match) <= connections + retries < len(gets)


async def test_pieces_reuse_kept_alive_connections(hub: FakeHub, dl_settings) -> None:
    """More pieces than connections: later pieces go over the sockets the first ones used
    (no new TCP/TLS handshake per piece), as httpx's pool would do."""
    settings = dataclasses.replace(dl_settings, stall_timeout=5.0)
    data = gguf_bytes(24 << 20, 32)
    url = hub.add_file("keep.bin", data)
    pieces = engine.plan_pieces(len(data), settings.connections_per_download)
    assert len(pieces) > settings.connections_per_download
    svc = make_service(settings)
    try:
        job = await faults._pull_url(svc, url, sha256=sha256(data))
    finally:
        await svc.stop()
        svc.db.close()
    assert job.state == "done", job.error
    _assert_reused(hub, "keep.bin", len(pieces), settings.connections_per_download)


class _OneShotServer:
    """Raw HTTP/1.1 on a socket: answers the first request on each connection with a
    keep-alive ``hello``, then reads the next request and closes without answering (a server
    dropping an idle keep-alive connection just as it is reused)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.dropped = 0  # requests read and left unanswered
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            if conn.recv(4096):  # the second request on this connection: dropped
                self.dropped += 1

    def close(self) -> None:
        self.listener.close()


def _read_body(resp: rawfetch.RawResponse) -> bytes:
    body = resp.head
    while len(body) < (resp.body_length or 0):
        body += resp.sock.recv(65536)
    resp.body_done = True
    return body


def test_a_connection_dropped_on_reuse_is_replaced() -> None:
    server = _OneShotServer()
    conn = rawfetch.Connector(user_agent="t", connect_timeout=5, stall_timeout=5,
                              ssl_context=None)
    url = f"http://127.0.0.1:{server.port}/x"
    try:
        first = conn.open(rawfetch.Handle(), url, {}, None, None)
        assert first.keep_alive and _read_body(first) == b"hello"
        conn.release(first)
        second = conn.open(rawfetch.Handle(), url, {}, None, None)
        assert _read_body(second) == b"hello"
        conn.release(second)
        assert conn.connects == 2 and server.accepted == 2
        assert server.dropped == 1  # the kept-alive socket was tried first
    finally:
        conn.close()
        server.close()


def test_closed_idle_connections_are_not_reused() -> None:
    """An idle socket the server has closed (readable at EOF) is dropped at checkout."""
    server = _OneShotServer()
    conn = rawfetch.Connector(user_agent="t", connect_timeout=5, stall_timeout=5,
                              ssl_context=None)
    url = f"http://127.0.0.1:{server.port}/x"
    try:
        first = conn.open(rawfetch.Handle(), url, {}, None, None)
        _read_body(first)
        conn.release(first)
        first.sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")  # the server closes it
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if first.sock.recv(1, socket.MSG_PEEK) == b"":
                    break
            except BlockingIOError:
                time.sleep(0.01)
        assert conn._checkout(("http", "127.0.0.1", server.port)) is None
    finally:
        conn.close()
        server.close()


@pytest.fixture
def tls_hub(monkeypatch, tmp_path):
    """An HTTPS hub whose CDN is another HTTPS origin, trusted through ``SSL_CERT_FILE``
    (how users behind a TLS-inspecting proxy add their CA), certificates from trustme."""
    from huggingface_hub import constants

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    close_session()  # huggingface_hub's cached client predates SSL_CERT_FILE
    hub = FakeHub(ssl_context=ctx).start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    yield hub
    hub.stop()
    close_session()


async def test_https_hub_with_a_cdn_redirect(tls_hub, dl_settings, monkeypatch) -> None:
    """The real shape of a Hub download: listing and ``resolve`` over TLS, a 302 to another
    TLS origin, the token only to the first; pieces on kept-alive TLS connections."""
    hub = tls_hub
    assert hub.url.startswith("https://") and hub.cdn_url.startswith("https://")
    token = "hf_TlsSecretTokenValue1234567890"
    monkeypatch.setenv("HF_TOKEN", token)
    data = gguf_bytes(20 << 20, 33)
    hub.add_repo("acme/tls", {"t-Q4_K_M.gguf": data})
    dl_settings = dataclasses.replace(dl_settings, stall_timeout=5.0)
    svc = make_service(dl_settings)
    try:
        [job] = await svc.run_until_complete([svc.enqueue(JobSpec(kind="hf", repo="acme/tls"))])
        assert job.state == "done", job.error
        assert (dl_settings.models_dir / "acme/tls/t-Q4_K_M.gguf").read_bytes() == data
        assert rawfetch.connector_for(svc._client) is not None  # the threaded path ran
    finally:
        await svc.stop()
        svc.db.close()
    pieces = engine.plan_pieces(len(data), dl_settings.connections_per_download)
    _assert_reused(hub, "t-Q4_K_M.gguf", len(pieces), dl_settings.connections_per_download)
    assert all(r.host == "cdn" for r in hub.requests_for("t-Q4_K_M.gguf", "GET"))
    assert all(r.headers.get("Authorization") == f"Bearer {token}"
               for r in hub.requests_for("/resolve/"))
    assert all("Authorization" not in r.headers for r in hub.requests_for(host="cdn"))
    assert hub.cdn_auth_refused == 0
