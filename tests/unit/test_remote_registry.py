"""Remote engines, the pure parts: names, URLs, key variables, ``<remote>/<id>`` splitting,
model-list parsing and a managed engine's command line."""

from __future__ import annotations

import json

import pytest

from tui.errors import InvalidInputError
from tui.remote.engine import check_command, engine_url
from tui.remote.models import MAX_ID, MAX_MODELS, parse_models
from tui.remote.registry import Remote, check_env_name, check_name, check_url, split_model


@pytest.mark.parametrize("name", ["gpu1", "vllm.big", "a_b-c", "X"])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "a/b", ".", "..", ".hidden", "a b", "x" * 65, "é",
                                  "a\x1b[2J", 5])
def test_bad_names(name: object) -> None:
    with pytest.raises(InvalidInputError):
        check_name(name)


@pytest.mark.parametrize(("url", "kept"), [
    ("http://10.0.0.5:8000/v1/", "http://10.0.0.5:8000/v1"),
    ("https://gw.example.com/openai", "https://gw.example.com/openai"),
    ("http://[::1]:8000", "http://[::1]:8000"),
])
def test_good_urls(url: str, kept: str) -> None:
    assert check_url(url) == kept


@pytest.mark.parametrize("url", ["", "ftp://h/", "file:///etc/passwd", "http://", "h:8000",
                                 "http://u:p@h/", "http://tok@h/", "http://h/?k=1",
                                 "http://h/#x", "http://h:99999/", "http://h /",
                                 "http://h/\x1b[2J", "http://" + "h" * 3000])
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidInputError) as failed:
        check_url(url)
    assert "p@" not in str(failed.value) or "user:pass@" in str(failed.value)


def test_a_key_given_as_the_variable_name_is_not_echoed() -> None:
    with pytest.raises(InvalidInputError) as failed:
        check_env_name("sk-live-0123456789")
    assert "sk-live" not in str(failed.value)
    assert check_env_name("VLLM_API_KEY") == "VLLM_API_KEY"


def test_split_model() -> None:
    remotes = {"c": Remote("c", "http://h:1/v1")}
    assert split_model("c/meta-llama/Llama-3", remotes) == (remotes["c"], "meta-llama/Llama-3")
    assert split_model("d/x", remotes) is None
    assert split_model("c/", remotes) is None
    assert split_model("plain", remotes) is None
    assert split_model(None, remotes) is None
    assert remotes["c"].api_base == "http://h:1/v1"
    assert remotes["c"].metrics_url == "http://h:1/metrics"
    assert Remote("e", "http://h:2").api_base == "http://h:2/v1"


def test_parse_models_bounds_and_cleans() -> None:
    items = [{"id": "ok"}, {"id": "ok"}, {"id": "bad\x1b[2J"}, {"id": "x" * (MAX_ID + 1)},
             {"id": 5}, "junk", {"id": "has-sk-key-123"}]
    items += [{"id": f"m{i}"} for i in range(MAX_MODELS + 50)]
    ids, skipped = parse_models(json.dumps({"data": items}).encode(), "sk-key-123")
    assert ids[0] == "ok" and len(ids) == MAX_MODELS
    assert all("\x1b" not in i and len(i) <= MAX_ID and "sk-key" not in i for i in ids)
    assert skipped == len(items) - MAX_MODELS
    for raw in (b"not json", b'{"data": 1}', b"[]"):
        with pytest.raises(ValueError):
            parse_models(raw)


def test_engine_command_and_url() -> None:
    cmd = ["vllm", "serve", "m", "--host", "0.0.0.0", "--port", "8001"]
    assert check_command(["--", *cmd]) == cmd
    assert engine_url(cmd) == "http://127.0.0.1:8001"
    assert engine_url(["x", "--port=9000", "--host=10.1.2.3"]) == "http://10.1.2.3:9000"
    assert engine_url(["x"], "http://h:5/v1") == "http://h:5/v1"
    with pytest.raises(InvalidInputError):
        engine_url(["x"])  # nowhere to reach it
    for bad in ([], ["--"], ["x", "--api-key", "k"], ["x", "--api_key=k"], ["x", "--hf-token"],
                ["x", "a\x1b"]):
        with pytest.raises(InvalidInputError) as failed:
            check_command(bad)
        assert "=k" not in str(failed.value)
