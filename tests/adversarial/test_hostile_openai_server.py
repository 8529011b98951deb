"""The OpenAI-compatible client against a hostile server on 127.0.0.1 (real HTTP, real CLI).

Each case checks the exit (one line, no traceback, the key nowhere), that memory stayed
bounded where the server sends without end, and that nothing outside ModelDeck's own state
changed. Timeouts are shortened through the backend's module constants; every wait is a
condition with a generous timeout, never a speed.
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tui.cli import main
from tui.runtime.backends import openai as backend
from tui.runtime.backends.openai import list_models

from tests.adversarial.hostile_openai import KEY, HostileServer
from tests.support.checks import assert_no_control_chars, tree_digest

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    srv = HostileServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``run(*args) -> (code, out, err)`` of the in-process CLI, the key in ``HOSTILE_KEY``;
    afterwards, nothing outside the state directory changed."""
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "models").mkdir()
    monkeypatch.setenv("MODELDECK_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("HOSTILE_KEY", KEY)
    (tmp_path / "user-file.txt").write_text("keep me")
    before = tree_digest(tmp_path, skip=(state,))

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--models-dir", str(tmp_path / "models"), "--state-dir", str(state),
                     "run", "--api-key-env", "HOSTILE_KEY", "-p", "hi", *args])
        out, err = capsys.readouterr()
        for text in (out, err):
            assert KEY not in text and KEY[:18] not in text
            assert "Traceback" not in text
            assert_no_control_chars(text)
        return code, out, err

    yield run
    assert tree_digest(tmp_path, skip=(state,)) == before


def error_line(err: str) -> str:
    """The one ``modeldeck: error:`` line (``run`` also reports the load on stderr first)."""
    errors = [line for line in err.splitlines() if line.startswith("modeldeck: error:")]
    assert len(errors) == 1, err
    assert err.splitlines()[-1] == errors[0], err
    return errors[0]


def test_key_echoed_in_401_body(server: HostileServer, cli) -> None:
    code, _out, err = cli("--endpoint", server.url("deny"), "--model", "echo")
    assert code == 1
    assert "HTTP 401" in error_line(err)


def test_key_and_escapes_echoed_in_error_bodies(server: HostileServer, cli) -> None:
    code, _out, err = cli("--endpoint", server.url(), "--model", "errorecho")
    line = error_line(err)
    assert code == 1 and "HTTP 500" in line and "***" in line and "\\x1b[2J" in line
    code, _out, err = cli("--endpoint", server.url(), "--model", "sseerror")
    line = error_line(err)
    assert code == 1 and "reported an error: quota for ***" in line


def test_key_echoed_in_streamed_text(server: HostileServer, cli) -> None:
    code, out, err = cli("--endpoint", server.url(), "--model", "echo")
    assert code == 0, err
    assert out.strip() == "your key is *** or Bearer *** done"


def test_hostile_model_names_in_a_model_error(server: HostileServer, cli) -> None:
    code, _out, err = cli("--endpoint", server.url(), "--model", "not-served")
    line = error_line(err)
    assert code == 1 and "does not serve 'not-served'" in line
    assert "shown\\x1b[2J" in line and "key ***" in line


def test_endless_stream_stops_at_max_tokens(server: HostileServer, cli) -> None:
    code, out, err = cli("--endpoint", server.url(), "--model", "endless", "--max-tokens", "7")
    assert code == 0, err
    assert out.split() == [f"t{i}" for i in range(7)]
    assert "7 tokens" in err and "length" in err
    assert wait_until(lambda: server.stats["endless"]["left"]), "the stream was not closed"


def test_one_gigabyte_line(server: HostileServer, cli) -> None:
    tracemalloc.start()
    try:
        code, _out, err = cli("--endpoint", server.url(), "--model", "hugeline")
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 1
    assert "sent a stream line longer than 1 MiB" in error_line(err)
    assert peak < 48 << 20, f"peak {peak >> 20} MiB while reading a 1 GB line"
    assert wait_until(lambda: server.stats["hugeline"]["left"])
    assert server.stats["hugeline"]["bytes"] < 256 << 20


def test_millions_of_models(server: HostileServer, cli) -> None:
    tracemalloc.start()
    try:
        code, _out, err = cli("--endpoint", server.url("hugelist"), "--model", "m1")
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 1
    assert "model list" in error_line(err) and "larger than 4 MiB" in err
    assert peak < 48 << 20, f"peak {peak >> 20} MiB while reading the model list"


def test_silence_after_headers(server: HostileServer, cli, monkeypatch) -> None:
    monkeypatch.setattr(backend, "READ_TIMEOUT", 0.3)
    code, _out, err = cli("--endpoint", server.url(), "--model", "silent")
    assert code == 1 and "sent nothing for 0.3 s" in error_line(err)


def test_drip_feed_hits_the_answer_deadline(server: HostileServer, cli, monkeypatch) -> None:
    monkeypatch.setattr(backend, "ANSWER_DEADLINE", 0.5)
    code, _out, err = cli("--endpoint", server.url(), "--model", "drip")
    assert code == 1 and "took longer than 0.5 s" in error_line(err)
    assert wait_until(lambda: server.stats["drip"]["left"])


def test_body_cap(server: HostileServer, cli, monkeypatch) -> None:
    monkeypatch.setattr(backend, "MAX_ANSWER_BYTES", 2 << 20)
    code, _out, err = cli("--endpoint", server.url(), "--model", "bigbody")
    assert code == 1 and "is larger than 2 MiB" in error_line(err)


def test_silent_model_list(server: HostileServer) -> None:
    from tui.runtime.errors import EndpointError

    with pytest.raises(EndpointError, match=r"sent nothing for|timed out") as info:
        list_models(server.url("silentlist"), KEY, timeout=0.3)
    assert KEY not in str(info.value)


def wait_until(predicate, timeout: float = 20.0) -> bool:
    """Wait for ``predicate()`` (polled) up to ``timeout`` seconds."""
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        done.wait(0.02)
    return predicate()
