"""A hostile manifest is refused in one line before anything is queued: too deep, too many
models, too big, or a wrong type anywhere. The inventory stays byte-identical."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tui.cli import main

from tests.support.checks import assert_one_line_error, run_modeldeck, tree_digest

SHA = "ab" * 32
GOOD_ENTRY: dict[str, Any] = {
    "id": "tiny", "name": "Tiny", "format": "gguf", "source": "hf", "repo": "acme/Tiny-GGUF",
    "revision": "a" * 40, "files": [{"path": "tiny-Q4_K_M.gguf", "size": 10, "sha256": SHA}],
}
URL_ENTRY: dict[str, Any] = {
    "id": "direct", "format": "gguf", "source": "url", "url": "http://127.0.0.1:9/d.gguf",
    "files": [{"path": "d.gguf", "size": 5, "sha256": None}],
}


@pytest.fixture
def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An existing (empty) inventory, so 'unchanged' means byte-identical."""
    monkeypatch.setenv("MODELDECK_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MODELDECK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MODELDECK_SCAN_HF_CACHE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing may be fetched
    assert main(["ls"]) == 0
    return tmp_path


def _manifest(*entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"modeldeck_manifest": 1, "models": list(entries), **extra}


def _import(capsys: pytest.CaptureFixture[str], path: Path) -> subprocess.CompletedProcess[str]:
    args = ["import", str(path), "--no-download"]
    code = main(args)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def _mutated(path: list[Any], value: Any) -> dict[str, Any]:
    """A manifest whose second model (a URL entry) or first has one field replaced."""
    data = _manifest(copy.deepcopy(GOOD_ENTRY), copy.deepcopy(URL_ENTRY))
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


WRONG_TYPES = {
    "id-null": (["models", 1, "id"], None, "models[1].id", "must be a string"),
    "id-number": (["models", 1, "id"], 5, "models[1].id", "must be a string"),
    "name-number": (["models", 1, "name"], 7, "models[1].name", "must be a string"),
    "name-list": (["models", 1, "name"], ["a"], "models[1].name", "must be a string"),
    "name-escape": (["models", 1, "name"], "x\x1b[2Jy", "models[1].name", "control"),
    "repo-null": (["models", 0, "repo"], None, "models[0].repo", "must be a string"),
    "repo-number": (["models", 0, "repo"], 42, "models[0].repo", "must be a string"),
    "repo-list": (["models", 0, "repo"], ["acme/x"], "models[0].repo", "must be a string"),
    "revision-number": (["models", 0, "revision"], 3, "models[0].revision", "must be a string"),
    "url-number": (["models", 1, "url"], 1, "models[1].url", "must be a string"),
    "url-huge": (["models", 1, "url"], "http://h/" + "a" * 5000, "models[1].url", "longer"),
    "format-null": (["models", 1, "format"], None, "models[1]", "unknown format"),
    "source-list": (["models", 1, "source"], ["hf"], "models[1]", "unknown source"),
    "catalog-id-number": (["models", 1, "catalog_id"], 5, "models[1].catalog_id",
                          "must be a string"),
    "catalog-id-object": (["models", 1, "catalog_id"], {}, "models[1].catalog_id",
                          "must be a string"),
    "files-object": (["models", 1, "files"], {"path": "d.gguf"}, "models[1]", "files"),
    "file-null": (["models", 1, "files", 0], None, "models[1].files[0]", "must be an object"),
    "path-null": (["models", 1, "files", 0, "path"], None, "models[1].files[0].path",
                  "must be a string"),
    "path-number": (["models", 1, "files", 0, "path"], 3, "models[1].files[0].path",
                    "must be a string"),
    "size-string": (["models", 1, "files", 0, "size"], "10", "models[1].files[0]", "bad size"),
    "size-bool": (["models", 1, "files", 0, "size"], True, "models[1].files[0]", "bad size"),
    "size-float": (["models", 1, "files", 0, "size"], 1.5, "models[1].files[0]", "bad size"),
    "sha-number": (["models", 1, "files", 0, "sha256"], 1, "models[1].files[0]", "bad sha256"),
    "url-two-files": (["models", 1, "files"], [{"path": "a.gguf"}, {"path": "b.gguf"}],
                      "models[1]", "exactly one file"),
    "models-object": (["models"], {"a": 1}, "models", "must be a list"),
    "header-true": (["modeldeck_manifest"], True, "header", "modeldeck_manifest"),
    "skipped-string": (["skipped"], "abc", "skipped", "must be a list"),
}


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_wrong_types_are_refused_before_anything_is_queued(
    pod: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    path, value, *needles = WRONG_TYPES[case]
    manifest = pod / "pod.json"
    manifest.write_text(json.dumps(_mutated(path, value)))
    before = tree_digest(pod)
    proc = _import(capsys, manifest)
    assert_one_line_error(proc, *needles, "nothing was imported")
    assert tree_digest(pod) == before


def test_the_good_manifest_is_accepted(pod: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The base of the cases above really is valid (so each case tests its one field)."""
    manifest = pod / "pod.json"
    manifest.write_text(json.dumps(_manifest(copy.deepcopy(GOOD_ENTRY),
                                             copy.deepcopy(URL_ENTRY))))
    proc = _import(capsys, manifest)
    assert proc.returncode == 0, proc.stderr
    assert "tiny: job" in proc.stdout and "direct: job" in proc.stdout


@pytest.mark.parametrize("depth", [100, 10_000])
def test_deep_nesting_is_one_line(pod: Path, depth: int) -> None:
    manifest = pod / "deep.json"
    manifest.write_text('{"modeldeck_manifest": 1, "models": '
                        + "[" * depth + "]" * depth + "}")
    before = tree_digest(pod)
    proc = run_modeldeck("import", str(manifest), "--no-download")
    assert_one_line_error(proc, "nested too deeply", "nothing was imported")
    assert tree_digest(pod) == before


def test_too_many_models_is_one_line(pod: Path) -> None:
    entries = [dict(URL_ENTRY, id=f"m{i}") for i in range(12_000)]
    manifest = pod / "many.json"
    manifest.write_text(json.dumps(_manifest(*entries)))
    before = tree_digest(pod)
    proc = run_modeldeck("import", str(manifest), "--no-download")
    assert_one_line_error(proc, "manifest lists 12,000 models; the limit is 10,000")
    assert tree_digest(pod) == before


def test_too_many_files_in_one_model_is_one_line(pod: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    files = [{"path": f"shard-{i:05d}.safetensors"} for i in range(10_001)]
    manifest = pod / "files.json"
    manifest.write_text(json.dumps(_manifest(dict(GOOD_ENTRY, files=files))))
    before = tree_digest(pod)
    assert_one_line_error(_import(capsys, manifest), "models[0]", "10,001 files",
                          "limit is 10,000")
    assert tree_digest(pod) == before


def test_oversized_file_is_refused_unread(pod: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid manifest padded past 16 MiB: refused on its size, not parsed."""
    manifest = pod / "big.json"
    with open(manifest, "w") as f:
        f.write(json.dumps(_manifest(copy.deepcopy(GOOD_ENTRY)))[:-1])
        f.write(" " * (17 << 20))
        f.write("}")
    before = tree_digest(pod)
    assert_one_line_error(_import(capsys, manifest), "larger than 16 MiB",
                          "nothing was imported")
    assert tree_digest(pod) == before
