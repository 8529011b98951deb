"""Remote engines: OpenAI-compatible upstreams registered by name, listed and proxied.

The upstream is the real ``llama_cpp.server`` (a child process over a tiny GGUF) for the
answers, and a small aiohttp server recording headers for the key and disconnect checks;
``modeldeck serve`` is a real server driven by the official ``openai`` client.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tui.cli import main
from tui.remote.registry import add_remote

from tests.support.serve import LIMIT, serve_settings, served, wait_until
from tests.support.tiny_models import tiny_gguf
from tests.support.upstream import FakeUpstream, llama_server

UPSTREAM_KEY = "sk-upstream-0123456789abcdef"
CLIENT_KEY = "sk-client-for-modeldeck-987654"
ASK = [{"role": "user", "content": "say something about decks"}]


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real llama_cpp.server over a tiny GGUF (its base URL, without /v1)."""
    _need("llama_cpp")
    for module in ("uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"llama_cpp.server needs {module}, which is not installed")
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with llama_server(tiny_gguf(), log) as url:
        yield url


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_remote_add_ls_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", UPSTREAM_KEY)
    state = str(tmp_path / "state")
    with FakeUpstream(models={"object": "list", "data": [{"id": "a"}, {"id": "b/c"}]},
                      key=UPSTREAM_KEY) as up:
        code, out, _ = cli(capsys, "--state-dir", state, "remote", "add", "gpu1", up.url,
                           "--key-env", "UP_KEY")
        assert code == 0 and "gpu1" in out and UPSTREAM_KEY not in out
        stored = (tmp_path / "state" / "remotes.toml").read_text()
        assert "UP_KEY" in stored and UPSTREAM_KEY not in stored
        code, out, err = cli(capsys, "--state-dir", state, "remote", "ls")
        assert code == 0 and err == ""
        row = next(line for line in out.splitlines() if line.startswith("gpu1"))
        assert row.split()[-2:] == ["yes", "2"] and UPSTREAM_KEY not in out
        # the key reached the upstream, read from the variable at request time
        assert up.requests[-1][0]["Authorization"] == f"Bearer {UPSTREAM_KEY}"
        code, out, err = cli(capsys, "--state-dir", state, "ls")
        assert code == 0 and "gpu1/a" in out and "gpu1/b/c" in out and "remote" in out
        code, out, _ = cli(capsys, "--state-dir", state, "ls", "--json")
        ids = [m["id"] for m in json.loads(out)]
        assert ids == ["gpu1/a", "gpu1/b/c"]
    # the upstream is gone: its models are absent, one warning line, ls still works
    code, out, err = cli(capsys, "--state-dir", state, "ls")
    assert code == 0 and "gpu1/" not in out
    assert err.count("\n") == 1 and "gpu1 is unreachable" in err
    code, out, err = cli(capsys, "--state-dir", state, "remote", "ls")
    assert code == 0 and "no" in out.split("\n")[1].split() and "unreachable" in err
    code, out, _ = cli(capsys, "--state-dir", state, "remote", "rm", "gpu1")
    assert code == 0
    code, out, _ = cli(capsys, "--state-dir", state, "remote", "ls")
    assert code == 0 and "No remotes" in out


@pytest.mark.parametrize(("args", "needle"), [
    (["a/b", "http://h:1"], "not a remote name"),
    (["..", "http://h:1"], "not a remote name"),
    (["x\x1b[2J", "http://h:1"], "not a remote name"),
    (["ok", "ftp://h/"], "not an http(s) URL"),
    (["ok", "http://user:pw@h:1/v1"], "credentials"),
    (["ok", "http://:tok@h:1/v1"], "credentials"),
    (["ok", "http://h:99999/"], "not a valid URL"),
    (["ok", "http://h:1/v1?key=x"], "query"),
    (["ok", "http://h:1", "--key-env", "sk-real-secret-key"], "environment variable"),
])
def test_remote_add_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      args: list[str], needle: str) -> None:
    state = tmp_path / "state"
    code, out, err = cli(capsys, "--state-dir", str(state), "remote", "add", *args)
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err
    assert "\x1b" not in err and "pw@" not in err and "sk-real-secret-key" not in err
    assert not (state / "remotes.toml").exists()


def test_remote_add_twice_keeps_the_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    state = str(tmp_path / "state")
    assert cli(capsys, "--state-dir", state, "remote", "add", "r", "http://h:1")[0] == 0
    code, _, err = cli(capsys, "--state-dir", state, "remote", "add", "r", "http://other:2")
    assert code != 0 and "exists already" in err
    assert "http://h:1" in (tmp_path / "state" / "remotes.toml").read_text()


def test_serve_proxies_to_llama_cpp_server(upstream: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    openai = pytest.importorskip("openai")
    settings = serve_settings(tmp_path)
    add_remote(settings.state_dir, "lc", upstream)
    with served(settings) as s:
        c = openai.OpenAI(base_url=s.v1, api_key="none", max_retries=0, timeout=LIMIT)
        models = c.models.list().data
        assert len(models) == 1 and models[0].owned_by == "lc"
        model = models[0].id
        assert model.startswith("lc/")
        assert c.models.retrieve(model).owned_by == "lc"
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("lc/no-such-model")

        whole = c.chat.completions.create(model=model, messages=ASK, max_tokens=8,
                                          temperature=0)
        assert whole.choices[0].message.content is not None
        assert whole.usage is not None and whole.usage.completion_tokens > 0

        chunks = list(c.chat.completions.create(model=model, messages=ASK, max_tokens=8,
                                                temperature=0, stream=True))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert len(chunks) > 2 and text == whole.choices[0].message.content

        done = c.completions.create(model=model, prompt="the deck", max_tokens=4,
                                    temperature=0)
        assert done.usage.completion_tokens > 0

        info = httpx.get(s.url + "/api/remotes", timeout=LIMIT).json()["remotes"]
        assert info[0]["models"] == [model] and info[0]["metrics_url"] == upstream + "/metrics"

    # the CLI: modeldeck run <remote>/<model> through the OpenAI client backend
    code, out, err = cli(capsys, "--state-dir", str(settings.state_dir), "run", model, "-p",
                         "hello", "--max-tokens", "4", "--temperature", "0")
    assert code == 0, err
    assert out.strip()


def test_proxy_sends_the_remote_key_not_the_clients(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    openai = pytest.importorskip("openai")
    monkeypatch.setenv("UP_KEY", UPSTREAM_KEY)
    settings = serve_settings(tmp_path)
    caplog.set_level(logging.DEBUG)
    with FakeUpstream(key=UPSTREAM_KEY) as up:
        add_remote(settings.state_dir, "up", up.url, "UP_KEY")
        with served(settings, api_key=CLIENT_KEY) as s:
            c = openai.OpenAI(base_url=s.v1, api_key=CLIENT_KEY, max_retries=0, timeout=LIMIT)
            answer = c.chat.completions.create(model="up/m1", messages=ASK, extra_body={
                "top_k": 7})
            assert answer.choices[0].message.content == "hi there"
            assert answer.usage.total_tokens == 5
            streamed = list(c.chat.completions.create(
                model="up/m1", messages=ASK, stream=True,
                stream_options={"include_usage": True}))
            assert streamed[-1].usage.total_tokens == 5
            vectors = c.embeddings.create(model="up/m1", input="x")
            assert vectors.data[0].embedding == [0.5, 0.25]
            with pytest.raises(openai.InternalServerError) as failed:
                c.chat.completions.create(model="up/fail", messages=ASK)
            raw = httpx.get(s.v1 + "/models", timeout=LIMIT,
                            headers={"Authorization": f"Bearer {CLIENT_KEY}"}).text
            remotes = httpx.get(s.url + "/api/remotes", timeout=LIMIT,
                                headers={"Authorization": f"Bearer {CLIENT_KEY}"}).text
    chats = [(h, b) for h, b in up.requests if b is not None]
    assert len(chats) == 4
    for headers, body in chats:
        assert headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert CLIENT_KEY not in json.dumps(headers)
        assert body["model"] in ("m1", "fail")
    assert chats[0][1]["top_k"] == 7  # the client's fields reach the upstream as they were
    error = failed.value
    assert error.status_code == 500 and "engine died" in error.message
    assert UPSTREAM_KEY not in error.message and "\x1b" not in error.message
    assert "up/m1" in raw and UPSTREAM_KEY not in raw
    assert UPSTREAM_KEY not in remotes and "UP_KEY" in remotes
    assert UPSTREAM_KEY not in caplog.text


def test_client_disconnect_closes_the_upstream_request(tmp_path: Path) -> None:
    settings = serve_settings(tmp_path)
    with FakeUpstream() as up:
        add_remote(settings.state_dir, "up", up.url)
        with served(settings) as s, httpx.Client(timeout=LIMIT) as c, c.stream(
                "POST", s.v1 + "/chat/completions",
                json={"model": "up/endless", "messages": ASK, "stream": True}) as r:
            assert r.status_code == 200
            first = next(r.iter_raw())
            assert first.startswith(b"data: ")
            assert up.streaming.is_set() and not up.left.is_set()
            r.close()  # the client goes away mid-answer
            wait_until(up.left.is_set, "the upstream to see the disconnect")


def test_unreachable_remote_is_a_502_and_nothing_else_fails(tmp_path: Path) -> None:
    openai = pytest.importorskip("openai")
    settings = serve_settings(tmp_path)
    with FakeUpstream() as up:
        url = up.url
    add_remote(settings.state_dir, "gone", url)
    with served(settings, {"tiny": (tiny_gguf(), "gguf")}) as s:
        c = openai.OpenAI(base_url=s.v1, api_key="none", max_retries=0, timeout=LIMIT)
        assert [m.id for m in c.models.list()] == ["tiny"]
        with pytest.raises(openai.APIStatusError) as failed:
            c.chat.completions.create(model="gone/m1", messages=ASK)
        assert failed.value.status_code == 502
        assert "gone" in failed.value.message and "cannot be reached" in failed.value.message
        assert c.chat.completions.create(model="tiny", messages=ASK, max_tokens=2).choices


# -- managed engines --------------------------------------------------------------------------


def _engines(capsys: pytest.CaptureFixture[str], state: str) -> dict[str, dict[str, object]]:
    code, out, err = cli(capsys, "--state-dir", state, "engine", "ls", "--json")
    assert code == 0, err
    return {e["name"]: e for e in json.loads(out)}


def test_managed_engine_starts_restarts_after_kill_and_stops(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _need("llama_cpp")
    for module in ("uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"llama_cpp.server needs {module}, which is not installed")
    openai = pytest.importorskip("openai")
    import os
    import signal

    from tests.support.upstream import free_port, llama_server_command

    settings = serve_settings(tmp_path)
    state = str(settings.state_dir)
    port = free_port()
    command = llama_server_command(tiny_gguf(), port)
    with served(settings) as s:
        # no engine token: the API key alone does not let a client start commands
        refused = httpx.post(s.url + "/api/engines", timeout=LIMIT,
                             json={"name": "x", "command": ["true"], "url": "http://h:1"})
        assert refused.status_code == 403
        # a key on the command line is refused before anything starts
        code, out, err = cli(capsys, "--state-dir", state, "engine", "start", "bad", "--",
                             *command, "--api_key", "sk-on-argv-123456")
        assert code != 0 and len(err.strip().splitlines()) == 1 and "secret" in err
        assert "sk-on-argv-123456" not in out + err

        code, out, err = cli(capsys, "--state-dir", state, "engine", "start", "lc", "--",
                             *command)
        assert code == 0, err
        assert " ".join(command[1:]) in out and "is up at" in out
        first = _engines(capsys, state)["lc"]
        assert first["state"] == "running" and isinstance(first["pid"], int)
        c = openai.OpenAI(base_url=s.v1, api_key="none", max_retries=0, timeout=LIMIT)
        model = next(m.id for m in c.models.list() if m.owned_by == "lc")
        assert c.chat.completions.create(model=model, messages=ASK, max_tokens=4).choices

        os.kill(first["pid"], signal.SIGKILL)  # it crashes: restarted, and serves again
        wait_until(lambda: (e := _engines(capsys, state)["lc"])["state"] == "running"
                   and e["restarts"] == 1 and e["pid"] != first["pid"],
                   "the engine to be restarted", limit=120)
        assert c.chat.completions.create(model=model, messages=ASK, max_tokens=4).choices

        code, out, _ = cli(capsys, "--state-dir", state, "engine", "log", "lc", "-n", "10000")
        assert code == 0 and out.count("starting ") == 2 and "exited with code" in out

        pid = _engines(capsys, state)["lc"]["pid"]
        code, out, err = cli(capsys, "--state-dir", state, "engine", "stop", "lc")
        assert code == 0, err
        assert _engines(capsys, state)["lc"]["state"] == "stopped"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # type: ignore[arg-type]
        assert "lc" not in (settings.state_dir / "remotes.toml").read_text()
        assert all(m.owned_by != "lc" for m in c.models.list())


def test_engine_crash_loop_gives_up_and_its_log_stays_bounded(tmp_path: Path) -> None:
    import asyncio
    import sys

    from tui.remote.engine import LOG_LIMIT, Engines, log_path

    from tests.support.upstream import free_port

    state = tmp_path / "state"
    noisy = "import sys; sys.stdout.write('x' * 1_500_000 + '\\nboom\\n'); raise SystemExit(3)"

    async def run() -> dict[str, object]:
        tasks: list[asyncio.Task[None]] = []

        def spawn(coro: object) -> asyncio.Task[None]:
            tasks.append(asyncio.ensure_future(coro))  # type: ignore[arg-type]
            return tasks[-1]

        engines = Engines(state, spawn, max_restarts=2, backoff=(0.0,))
        engine = engines.start("crashy", [sys.executable, "-c", noisy],
                               url=f"http://127.0.0.1:{free_port()}")
        await asyncio.wait_for(asyncio.gather(*tasks), LIMIT)
        return engine.as_dict()

    result = asyncio.run(run())
    assert result["state"] == "failed" and result["restarts"] == 2
    assert "gave up after 2 restarts" in str(result["error"])
    assert "exit code 3" in str(result["error"])
    log = log_path(state, "crashy")
    older = log.with_name(log.name + ".1")
    assert log.stat().st_size <= LOG_LIMIT and older.stat().st_size <= LOG_LIMIT
    assert sorted(p.name for p in log.parent.iterdir()) == ["crashy.log", "crashy.log.1"]
    assert b"boom" in log.read_bytes() + older.read_bytes()
    assert not (state / "remotes.toml").exists()  # never healthy: never registered
