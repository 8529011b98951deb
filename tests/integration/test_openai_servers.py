"""The OpenAI-compatible client against other servers, as they really behave.

* The real ``llama_cpp.server`` (a subprocess serving the tiny GGUF): token counts against
  the server's own count, ``usage`` marked reported/estimated, any model name accepted
  though the list shows a file path, and a run while another client holds the server (its
  ``/v1/models`` blocks until that stream ends).
* Local fakes (aiohttp) of what llama.cpp's ``llama-server``, vLLM and a LiteLLM proxy send:
  ``""`` chunks for incomplete UTF-8, usage or not, a file path as the only listed model,
  LiteLLM's auth errors (400/401/500), rate limits, other errors.
* A plain-socket server that goes silent (after its headers, or before): cancelling returns
  at once and the server sees the connection closed.

Every wait is a condition with a generous timeout, never a speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tui.cli import main
from tui.runtime import EndpointError, GenParams, ModelSpec
from tui.runtime.backends import openai as backend
from tui.runtime.backends.openai import list_models
from tui.runtime.service import RuntimeService

from tests.support.checks import REPO, assert_no_control_chars
from tests.support.runtime import make_runtime
from tests.support.tiny_models import tiny_gguf

pytestmark = pytest.mark.timeout(180)

HELLO = [{"role": "user", "content": "hello"}]
KEY = "sk-litellm-5f3c9a1e7b2d4c6a8e0f"
GGUF_PATH = "/models/qwen2.5-7b-instruct-q4_k_m.gguf"
VLLM_MODEL = "Qwen/Qwen2.5-7B-Instruct"
# 40 tokens as llama-server streams them: "" while a character's UTF-8 is incomplete
PIECES = ["Hi", " there", " ", "", "", "", "😀", ",", " caf", "", "é", " ", "", "", "中", "",
          "", "文", "!", " ", "", "", "", "🦙", " ok", ".", " ", "", "", "€", " and", " more",
          " words", " here", " to", " make", " forty", " tokens", " in", " all"]
assert len(PIECES) == 40 and sum(1 for p in PIECES if p) == 27


def wait_for(predicate, timeout: float = 30.0, step: float = 0.02) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds passed."""
    done = threading.Event()
    for _ in range(int(timeout / step)):
        if predicate():
            return True
        done.wait(step)
    return bool(predicate())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def runtime(tmp_path: Path):
    rt = make_runtime(tmp_path)
    yield rt
    await rt.aclose()


async def answer(rt: RuntimeService, spec: ModelSpec, params: GenParams | None = None):
    text, metrics = [], None
    async for item in rt.generate(spec, HELLO, params or GenParams(max_tokens=100)):
        if isinstance(item, str):
            text.append(item)
        else:
            metrics = item
    assert metrics is not None
    return "".join(text), metrics


# -- the real llama_cpp.server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` on the tiny GGUF; its base URL once it answers.

    ``--interrupt_requests False``: a second request waits for the stream in progress (the
    default makes it cut that stream short instead)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    for module in ("fastapi", "uvicorn", "sse_starlette", "starlette_context",
                   "pydantic_settings"):
        pytest.importorskip(module, reason="llama_cpp.server needs 'llama-cpp-python[server]'")
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_gguf()),
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
             "--n_threads", "1", "--interrupt_requests", "False"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url + "/v1/models", timeout=2).status_code == 200
        return proc.poll() is not None

    try:
        assert wait_for(up, 120, 0.2) and proc.poll() is None, (
            "llama_cpp.server did not start:\n" + log_path.read_text(errors="replace")[-3000:])
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def stream_has_usage(url: str, body: dict[str, Any]) -> bool:
    """Whether the server's own stream for ``body`` carries a ``usage`` object."""
    body = dict(body, stream=True, stream_options={"include_usage": True})
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as resp:
        for line in resp.iter_lines():
            data = line[5:].strip() if line.startswith("data:") else ""
            if data and data != "[DONE]" and isinstance(json.loads(data).get("usage"), dict):
                return True
    return False


async def test_llama_cpp_server_counts_and_any_model_name(llama_server: str,
                                                          runtime: RuntimeService) -> None:
    listed = list_models(llama_server)
    assert listed == [str(tiny_gguf())]  # it lists the file's path ...
    body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 40, "temperature": 0}
    reference = httpx.post(llama_server + "/v1/chat/completions", json=body, timeout=60).json()
    expected = reference["usage"]["completion_tokens"]
    assert expected == 40  # the tiny model does not stop early
    has_usage = stream_has_usage(llama_server, body)
    # ... and answers to any name: no local refusal
    for name in ("gpt-4o-mini", listed[0]):
        text, m = await answer(runtime, ModelSpec.endpoint(llama_server, name),
                               GenParams(temperature=0, max_tokens=40))
        assert text == reference["choices"][0]["message"]["content"]
        assert m.completion_tokens == expected and m.finish_reason == "length"
        # llama_cpp.server 0.3 ignores stream_options: no usage in the stream, so estimated
        assert m.usage == ("reported" if has_usage else "estimated")
        assert ("40 tokens (estimated)" in m.summary()) == (not has_usage)


class Holder:
    """Another client of the server: it asks for a long stream and reads none of it, so the
    server (serialising requests) stays busy until :meth:`release`."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        # end tokens banned: 4000 tokens of SSE fill every buffer on the way, then it waits
        body = json.dumps({"model": "other", "messages": HELLO, "stream": True,
                           "max_tokens": 4000, "temperature": 0,
                           "logit_bias": {"2": -100, "259": -100, "260": -100}}).encode()
        self.sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                          % len(body) + body)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def server_busy(url: str) -> bool:
    try:
        list_models(url, timeout=0.5)
    except EndpointError:
        return True
    return False


def test_run_while_another_client_streams(llama_server: str, tmp_path: Path) -> None:
    holder = Holder(llama_server)
    try:
        assert wait_for(lambda: server_busy(llama_server), 60), "the server never got busy"
        env = dict(os.environ, MODELDECK_CONFIG=str(tmp_path / "none.toml"),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                            os.environ.get("PYTHONPATH")])))
        proc = subprocess.Popen(
            [sys.executable, "-m", "tui", "--models-dir", str(tmp_path / "m"), "--state-dir",
             str(tmp_path / "s"), "run", "--endpoint", llama_server, "--model", "any-name",
             "-p", "hello", "--max-tokens", "8", "--temperature", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True)
        reader.start()
        seen: list[str] = []

        def loaded() -> bool:
            while not lines.empty():
                seen.append(lines.get())
            return any(x.startswith("loaded ") for x in seen) or proc.poll() is not None

        # the model list does not come while the other stream runs: the load goes on anyway
        assert wait_for(loaded, 60) and any(x.startswith("loaded ") for x in seen), seen
        assert proc.poll() is None  # its request waits for the server
        assert server_busy(llama_server)
    finally:
        holder.release()
    out = proc.stdout.read()
    assert proc.wait(60) == 0, seen
    reader.join(10)
    seen += list(lines.queue)
    assert out.strip() and "8 tokens (estimated)" in "".join(seen), seen


# -- fakes of llama-server, vLLM and LiteLLM -----------------------------------------------------

# LiteLLM 1.108's answers, as seen from a real proxy or read in its source (proxy/auth/)
LITELLM_ERRORS: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = {
    # a proxy without a database, given a key that is not its master key (seen)
    "auth400": (400, {"error": {"message": "No connected db.", "type": "no_db_connection",
                                "param": None, "code": "400"}}, {}),
    # with a database, a key it does not know (user_api_key_auth)
    "auth401": (401, {"error": {"message": "Authentication Error, Invalid proxy server token "
                                f"passed. Received API Key = sk-...{KEY[-4:]}, Key Hash "
                                f"(Token) =e3b0c44298fc1c14. Unable to find token in cache "
                                f"or `LiteLLM_VerificationTokenTable` {KEY}",
                                "type": "auth_error", "param": "None", "code": "401"}}, {}),
    # an upstream provider refusing the key the proxy holds, passed on as a 500
    "auth500": (500, {"error": {"message": "litellm.AuthenticationError: AuthenticationError: "
                                "OpenAIException - Incorrect API key provided: sk-proj-****. "
                                "You can find your API key at https://platform.openai.com.",
                                "type": None, "param": None, "code": "500"}}, {}),
    "limited": (429, {"error": {"message": "litellm.RateLimitError: Rate limit reached",
                                "type": "throttling_error", "param": None, "code": "429"}},
                {"Retry-After": "7"}),
    "crash": (500, {"error": {"message": "litellm.InternalServerError: upstream connect error "
                              "\x1b[31mreset\x1b[0m", "type": None, "param": None,
                              "code": "500"}}, {}),
    "toolong": (400, {"error": {"message": "litellm.BadRequestError: This model's maximum "
                                "context length is 4096 tokens. However, you requested 5000 "
                                "tokens (max_tokens=5000).", "type": "invalid_request_error",
                                "param": None, "code": "400"}}, {}),
    "nomodel": (400, {"error": {"message": "Invalid model name passed in model=nomodel. Call "
                                "`/v1/models` to view available models for your key.",
                                "type": "invalid_request_error", "param": "model",
                                "code": "400"}}, {}),
}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          usage: dict[str, int] | None = None) -> bytes:
    event: dict[str, Any] = {"object": "chat.completion.chunk", "choices": []}
    if delta is not None:
        event["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    if usage is not None:
        event["usage"] = usage
    return b"data: " + json.dumps(event).encode() + b"\n\n"


class Fakes:
    """aiohttp on 127.0.0.1 in a thread. The first path segment picks a flavour:

    ``llamacpp``  llama-server: lists a GGUF path, answers any name, one chunk per token
                  (``""`` while UTF-8 is incomplete), role chunk with ``content: null``, an
                  end chunk with ``{}``; usage only when ``stream_options`` asks
    ``pyllama``   llama_cpp.server's stream: the same tokens, never a usage
    ``vllm``      role chunk ``{"role": "assistant", "content": ""}``, 5 tokens, the last
                  chunk ``""`` with ``finish_reason``; no usage
    ``litellm``   the key must be :data:`KEY`; the model name picks an error of
                  :data:`LITELLM_ERRORS` (``ok``: a 3-token answer with usage; ``m1``: the
                  same, but usage says 2, LiteLLM's own count); lists them all but
                  ``nomodel``

    ``llamacpp`` and ``pyllama`` ignore ``max_tokens`` (to test the client's own limit)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url(self, flavour: str) -> str:
        return f"http://127.0.0.1:{self.port}/{flavour}"

    def start(self) -> Fakes:
        app = web.Application()
        app.router.add_get("/{flavour}/v1/models", self._models)
        app.router.add_post("/{flavour}/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._thread.start()
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @staticmethod
    def _litellm_key_error(request: web.Request) -> web.Response | None:
        given = request.headers.get("Authorization")
        if given == f"Bearer {KEY}":
            return None
        if given is None:  # seen
            return web.json_response(
                {"error": {"message": "Authentication Error, No api key passed in.",
                           "type": "auth_error", "param": "None", "code": "401"}}, status=401)
        status, body, _ = LITELLM_ERRORS["auth401"]
        return web.json_response(body, status=status)

    async def _models(self, request: web.Request) -> web.Response:
        flavour = request.match_info["flavour"]
        if flavour == "litellm":
            denied = self._litellm_key_error(request)
            if denied is not None:
                return denied
            names = ["m1", "ok", *(n for n in LITELLM_ERRORS if n != "nomodel")]
        elif flavour == "vllm":
            names = [VLLM_MODEL]
        else:
            names = [GGUF_PATH]
        return web.json_response({"object": "list", "data": [{"id": n} for n in names]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        flavour = request.match_info["flavour"]
        body = await request.json()
        self.bodies.append(body)
        if flavour == "litellm":
            denied = self._litellm_key_error(request)
            if denied is not None:
                return denied
            if body["model"] in LITELLM_ERRORS:
                status, error, headers = LITELLM_ERRORS[body["model"]]
                return web.json_response(error, status=status, headers=headers)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if flavour == "vllm":
            await resp.write(chunk({"role": "assistant", "content": ""}))
            for piece in ("one", " two", " three", " four", " five"):
                await resp.write(chunk({"content": piece}))
            await resp.write(chunk({"content": ""}, finish="stop"))
        elif flavour == "litellm":
            for piece in ("a", "b", "c"):
                await resp.write(chunk({"content": piece}))
            await resp.write(chunk({}, finish="stop"))
            # m1: the model's server sent no usage, LiteLLM counted with its own tokenizer
            done = 2 if body["model"] == "m1" else 3
            await resp.write(chunk(usage={"prompt_tokens": 9, "completion_tokens": done,
                                          "total_tokens": 9 + done}))
        else:
            await resp.write(chunk({"role": "assistant", "content": None}))
            for piece in PIECES:
                await resp.write(chunk({"content": piece}))
            await resp.write(chunk({}, finish="length"))
            asked = (body.get("stream_options") or {}).get("include_usage")
            if flavour == "llamacpp" and asked:
                await resp.write(chunk(usage={"prompt_tokens": 11, "completion_tokens": 40,
                                              "total_tokens": 51}))
        await resp.write(b"data: [DONE]\n\n")
        return resp


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    srv = Fakes().start()
    yield srv
    srv.stop()


async def test_empty_utf8_chunks_are_tokens(fakes: Fakes, runtime: RuntimeService) -> None:
    text, m = await answer(runtime, ModelSpec.endpoint(fakes.url("pyllama"), GGUF_PATH))
    assert text == "".join(PIECES)
    assert m.completion_tokens == 40 and m.usage == "estimated"  # not 27
    assert m.summary().startswith("40 tokens (estimated), ")
    # a server that gives usage (asked for with stream_options) is believed, and marked
    text, m = await answer(runtime, ModelSpec.endpoint(fakes.url("llamacpp"), GGUF_PATH))
    assert fakes.bodies[-1]["stream_options"] == {"include_usage": True}
    assert m.completion_tokens == 40 and m.prompt_tokens == 11 and m.usage == "reported"
    assert "(estimated)" not in m.summary()


async def test_max_tokens_counts_empty_chunks(fakes: Fakes, runtime: RuntimeService) -> None:
    # the server ignores max_tokens: the client stops at the 11th token chunk
    text, m = await answer(runtime, ModelSpec.endpoint(fakes.url("pyllama"), GGUF_PATH),
                           GenParams(max_tokens=10))
    assert text == "".join(PIECES[:10]) and m.completion_tokens == 10
    assert m.finish_reason == "length" and m.usage == "estimated"


async def test_role_and_end_chunks_are_not_tokens(fakes: Fakes, runtime: RuntimeService) -> None:
    text, m = await answer(runtime, ModelSpec.endpoint(fakes.url("vllm"), VLLM_MODEL),
                           GenParams(max_tokens=5))
    assert text == "one two three four five"
    assert m.completion_tokens == 5 and m.finish_reason == "stop" and m.usage == "estimated"


def test_listed_file_path_does_not_refuse_a_name(fakes: Fakes, tmp_path: Path, capsys) -> None:
    base = ["--models-dir", str(tmp_path / "m"), "--state-dir", str(tmp_path / "s"), "run"]
    for name in ("qwen2.5-7b", GGUF_PATH):
        assert main([*base, "--endpoint", fakes.url("llamacpp"), "--model", name, "-p", "hi",
                     "--max-tokens", "100"]) == 0
        out, err = capsys.readouterr()
        assert out.strip() == "".join(PIECES).strip() and "40 tokens, " in err
        assert fakes.bodies[-1]["model"] == name


@pytest.fixture
def litellm_cli(fakes: Fakes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    """``run(model, key=KEY) -> (code, error line)`` of ``modeldeck run`` against the LiteLLM
    fake with the key in ``$PROXY_KEY``; the key never shows, the error is one line."""
    monkeypatch.setenv("MODELDECK_CONFIG", str(tmp_path / "none.toml"))

    def run(model: str, key: str | None = KEY) -> tuple[int, str]:
        if key is None:
            monkeypatch.delenv("PROXY_KEY", raising=False)
        else:
            monkeypatch.setenv("PROXY_KEY", key)
        code = main(["--models-dir", str(tmp_path / "m"), "--state-dir", str(tmp_path / "s"),
                     "run", "--endpoint", fakes.url("litellm"), "--model", model,
                     "--api-key-env", "PROXY_KEY", "-p", "hi"])
        out, err = capsys.readouterr()
        for text in (out, err):
            assert KEY not in text and KEY[:16] not in text and "Traceback" not in text
            assert_no_control_chars(text)
        errors = [x for x in err.splitlines() if x.startswith("modeldeck: error:")]
        assert len(errors) == (1 if code else 0), err
        return code, errors[0] if errors else err

    return run


@pytest.mark.parametrize("model, status", [("auth400", 400), ("auth401", 401),
                                           ("auth500", 500)])
def test_litellm_auth_errors_say_bad_key(litellm_cli, model: str, status: int) -> None:
    code, line = litellm_cli(model)
    assert code == 1
    assert f"refused the API key (HTTP {status})" in line
    assert "check the key in $PROXY_KEY" in line and "--api-key-env" in line


def test_litellm_wrong_or_missing_key_at_load(litellm_cli) -> None:
    code, line = litellm_cli("m1", key="sk-wrong-key-000000000")
    assert code == 1 and "refused the API key (HTTP 401)" in line
    assert "$PROXY_KEY" in line and "sk-wrong-key-000000000" not in line
    code, line = litellm_cli("m1", key=None)
    assert code == 1 and "wants an API key (HTTP 401) and none was sent" in line
    assert "put it in $PROXY_KEY" in line


def test_litellm_other_errors(litellm_cli) -> None:
    code, line = litellm_cli("limited")
    assert code == 1 and "rate limiting requests (HTTP 429)" in line and "try again in 7 s" in line
    code, line = litellm_cli("crash")
    assert code == 1 and "server error (HTTP 500): litellm.InternalServerError" in line
    assert "\\x1b[31mreset" in line and "API key" not in line
    code, line = litellm_cli("toolong")
    assert code == 1 and "refused the request (HTTP 400)" in line and "maximum context" in line
    assert "API key" not in line
    code, line = litellm_cli("nomodel")
    assert code == 1 and "does not serve 'nomodel' (HTTP 400)" in line and "it serves: m1" in line
    code, out = litellm_cli("ok")
    assert code == 0 and "3 tokens, " in out and "estimated" not in out


def test_usage_below_the_chunks_is_not_believed(litellm_cli) -> None:
    # 3 chunks carried tokens; LiteLLM's usage (its tokenizer's guess) says 2
    code, out = litellm_cli("m1")
    assert code == 0 and "3 tokens (estimated), " in out
    assert "prompt 9 tok" not in out  # its prompt count is not shown either


# -- a silent server: cancel at once -----------------------------------------------------------


class SilentServer:
    """Plain sockets on 127.0.0.1: ``GET /v1/models`` is answered; a chat request gets its
    headers (``headers``) or nothing at all (``nothing``, like a server that starts its answer
    only after the prompt), then silence for up to 30 s. :attr:`asked` is set when a chat
    request came, :attr:`left` when the client closed that connection (within the 30 s).
    With ``tls`` (an ``ssl.SSLContext``) it speaks HTTPS."""

    def __init__(self, mode: str, tls: ssl.SSLContext | None = None) -> None:
        self.mode = mode
        self.tls = tls
        self.asked = threading.Event()
        self.left = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:
                return
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    return
                data += more
            if data.startswith(b"GET"):
                body = b'{"object": "list", "data": [{"id": "slow"}]}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                             + body)
                return
            self.asked.set()
            if self.mode == "headers":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
            conn.settimeout(30)
            try:
                while conn.recv(65536):  # the rest of the request body; then silence
                    pass
            except TimeoutError:
                return  # 30 s of silence passed without the client leaving
            except OSError:
                pass
            self.left.set()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("mode", ["headers", "nothing"])
@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("how", ["cancel", "close"])
async def test_cancel_while_the_server_is_silent(runtime: RuntimeService, mode: str, scheme: str,
                                                 how: str, tmp_path: Path, monkeypatch) -> None:
    tls = None
    if scheme == "https":
        trustme = pytest.importorskip("trustme", reason="the HTTPS case needs trustme")
        ca = trustme.CA()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(tls)
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # httpx trusts it
    server = SilentServer(mode, tls)
    try:
        spec = ModelSpec.endpoint(server.url, "slow")
        items: list[Any] = []

        async def consume() -> None:
            async for item in runtime.generate(spec, HELLO, GenParams(max_tokens=10)):
                items.append(item)

        task = asyncio.create_task(consume())
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, server.asked.wait, 30)
        if how == "cancel":  # the console's Esc
            assert runtime.cancel()
            await asyncio.wait_for(task, 5)
            assert items and items[-1].finish_reason == "cancelled"
            assert items[-1].completion_tokens == 0 and items[-1].usage == "estimated"
        else:  # Ctrl-C in 'run': the task reading the answer is cancelled
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
        # the server saw the connection closed, long before its 30 s of silence ended
        assert await loop.run_in_executor(None, server.left.wait, 5)
        assert runtime.loaded()[0].running == 0
    finally:
        server.close()


async def test_silent_model_list_does_not_fail_a_load(runtime: RuntimeService,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A server whose ``/v1/models`` says nothing (busy) still loads: the answer decides."""
    monkeypatch.setattr(backend, "PROBE_TIMEOUT", 0.3, raising=False)
    release = threading.Event()
    sock = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = sock.accept()
                threading.Thread(target=lambda c=conn: (release.wait(30), c.close()),
                                 daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        info = await runtime.load(ModelSpec.endpoint(url, "anything"))
        assert info.kind == "openai" and info.name == "anything"
    finally:
        release.set()
        sock.close()
