"""``modeldeck export`` then ``modeldeck import`` on a fresh state: real downloads from the
local Hub server, sha256 from the manifest enforced, nothing registered on a mismatch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tui.cli import main

from tests.support.tiny_models import make_tiny_gguf


@pytest.fixture
def tiny(tmp_path: Path) -> bytes:
    return make_tiny_gguf(tmp_path / "src" / "tiny-F32.gguf").read_bytes()


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _use_state(monkeypatch, root: Path) -> None:
    monkeypatch.setenv("MODELDECK_MODELS_DIR", str(root / "models"))
    monkeypatch.setenv("MODELDECK_STATE_DIR", str(root / "state"))
    monkeypatch.setenv("MODELDECK_SCAN_HF_CACHE", "false")


def test_export_then_import_on_a_fresh_pod(hub, tiny, tmp_path, monkeypatch, capsys) -> None:
    repo = hub.add_repo("acme/Tiny-GGUF", {"tiny-F32.gguf": tiny, "README.md": b"# tiny\n"})
    _use_state(monkeypatch, tmp_path / "pod1")
    code, _, err = _cli(capsys, "pull", "acme/Tiny-GGUF", "--file", "tiny-F32.gguf", "--quiet")
    assert code == 0, err
    manifest = tmp_path / "pod.json"
    assert _cli(capsys, "export", "-o", str(manifest))[0] == 0
    data = json.loads(manifest.read_text())
    (entry,) = data["models"]
    assert entry["repo"] == "acme/Tiny-GGUF" and entry["revision"] == repo.commit
    assert entry["files"][0]["sha256"] == hashlib.sha256(tiny).hexdigest()

    # A fresh pod: empty state and models dir.
    _use_state(monkeypatch, tmp_path / "pod2")
    served_before = hub.bytes_served("tiny-F32.gguf")
    code, out, err = _cli(capsys, "import", str(manifest), "--json")
    assert code == 0, err
    assert json.loads(out)["results"] == {entry["id"]: "done"}
    assert hub.bytes_served("tiny-F32.gguf") - served_before == len(tiny)
    code, out, _ = _cli(capsys, "ls", "--json")
    (model,) = json.loads(out)
    assert model["revision"] == repo.commit and model["files"][0]["sha256"] == entry[
        "files"][0]["sha256"]
    assert Path(model["path"]).read_bytes() == tiny

    # Importing again downloads nothing.
    code, out, _ = _cli(capsys, "import", str(manifest), "--json")
    assert code == 0 and json.loads(out)["already_installed"] == [entry["id"]]


def test_manifest_sha256_mismatch_registers_nothing(hub, tiny, tmp_path, monkeypatch, capsys) -> None:  # noqa: E501
    repo = hub.add_repo("acme/Tiny-GGUF", {"tiny-F32.gguf": tiny})
    manifest = tmp_path / "bad.json"
    manifest.write_text(json.dumps({
        "modeldeck_manifest": 1,
        "models": [{"id": "tiny", "format": "gguf", "source": "hf", "repo": "acme/Tiny-GGUF",
                    "revision": repo.commit,
                    "files": [{"path": "tiny-F32.gguf", "size": len(tiny),
                               "sha256": "0" * 64}]}],
    }))
    _use_state(monkeypatch, tmp_path / "pod")
    code, _, err = _cli(capsys, "import", str(manifest))
    assert code != 0 and "did not finish" in err
    assert _cli(capsys, "ls", "--json")[1].strip() == "[]"
    models = tmp_path / "pod" / "models"
    assert not any(p.suffix == ".gguf" for p in models.rglob("*"))
