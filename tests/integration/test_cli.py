"""The headless CLI: outputs, --json, and one-line errors with non-zero exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gguf import write_gguf
from tests.support.safetensors import write_safetensors_folder

SECRET = "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123"




def _db_bytes(state: Path) -> bytes:
    return b"".join(p.read_bytes() for p in state.glob("modeldeck.db*"))


def test_scan_ls_info_rm_flow(cli) -> None:
    g = write_gguf(cli.models / "tiny-Q4_K_M.gguf", name="Tiny")
    write_safetensors_folder(cli.models / "acme" / "st")
    code, out, _ = cli("scan")
    assert code == 0 and "2 models (2 new" in out
    code, out, _ = cli("ls", "--json")
    models = {m["path"]: m for m in json.loads(out)}
    tiny = models[str(g)]
    assert tiny["quantization"] == "Q4_K_M" and tiny["format"] == "gguf"
    code, out, _ = cli("ls", "--sort", "size")
    assert code == 0 and tiny["id"] in out and "2 models" in out
    code, out, _ = cli("info", tiny["id"])
    assert code == 0 and "Q4_K_M" in out and re.search(r"context length:\s+4096", out)
    code, out, _ = cli("info", str(g), "--json")
    assert json.loads(out)["metadata"]["n_layers"] == 2
    code, out, _ = cli("rm", tiny["id"], "-y")
    assert code == 0 and "freed" in out and not g.exists()
    code, out, _ = cli("ls", "--json")
    assert [m["format"] for m in json.loads(out)] == ["safetensors"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "no-such-model"], "not a model id, catalog id or existing path"),
        (["rm", "no-such-model", "-y"], "no installed model with id 'no-such-model'"),
        (["scan", "/definitely/not/here"], "no such folder"),
        (["add", "hf", "not-a-repo"], "not a Hub repo id"),
        (["add", "url", "https://x.test/m.gguf", "--sha256", "abc"], "64 hex"),
        (["add", "local", "/nope/x.gguf"], "no such file or folder"),
        (["catalog", "--remove", "nope"], "no custom catalog entry"),
        (["import", "/nope/manifest.json"], "no such manifest file"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(cli, args: list[str], message: str) -> None:
    code, _out, err = cli(*args)
    assert code != 0
    assert err.startswith("modeldeck: error: ") and message in err
    assert err.count("\n") == 1


def test_corrupt_gguf_is_refused_everywhere(cli) -> None:
    bad = cli.models / "broken.gguf"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + (2**63).to_bytes(8, "little") * 3)
    code, _, err = cli("info", str(bad))
    assert code != 0 and "broken.gguf" in err and err.count("\n") == 1
    code, _, err = cli("add", "local", str(bad))
    assert code != 0
    code, out, _ = cli("catalog", "--custom", "--json")
    assert json.loads(out) == []  # nothing recorded
    code, out, _ = cli("scan")
    assert code == 0 and "skipped" in out
    code, out, _ = cli("ls", "--json")
    assert json.loads(out) == []


def test_scan_outside_roots_refused(cli, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    code, _, err = cli("scan", str(other))
    assert code != 0 and "outside the folders ModelDeck manages" in err


def test_catalog_filters_and_json(cli) -> None:
    code, out, _ = cli("catalog", "--format", "gguf", "--json")
    entries = json.loads(out)
    assert code == 0 and entries and all(e["format"] == "gguf" for e in entries)
    code, out, _ = cli("catalog", "--search", "smollm")
    assert code == 0 and "smollm" in out.lower() and "MiB" in out


def test_add_entries_and_local_registration(cli, tmp_path: Path) -> None:
    assert cli("add", "hf", "acme/Tiny-GGUF", "--quant", "Q4_K_M")[0] == 0
    assert cli("add", "url", "http://127.0.0.1:1/files/m.gguf", "--id", "m-url")[0] == 0
    g = write_gguf(tmp_path / "mine" / "mine.gguf")
    code, out, _ = cli("add", "local", str(g), "--json")
    assert code == 0 and json.loads(out)["source"] == "local"
    code, out, _ = cli("catalog", "--custom", "--json")
    assert {e["id"] for e in json.loads(out)} == {"tiny-gguf-q4_k_m", "m-url", "mine"}
    code, out, _ = cli("ls", "--json")
    (model,) = json.loads(out)
    assert model["source"] == "local" and model["path"] == str(g.resolve())
    # rm of a model outside the managed folders forgets it and keeps the file.
    code, out, _ = cli("rm", model["id"], "-y")
    assert code == 0 and "kept" in out and g.exists()


def test_rm_without_tty_needs_yes(cli) -> None:
    write_gguf(cli.models / "x.gguf")
    cli("scan")
    code, out, _ = cli("ls", "--json")
    model_id = json.loads(out)[0]["id"]
    code, _, err = cli("rm", model_id)
    assert code != 0 and "pass -y" in err
    assert (cli.models / "x.gguf").exists()


def test_config_shows_sources(cli, monkeypatch) -> None:
    monkeypatch.setenv("MODELDECK_BANDWIDTH_LIMIT", "10M")
    code, out, _ = cli("config", "--json")
    assert code == 0
    data = json.loads(out)["settings"]
    assert data["bandwidth_limit"] == {
        "value": 10 * 2**20, "source": "env MODELDECK_BANDWIDTH_LIMIT",
        "env": "MODELDECK_BANDWIDTH_LIMIT"}
    assert data["concurrent_downloads"]["source"] == "default"
    _code, out, _ = cli("config")
    assert "env MODELDECK_BANDWIDTH_LIMIT" in out


def test_doctor_reports_token_without_printing_it(cli, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    code, out, err = cli("doctor", "--json")
    assert code == 0
    checks = {c["name"]: c for c in json.loads(out)}
    assert checks["hub token"]["status"] == "ok"
    assert checks["gpu"]["detail"] == "no GPU" or checks["gpu"]["status"] == "ok"
    assert SECRET not in out + err
    _code, out, err = cli("doctor")
    assert "present" in out and SECRET not in out + err


def test_export_import_dry_run(cli, tmp_path: Path) -> None:
    write_gguf(cli.models / "x.gguf")
    cli("scan")
    out_file = tmp_path / "pod.json"
    code, out, _ = cli("export", "-o", str(out_file))
    assert code == 0 and "0 models" in out and "1 skipped" in out
    manifest = json.loads(out_file.read_text())
    manifest["models"] = [{
        "id": "tiny", "format": "gguf", "source": "hf", "repo": "acme/Tiny-GGUF",
        "revision": "a" * 40, "files": [{"path": "t.gguf", "size": 1, "sha256": "b" * 64}]}]
    out_file.write_text(json.dumps(manifest))
    code, out, _ = cli("import", str(out_file), "--dry-run")
    assert code == 0 and "would fetch tiny: acme/Tiny-GGUF" in out
    before = _db_bytes(cli.state)
    manifest["models"][0]["files"][0]["path"] = "../../etc/passwd"
    out_file.write_text(json.dumps(manifest))
    code, _, err = cli("import", str(out_file))
    assert code != 0 and "nothing was imported" in err and err.count("\n") == 1
    assert _db_bytes(cli.state) == before


def test_python_dash_m_tui_runs(tmp_path: Path) -> None:
    env = dict(os.environ, MODELDECK_STATE_DIR=str(tmp_path / "s"),
               MODELDECK_MODELS_DIR=str(tmp_path / "m"))
    proc = subprocess.run([sys.executable, "-m", "tui", "ls"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0 and "No models yet" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "tui", "info", "nope"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("modeldeck: error:") and "Traceback" not in proc.stderr


def test_two_cli_processes_scan_one_volume_at_once(tmp_path: Path) -> None:
    models = tmp_path / "models"
    for i in range(40):
        write_gguf(models / f"d{i % 4}" / f"m{i}.gguf", seed=i)
    env = dict(os.environ, MODELDECK_STATE_DIR=str(tmp_path / "s"),
               MODELDECK_MODELS_DIR=str(models), MODELDECK_SCAN_HF_CACHE="false")
    procs = [
        subprocess.Popen([sys.executable, "-m", "tui", "scan", "--json"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err
        assert len(json.loads(out)["models"]) == 40
    out = subprocess.run([sys.executable, "-m", "tui", "ls", "--json"], env=env,
                         capture_output=True, text=True, timeout=60).stdout
    listed = json.loads(out)
    assert len(listed) == 40 and len({m["id"] for m in listed}) == 40
