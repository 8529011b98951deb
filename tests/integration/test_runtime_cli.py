"""``modeldeck run`` and ``modeldeck fit`` end to end (in-process, tiny GGUF)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from tui.cli import main

from tests.support.tiny_models import tiny_gguf


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MODELDECK_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("MODELDECK_KEEP_ALIVE_MINUTES", "0")
    base = ["--models-dir", str(tmp_path / "models"), "--state-dir", str(tmp_path / "state")]
    return lambda *args: main([*base, *args])


def test_run_one_prompt(cli, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli("run", str(tiny_gguf()), "-p", "hello", "--system", "be brief",
               "--max-tokens", "12", "--temperature", "0", "--ctx", "256")
    out = capsys.readouterr()
    assert code == 0
    assert out.out.strip()
    assert "loaded m" in out.err and "12 tokens" in out.err and "tok/s" in out.err


def test_run_repl_until_exit(cli, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n\nworld\n/exit\nnever\n"))
    code = cli("run", str(tiny_gguf()), "--max-tokens", "5", "--temperature", "0")
    err = capsys.readouterr().err
    assert code == 0 and err.count("5 tokens") == 2


def test_run_errors_are_one_line(cli, capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 50)
    assert cli("run", str(bad), "-p", "x") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("modeldeck: error: not a loadable GGUF") and "\n" not in err
    assert cli("run", "no-such-model", "-p", "x") == 1
    assert "no installed model" in capsys.readouterr().err
    assert cli("run", "--endpoint", "http://127.0.0.1:9") == 1
    assert "--model" in capsys.readouterr().err


def test_fit_json_and_text(cli, capsys) -> None:
    path = tiny_gguf()
    assert cli("fit", str(path), "--ctx", "128", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["estimate"]["weights_bytes"] == path.stat().st_size
    assert data["estimate"]["context_length"] == 128
    assert data["verdict"] in ("cpu", "gpu", "partial") and data["source"] == "installed"
    # a GGUF's KV cache counts once per parallel answer (parallel_requests, default 4)
    assert data["estimate"]["parallel"] == 4
    assert cli("fit", str(path), "--ctx", "128", "--parallel", "1", "--json") == 0
    one = json.loads(capsys.readouterr().out)["estimate"]
    assert one["parallel"] == 1 and one["kv_cache_bytes"] * 4 == data["estimate"]["kv_cache_bytes"]
    assert cli("fit", str(path)) == 0
    assert "needs" in capsys.readouterr().out


def test_fit_catalog_entry(cli, capsys) -> None:
    from tui.catalog import load_builtin

    entry = next(e for e in load_builtin() if e.parameters and e.quants)
    assert cli("fit", entry.id, "--ctx", "4096", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "catalog"
    assert data["estimate"]["weights_bytes"] == entry.default_quant.size
    assert data["estimate"]["assumptions"]
