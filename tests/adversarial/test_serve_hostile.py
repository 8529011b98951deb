"""``modeldeck serve`` against hostile clients and careless set-ups: no key or a wrong one,
binding beyond loopback without a key, CORS, bodies too big or unreadable, ids that are paths
or hold escape sequences. Each gets one clean line with the right status; the API key never
appears in an answer, a log line or ``serve.json``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("openai")

import openai

from tui.serve.state import read_state

from tests.support.checks import (
    REPO,
    assert_no_control_chars,
    assert_one_line_error,
    run_modeldeck,
)
from tests.support.serve import LIMIT, serve_settings, served, wait_until
from tests.support.tiny_models import tiny_gguf

KEY = "mdk-Secret-Serve-Key-0123456789abcdef"
ASK = [{"role": "user", "content": "hello"}]


def error_of(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    message = body["error"]["message"]
    assert "\n" not in message and "Traceback" not in message
    assert_no_control_chars(message)
    return body["error"]


def test_api_key_is_required_and_compared(tmp_path: Path) -> None:
    settings = serve_settings(tmp_path)
    with served(settings, {"tiny": (tiny_gguf(), "gguf")}, api_key=KEY) as s:
        for key in ("wrong", KEY[:-1], KEY + "x", KEY.lower()):
            c = openai.OpenAI(base_url=s.v1, api_key=key, max_retries=0, timeout=LIMIT)
            with pytest.raises(openai.AuthenticationError) as denied:
                c.models.list()
            assert denied.value.code == "invalid_api_key"
            assert KEY not in str(denied.value.body)
        with httpx.Client(base_url=s.url, timeout=LIMIT) as h:  # no key at all
            for path in ("/v1/models", "/api/ps", "/metrics", "/docs", "/openapi.json"):
                r = h.get(path)
                assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
                error_of(r)
            r = h.post("/v1/chat/completions", json={"model": "tiny", "messages": ASK},
                       headers={"authorization": "Basic " + KEY})
            assert r.status_code == 401
            assert h.get("/api/health").json()["service"] == "modeldeck"  # open: liveness
        good = openai.OpenAI(base_url=s.v1, api_key=KEY, max_retries=0, timeout=LIMIT)
        assert [m.id for m in good.models.list()] == ["tiny"]
        answer = good.chat.completions.create(model="tiny", messages=ASK, max_tokens=4)
        assert answer.usage.completion_tokens == 4
        auth = {"authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=s.url, timeout=LIMIT, headers=auth) as h:
            for path in ("/api/models", "/api/ps", "/metrics", "/openapi.json", "/docs"):
                r = h.get(path)
                assert r.status_code == 200 and KEY not in r.text, path
        info = read_state(tmp_path / "state")
        assert info is not None and info.auth
        assert KEY not in (tmp_path / "state" / "serve.json").read_text()


def test_cli_refuses_an_open_bind_without_a_key_and_never_shows_the_key(tmp_path: Path) -> None:
    env = {"MODELDECK_STATE_DIR": str(tmp_path / "state"),
           "MODELDECK_MODELS_DIR": str(tmp_path / "models")}
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        assert_one_line_error(run_modeldeck("serve", "--host", host, env=env),
                              "refusing to listen", "API key", "ssh -L")
    assert not (tmp_path / "state" / "serve.json").exists()
    assert_one_line_error(run_modeldeck("serve", "--api-key-env", "NOT_SET_ANYWHERE", env=env),
                          "NOT_SET_ANYWHERE is not set")
    short = {**env, "MODELDECK_SERVE_API_KEY": "short"}
    assert_one_line_error(run_modeldeck("serve", "--host", "0.0.0.0", env=short),
                          "5 characters", "16")
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)  # opening it for reading would block for ever
    assert_one_line_error(run_modeldeck("serve", "--api-key-file", str(fifo), env=env),
                          "not a regular file")
    assert_one_line_error(run_modeldeck("serve", "--api-key-file", str(tmp_path / "none"),
                                        env=env), "cannot read the API key file")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert_one_line_error(run_modeldeck("serve", "--port", port, env=env),
                              f"127.0.0.1:{port}", "pick another --port")

    # with a key from a file, on every interface: it runs, and the key shows nowhere
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    hf_token = "hf_ServeSecretServeSecretServe42"
    full = {**os.environ, **env, "PYTHONPATH": str(REPO), "MODELDECK_DEBUG": "",
            "HF_TOKEN": hf_token}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui", "serve", "--host", "0.0.0.0", "--port", "0",
         "--api-key-file", str(key_file)],
        env=full, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: read_state(tmp_path / "state") is not None or proc.poll() is not None,
                   "the server to start")
        info = read_state(tmp_path / "state")
        assert info is not None and info.auth and info.host == "0.0.0.0"
        assert KEY.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        with httpx.Client(base_url=info.url, timeout=LIMIT) as h:
            assert h.get("/v1/models").status_code == 401
            r = h.get("/v1/models", headers={"authorization": f"Bearer {KEY}"})
            assert r.status_code == 200
            r = h.post("/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                       json={"model": "nope", "messages": ASK})
            assert r.status_code == 404 and KEY not in r.text
            for path in ("/api/models", "/api/resources", "/openapi.json", "/metrics",
                         "/api/downloads"):
                r = h.get(path, headers={"authorization": f"Bearer {KEY}"})
                assert r.status_code == 200 and KEY not in r.text and hf_token not in r.text
        # the CLI finds it and uses the key the settings point at (here: the file)
        ps = run_modeldeck("ps", "--json", env={**env, "MODELDECK_SERVE_API_KEY_FILE":
                                                 str(key_file)})
        assert ps.returncode == 0 and json.loads(ps.stdout)["server"] == info.url
        assert_one_line_error(run_modeldeck("ps", env=env), "needs its API key")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=LIMIT)
    assert proc.returncode == 0, err
    assert KEY not in out and KEY not in err
    assert hf_token not in out and hf_token not in err
    assert "clients must send the API key" in out


def test_cors_is_off_unless_allow_listed(tmp_path: Path) -> None:
    preflight = {"origin": "https://evil.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization,content-type"}
    with served(serve_settings(tmp_path)) as s, httpx.Client(base_url=s.url) as h:
        r = h.options("/v1/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
        r = h.get("/v1/models", headers={"origin": "https://evil.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    allowed = serve_settings(tmp_path / "b", serve_cors_origins=("http://localhost:3000",))
    with served(allowed) as s, httpx.Client(base_url=s.url) as h:
        r = h.options("/v1/chat/completions",
                      headers={**preflight, "origin": "http://localhost:3000"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
        r = h.options("/v1/chat/completions", headers=preflight)
        assert r.headers.get("access-control-allow-origin") != "https://evil.example"
        r = h.get("/v1/models", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_bodies_too_big_or_unreadable(tmp_path: Path) -> None:
    with served(serve_settings(tmp_path), {"tiny": (tiny_gguf(), "gguf")},
                max_body=1 << 20) as s, httpx.Client(base_url=s.url, timeout=LIMIT) as h:
        big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
        r = h.post("/v1/chat/completions", json=big)
        assert r.status_code == 413 and error_of(r)["code"] == "body_too_large"

        def chunks():  # no Content-Length: counted as it comes
            yield b'{"model":"tiny","messages":[{"role":"user","content":"'
            for _ in range(40):
                yield b"x" * 65536
            yield b'"}]}'

        r = h.post("/v1/chat/completions", content=chunks(),
                   headers={"content-type": "application/json"})
        assert r.status_code == 413
        json_type = {"content-type": "application/json"}
        for body in (b"{bad", b"[" * 500_000, b'{"model":' + b"9" * 5000 + b"}", b"\xff\xfe",
                     b'"just a string"', b"null"):
            r = h.post("/v1/chat/completions", content=body, headers=json_type)
            assert r.status_code == 400, (body[:20], r.text)
            error_of(r)
        for bad in ({"model": "tiny", "messages": ASK, "max_tokens": "many"},
                    {"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]},
                    {"model": "tiny", "messages": [{"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
                    {"model": 12, "messages": ASK},
                    {"messages": ASK}):
            r = h.post("/v1/chat/completions", json=bad)
            assert r.status_code == 400, (bad, r.text)
            error_of(r)
        # the server is still fine
        r = h.post("/v1/chat/completions", json={"model": "tiny", "messages": ASK,
                                                 "max_tokens": 2})
        assert r.status_code == 200


@pytest.mark.parametrize("model_id", [
    "../x", "../../etc/passwd", "/abs/path.gguf", "a/b", "a\x1b[2Jb", "a\nb", "bidi\u202eexe",
    ".hidden", "x" * 500, "",
])
def test_hostile_model_ids_get_one_clean_line(tmp_path: Path, model_id: str) -> None:
    with served(serve_settings(tmp_path), {"tiny": (tiny_gguf(), "gguf")}) as s, \
            httpx.Client(base_url=s.url, timeout=LIMIT) as h:
        r = h.post("/v1/chat/completions", json={"model": model_id, "messages": ASK})
        assert r.status_code == 400, r.text
        error = error_of(r)
        assert error["param"] == "model"
        r = h.post("/v1/embeddings", json={"model": model_id, "input": "x"})
        assert r.status_code == 400
        error_of(r)
        r = h.post(f"/api/models/{quote(model_id, safe='')}/load", json={})
        assert r.status_code in (400, 404), r.text
        error_of(r)
        assert s.loaded() == []  # nothing was loaded for any of them


def test_clients_that_hang_up_mid_stream_leave_no_noise(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    """Hanging up after the first token, again and again: the server stops writing to the
    closed connections (no 'socket.send() raised exception.' flood on the terminal it shares
    with the dashboard), stops each answer and keeps answering."""
    settings = serve_settings(tmp_path, serve_max_tokens=400)
    with served(settings, {"tiny": (tiny_gguf(), "gguf")}) as s, \
            httpx.Client(base_url=s.url, timeout=LIMIT) as h:
        body = {"model": "tiny", "messages": ASK, "temperature": 0, "max_tokens": 400,
                "stream": True}
        caplog.set_level("WARNING")
        for _ in range(20):
            with h.stream("POST", "/v1/chat/completions", json=body) as r:
                next(r.iter_lines())
        wait_until(lambda: s.stats()[0].running == 0, "the answers to stop")
        assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
        r = h.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 4})
        assert r.status_code == 200
