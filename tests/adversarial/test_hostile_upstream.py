"""Hostile remote engines: an upstream whose model list or answers are malicious or broken,
and a registry file that is not what ModelDeck wrote. Each gives bounded, cleaned output and
at most one line saying what is wrong; nothing else fails and the key is shown nowhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tui.cli import main
from tui.remote.models import MAX_ID, MAX_MODELS
from tui.remote.registry import add_remote

from tests.support.checks import assert_no_control_chars
from tests.support.serve import LIMIT, serve_settings, served
from tests.support.upstream import FakeUpstream

KEY = "sk-hostile-upstream-0123456789"
ESC = "\x1b]52;c;SGVsbG8=\x07\x1b[2J\x9b31m\u202eevil"


def listing(ids: list[str]) -> dict[str, object]:
    return {"object": "list", "data": [{"id": i} for i in ids]}


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("models", "shown", "warning"), [
    (listing([f"bad{ESC}", "fine", f"key {KEY}"]), ["fine"], None),
    (listing([f"m{i}" for i in range(10_000)]), [f"m{i}" for i in range(MAX_MODELS)], None),
    (listing(["x" * 100_000, "ok"]), ["ok"], None),
    (b"<html>not json" + ESC.encode(), [], "not an OpenAI model list"),
    (b'{"data": 5}', [], "not an OpenAI model list"),
    (b"[" * 100_000, [], "not an OpenAI model list"),
    (500, [], "HTTP 500"),
])
def test_hostile_model_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch, models: object,
                             shown: list[str], warning: str | None) -> None:
    monkeypatch.setenv("HOSTILE_KEY", KEY)
    state = str(tmp_path / "state")
    with FakeUpstream(models=models, key=KEY) as up:
        add_remote(Path(state), "h", up.url, "HOSTILE_KEY")
        code, out, err = cli(capsys, "--state-dir", state, "ls", "--json")
        assert code == 0
        ids = [m["id"] for m in json.loads(out)]
        assert ids == [f"h/{i}" for i in shown]
        assert all(len(i) <= MAX_ID + 2 for i in ids)
        if warning:
            assert len(err.strip().splitlines()) == 1 and warning in err
        else:
            assert err == ""
        assert_no_control_chars(out + err)
        assert "\u202e" not in out + err

        code, out, err = cli(capsys, "--state-dir", state, "remote", "ls")
        assert code == 0 and "Traceback" not in err
        assert_no_control_chars(out + err)
        assert len(err.strip().splitlines()) <= 1
        if warning:
            assert warning in err

        settings = serve_settings(tmp_path)
        with served(settings) as s:
            served_ids = [m["id"] for m in httpx.get(s.v1 + "/models", timeout=LIMIT)
                          .json()["data"]]
            assert sorted(served_ids) == sorted(ids)
            remotes = httpx.get(s.url + "/api/remotes", timeout=LIMIT).json()["remotes"]
            assert (remotes[0]["error"] is None) == (warning is None)
            assert_no_control_chars(json.dumps(remotes, ensure_ascii=False))
            assert KEY not in json.dumps(remotes) + json.dumps(served_ids)
    assert KEY not in out + err


def test_upstream_error_echoing_the_key_is_cleaned(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTILE_KEY", KEY)
    settings = serve_settings(tmp_path)
    with FakeUpstream(key=KEY) as up:
        add_remote(settings.state_dir, "h", up.url, "HOSTILE_KEY")
        with served(settings) as s:
            r = httpx.post(s.v1 + "/chat/completions", timeout=LIMIT,
                           json={"model": "h/fail", "messages": [{"role": "user",
                                                                   "content": "x"}]})
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["code"] == "engine_dead" and "engine died" in error["message"]
    assert KEY not in r.text and "\x1b" not in error["message"]


def test_registry_file_edited_badly(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                    ) -> None:
    state = tmp_path / "state"
    state.mkdir()
    path = state / "remotes.toml"
    for text in ('[remotes."a/b"]\nurl = "http://h"\n',
                 '[remotes.x]\nurl = "http://u:p@h/"\n',
                 "[remotes.x\nurl=",
                 '[remotes.x]\nurl = "file:///etc/passwd"\n',
                 "remotes = 5\n"):
        path.write_text(text)
        code, out, err = cli(capsys, "--state-dir", str(state), "ls")
        assert code == 0 and "No models yet" in out
        assert len(err.strip().splitlines()) == 1 and "remotes.toml" in err, err
        code, out, err = cli(capsys, "--state-dir", str(state), "remote", "ls")
        assert code != 0 and len(err.strip().splitlines()) == 1 and "remotes.toml" in err
        assert "u:p" not in err and "Traceback" not in err
        code, _, err = cli(capsys, "--state-dir", str(state), "remote", "add", "y", "http://h")
        assert code != 0 and path.read_text() == text  # the user's file is left as it was


@pytest.mark.parametrize(("model", "status", "needle"), [
    ("notjson", 502, "not JSON"),
    ("textfail", 503, "overloaded"),
    ("weird", 502, "HTTP 999"),
])
def test_hostile_answers_are_one_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             model: str, status: int, needle: str) -> None:
    monkeypatch.setenv("HOSTILE_KEY", KEY)
    settings = serve_settings(tmp_path)
    with FakeUpstream(key=KEY) as up:
        add_remote(settings.state_dir, "h", up.url, "HOSTILE_KEY")
        with served(settings) as s:
            r = httpx.post(s.v1 + "/chat/completions", timeout=LIMIT,
                           json={"model": f"h/{model}", "messages": [{"role": "user",
                                                                       "content": "x"}]})
    assert r.status_code == status
    message = r.json()["error"]["message"]
    assert needle in message and "\n" not in message and KEY not in r.text
    assert_no_control_chars(message)
