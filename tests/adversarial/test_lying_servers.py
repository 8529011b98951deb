"""Servers that lie about the bytes they send, through the real DownloadService on both body
paths: nothing is installed unless every byte is right, a failure is one line, and the
partial keeps only bytes whose answers passed the checks."""

from __future__ import annotations

import gzip
import hashlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tui.cli import main
from tui.download import JobSpec, engine, rawfetch
from tui.download import service as service_mod
from tui.download.service import DownloadService

from tests.fakehub.testing import gguf_bytes, make_service
from tests.support.checks import assert_no_control_chars, assert_one_line_error, run_modeldeck

KiB, MiB = 1 << 10, 1 << 20
JUNK = bytes(range(256)) * 16  # 4096 bytes that are not the file's

Range = tuple[int, int | None] | None  # (first, last or None) or no Range header


@dataclass
class Request:
    method: str
    range: Range
    headers: dict[str, str]


Liar = Callable[[Request, bytes], bytes]  # a lying answer (status line … body) for a GET


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class HostileServer:
    """HTTP/1.1 on a plain socket that answers HEAD and GET for one file honestly (strong
    ETag, ranges, keep-alive) except for the GETs ``lies_on`` picks, which get exactly the
    bytes ``liar`` returns, after which the connection is closed."""

    data: bytes
    liar: Liar | None = None
    lies_on: Callable[[Request], bool] = lambda req: True
    requests: list[Request] = field(default_factory=list)
    lies: int = 0

    def __post_init__(self) -> None:
        self.etag = '"' + hashlib.sha256(self.data).hexdigest() + '"'
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, name: str = "model.gguf") -> str:
        return f"http://127.0.0.1:{self.port}/files/{name}"

    def close(self) -> None:
        self.listener.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            try:
                while True:
                    while b"\r\n\r\n" not in buf:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    req = _parse(head)
                    with self.lock:
                        self.requests.append(req)
                    answer, close = self._answer(req)
                    conn.sendall(answer)
                    if close:
                        conn.shutdown(socket.SHUT_RDWR)
                        return
            except OSError:
                return

    def _answer(self, req: Request) -> tuple[bytes, bool]:
        if req.method == "GET" and self.liar is not None and self.lies_on(req):
            with self.lock:
                self.lies += 1
            return self.liar(req, self.data), True
        return honest(req, self.data, self.etag), False


def honest(req: Request, data: bytes, etag: str) -> bytes:
    size = len(data)
    base = {"ETag": etag, "Accept-Ranges": "bytes"}
    if_range = req.headers.get("if-range")
    rng = req.range if if_range in (None, etag) else None
    if rng is None:
        body = b"" if req.method == "HEAD" else data
        return _head("200 OK", {**base, "Content-Length": str(size)}) + body
    first, last = rng
    last = size - 1 if last is None else min(last, size - 1)
    body = b"" if req.method == "HEAD" else data[first:last + 1]
    return _head("206 Partial Content", {**base, "Content-Range": f"bytes {first}-{last}/{size}",
                                         "Content-Length": str(last - first + 1)}) + body


def _parse(head: bytes) -> Request:
    lines = head.decode("latin-1").split("\r\n")
    method = lines[0].split(" ", 1)[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    rng: Range = None
    spec = headers.get("range", "")
    if spec.startswith("bytes="):
        a, _, b = spec[6:].partition("-")
        rng = (int(a), int(b) if b else None)
    return Request(method, rng, headers)


def _span(req: Request, data: bytes) -> tuple[int, int]:
    if req.range is None:
        return 0, len(data) - 1
    first, last = req.range
    return first, len(data) - 1 if last is None else last


# -- the lies ------------------------------------------------------------------------------


def long_body(req: Request, data: bytes) -> bytes:
    """The reported case: right Content-Range, a body 4096 bytes longer, and Content-Length
    saying so (the file's bytes shifted by the junk in front)."""
    first, last = _span(req, data)
    body = JUNK + data[first:last + 1]
    if req.range is None:
        return _head("200 OK", {"Content-Length": str(len(body))}) + body
    return _head("206 Partial Content", {"Content-Range": f"bytes {first}-{last}/{len(data)}",
                                         "Content-Length": str(len(body))}) + body


def start_off_by_one(req: Request, data: bytes) -> bytes:
    first, last = _span(req, data)
    body = data[first + 1:last + 1]
    return _head("206 Partial Content", {
        "Content-Range": f"bytes {first + 1}-{last}/{len(data)}",
        "Content-Length": str(len(body))}) + body


def end_short(req: Request, data: bytes) -> bytes:
    first, last = _span(req, data)
    body = data[first:last]
    return _head("206 Partial Content", {
        "Content-Range": f"bytes {first}-{last - 1}/{len(data)}",
        "Content-Length": str(len(body))}) + body


def total_mismatch(req: Request, data: bytes) -> bytes:
    first, last = _span(req, data)
    body = data[first:last + 1]
    return _head("206 Partial Content", {
        "Content-Range": f"bytes {first}-{last}/{len(data) + 4096}",
        "Content-Length": str(len(body))}) + body


def length_says_fewer(req: Request, data: bytes) -> bytes:
    first, last = _span(req, data)
    body = data[first:last + 1 - 100]
    return _head("206 Partial Content", {
        "Content-Range": f"bytes {first}-{last}/{len(data)}",
        "Content-Length": str(len(body))}) + body


def ok_200_with_the_range(req: Request, data: bytes) -> bytes:
    """A 200 to a ranged request, carrying only the range."""
    first, last = _span(req, data)
    body = data[first:last + 1] + (JUNK if req.range is None else b"")
    return _head("200 OK", {"Content-Length": str(len(body))}) + body


def multipart(req: Request, data: bytes) -> bytes:
    first, last = _span(req, data)
    part = (f"--B\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Range: bytes {first}-{last}/{len(data)}\r\n\r\n").encode()
    body = part + data[first:last + 1] + b"\r\n--B--\r\n"
    return _head("206 Partial Content", {
        "Content-Type": "multipart/byteranges; boundary=B",
        "Content-Length": str(len(body))}) + body


def gzipped(req: Request, data: bytes) -> bytes:
    first, last = _span(req, data)
    body = gzip.compress(data[first:last + 1], compresslevel=1)
    status = "200 OK" if req.range is None else "206 Partial Content"
    headers = {"Content-Encoding": "gzip", "Content-Length": str(len(body))}
    if req.range is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
    return _head(status, headers) + body


def unframed_long(req: Request, data: bytes) -> bytes:
    """Right headers, no Content-Length, and 4096 bytes more before the connection closes."""
    first, last = _span(req, data)
    body = data[first:last + 1] + JUNK
    headers = {"Connection": "close"}
    if req.range is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
    return _head("206 Partial Content" if req.range else "200 OK", headers) + body


def refuse_416(req: Request, data: bytes) -> bytes:
    return _head("416 Range Not Satisfiable", {"Content-Range": f"bytes */{len(data)}",
                                               "Content-Length": "0"})


def hostile_header(req: Request, data: bytes) -> bytes:
    """Non-ASCII, control characters and a terminal escape in Content-Range."""
    first, last = _span(req, data)
    body = data[first:last + 1]
    return (b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes \xb2-\x1b]0;x\x07/9\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


LIES = [long_body, start_off_by_one, end_short, total_mismatch, length_says_fewer,
        ok_200_with_the_range, multipart, gzipped, unframed_long, refuse_416, hostile_header]


# -- running a pull ------------------------------------------------------------------------


@pytest.fixture(params=["raw", "httpx"])
def body_path(request, monkeypatch) -> str:
    """Both body paths: the threaded raw socket (default) and httpx."""
    if request.param == "httpx":
        monkeypatch.setenv(rawfetch.DISABLE_ENV, "1")
    return request.param


@pytest.fixture
def small_pieces(monkeypatch) -> None:
    """Pieces of 128 KiB, so a 1 MiB file is 8 pieces over 4 connections."""
    monkeypatch.setattr(engine, "MIN_SEGMENT", 128 * KiB)
    monkeypatch.setattr(service_mod, "SMALL_FILE", 256 * KiB)


@pytest.fixture
def svc(dl_settings) -> Iterator[DownloadService]:
    service = make_service(dl_settings)
    yield service
    service.db.close()


def file_data(size: int, seed: int) -> bytes:
    """A valid (tensor-less) GGUF file of exactly ``size`` bytes."""
    return gguf_bytes(size - 24, seed)


async def pull(service: DownloadService, url: str, **kw):
    try:
        [job] = await service.run_until_complete(
            [service.enqueue(JobSpec(kind="url", url=url, **kw))])
    finally:
        await service.stop()
    return job


def assert_outcome(service: DownloadService, job, data: bytes, dest: Path) -> None:
    """Installed only with every byte right; else one line, nothing installed, and every
    byte the partial counts as done is the file's."""
    models = service.inventory.list_models()
    if job.state == "done":
        assert dest.read_bytes() == data
        assert [m.files[0].sha256 for m in models] == [hashlib.sha256(data).hexdigest()]
        return
    assert job.state == "failed"
    assert job.error and "\n" not in job.error and "Traceback" not in job.error
    assert_no_control_chars(job.error)
    assert not dest.exists() and models == []
    part = dest.with_name(dest.name + ".part")
    [jf] = job.files
    if jf.segments:
        content = part.read_bytes()
        for start, _end, done in jf.segments:
            assert content[start:start + done] == data[start:start + done]


def dest_of(settings, name: str = "model.gguf") -> Path:
    return settings.models_dir / "direct" / name


# -- the reported case ---------------------------------------------------------------------


async def test_reported_case_long_body_is_never_installed(dl_settings, body_path) -> None:
    """206, right Content-Range, a body 4096 bytes longer (Content-Length says so), no
    sha256, on the piece at 4 MiB: refused before a byte is written; after 3 refusals one
    plain GET (honest here) gives the right file."""
    data = file_data(9 * MiB, 1)
    server = HostileServer(data, long_body, lies_on=lambda r: r.range is not None
                           and r.range[0] == 4 * MiB)
    service = make_service(dl_settings)
    try:
        job = await pull(service, server.url())
        assert_outcome(service, job, data, dest_of(dl_settings))
        assert job.state == "done", job.error
        assert server.lies == 3
        assert any(r.method == "GET" and r.range is None for r in server.requests)
    finally:
        service.db.close()
        server.close()


async def test_reported_case_lying_to_the_end_fails_with_one_line(dl_settings, body_path
                                                                  ) -> None:
    """The same server also lying to the plain GET: the job fails naming the fault, the
    pieces that passed are kept, and once the server is fixed a retry resumes them."""
    data = file_data(9 * MiB, 2)
    server = HostileServer(data, long_body, lies_on=lambda r: r.range is None
                           or r.range[0] >= 4 * MiB)
    service = make_service(dl_settings)
    try:
        job = await pull(service, server.url())
        assert_outcome(service, job, data, dest_of(dl_settings))
        assert job.state == "failed"
        assert "server answered 4096 bytes more than" in job.error, job.error
        assert "of model.gguf; not written" in job.error
        segments = [list(seg) for seg in job.files[0].segments]
        kept = sum(seg[2] for seg in segments)
        # Only bytes of the honest first 4 MiB are kept (how much of it depends on how the
        # connections shared it when the job failed).
        assert 0 < kept <= 4 * MiB
        assert all(seg[0] + seg[2] <= 4 * MiB for seg in segments if seg[2])
        server.liar = None
        before = len(server.requests)
        service.retry(job.id)
        try:
            [job] = await service.run_until_complete([job.id])
        finally:
            await service.stop()
        assert job.state == "done", job.error
        assert dest_of(dl_settings).read_bytes() == data
        asked = [r.range for r in server.requests[before:] if r.method == "GET"]
        assert asked and all(r is not None for r in asked)
        assert not any(seg[0] <= r[0] < seg[0] + seg[2] for r in asked for seg in segments)
    finally:
        service.db.close()
        server.close()


# -- every lie, both body paths --------------------------------------------------------------


@pytest.mark.parametrize("liar", LIES, ids=lambda f: f.__name__)
async def test_a_server_that_always_lies_never_installs_a_wrong_byte(
        dl_settings, body_path, small_pieces, liar) -> None:
    data = file_data(1 * MiB, 3)
    # Honest for the first piece, lying for every later one and for the plain GET.
    server = HostileServer(data, liar, lies_on=lambda r: r.range is None or r.range[0] > 0)
    service = make_service(dl_settings)
    try:
        job = await pull(service, server.url())
        assert_outcome(service, job, data, dest_of(dl_settings))
        assert job.state == "failed", "a lying server cannot complete this file"
        assert "server answered" in job.error and "not written" in job.error, job.error
    finally:
        service.db.close()
        server.close()


@pytest.mark.parametrize("liar", [long_body, start_off_by_one, total_mismatch, gzipped,
                                  unframed_long, refuse_416], ids=lambda f: f.__name__)
async def test_lies_on_ranges_only_end_in_the_right_file(dl_settings, body_path,
                                                         small_pieces, liar) -> None:
    data = file_data(1 * MiB, 4)
    server = HostileServer(data, liar, lies_on=lambda r: r.range is not None
                           and r.range[0] >= 512 * KiB)
    service = make_service(dl_settings)
    try:
        job = await pull(service, server.url())
        assert_outcome(service, job, data, dest_of(dl_settings))
        assert job.state == "done", job.error
    finally:
        service.db.close()
        server.close()


async def test_junk_after_a_framed_body_is_never_written(dl_settings, body_path,
                                                         small_pieces) -> None:
    """Content-Length right, then 4096 bytes more on the wire: the body ends at its length,
    the junk is never written, and the connection is not reused."""
    data = file_data(1 * MiB, 5)

    def junk_after(req: Request, data: bytes) -> bytes:
        first, last = _span(req, data)
        return _head("206 Partial Content", {
            "Content-Range": f"bytes {first}-{last}/{len(data)}",
            "Content-Length": str(last - first + 1)}) + data[first:last + 1] + JUNK

    server = HostileServer(data, junk_after, lies_on=lambda r: r.range is not None)
    service = make_service(dl_settings)
    try:
        job = await pull(service, server.url())
        assert_outcome(service, job, data, dest_of(dl_settings))
        assert job.state == "done", job.error
    finally:
        service.db.close()
        server.close()


async def test_a_lie_once_is_retried(dl_settings, body_path, small_pieces) -> None:
    data = file_data(1 * MiB, 6)
    seen: list[int] = []

    def once(req: Request) -> bool:
        seen.append(1)
        return req.range is not None and len(seen) == 3

    server = HostileServer(data, start_off_by_one, lies_on=once)
    service = make_service(dl_settings)
    try:
        job = await pull(service, server.url())
        assert job.state == "done", job.error
        assert dest_of(dl_settings).read_bytes() == data
        assert not any(r.method == "GET" and r.range is None for r in server.requests)
    finally:
        service.db.close()
        server.close()


async def test_how_a_file_was_verified_is_recorded_and_shown(
        dl_settings, small_pieces, monkeypatch, capsys) -> None:
    """Without a sha256 a file is installed only through checked answers, and says so."""
    data = file_data(1 * MiB, 7)
    server = HostileServer(data)
    service = make_service(dl_settings)
    try:
        job = await pull(service, server.url())
        assert job.state == "done", job.error
        assert service.inventory.get_model(job.model_id).files[0].verified == "size+ranges"
        other = await pull(service, server.url("other.gguf"),
                           sha256=hashlib.sha256(data).hexdigest())
        assert service.inventory.get_model(other.model_id).files[0].verified == "sha256"
    finally:
        service.db.close()
        server.close()
    monkeypatch.setenv("MODELDECK_MODELS_DIR", str(dl_settings.models_dir))
    monkeypatch.setenv("MODELDECK_STATE_DIR", str(dl_settings.state_dir))
    monkeypatch.setenv("MODELDECK_SCAN_HF_CACHE", "false")
    assert main(["info", job.model_id]) == 0
    assert "(verified: size+ranges)" in capsys.readouterr().out


def test_cli_pull_from_a_lying_server_is_one_line(tmp_path) -> None:
    data = file_data(1 * MiB, 8)
    server = HostileServer(data, long_body)
    env = {"MODELDECK_MODELS_DIR": str(tmp_path / "models"),
           "MODELDECK_STATE_DIR": str(tmp_path / "state"), "MODELDECK_SCAN_HF_CACHE": "0",
           "MODELDECK_STALL_TIMEOUT": "2"}
    try:
        proc = run_modeldeck("pull", server.url(), "--json", env=env)
    finally:
        server.close()
    assert_one_line_error(proc, "server answered", "more than", "not written")
    assert not (tmp_path / "models/direct/model.gguf").exists()
    listing = run_modeldeck("ls", "--json", env=env)
    assert listing.returncode == 0 and "model.gguf" not in listing.stdout
