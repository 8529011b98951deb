"""Manifests: export of the installed set; strict validation before anything is imported."""

from __future__ import annotations

import json

import pytest

from tui.errors import InvalidInputError
from tui.manifest import export_manifest, parse_manifest
from tui.store import ModelFile, ModelRecord

SHA = "0123456789abcdef" * 4


def _good() -> dict:
    return {
        "modeldeck_manifest": 1,
        "models": [
            {"id": "tiny-q4", "name": "Tiny", "format": "gguf", "source": "hf",
             "repo": "acme/Tiny-GGUF", "revision": "a" * 40,
             "files": [{"path": "tiny-Q4_K_M.gguf", "size": 10, "sha256": SHA}]},
            {"id": "direct", "format": "gguf", "source": "url",
             "url": "http://127.0.0.1:8000/files/d.gguf",
             "files": [{"path": "d.gguf", "size": 5, "sha256": None}]},
        ],
    }


def test_parse_good_manifest() -> None:
    m = parse_manifest(json.dumps(_good()))
    assert [e.id for e in m.entries] == ["tiny-q4", "direct"]
    assert m.entries[0].files[0].sha256 == SHA


def _mutate(path: list, value) -> str:
    data = _good()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"models": []}), "modeldeck_manifest"),
        (_mutate(["models", 0, "files", 0, "sha256"], "xyz"), "bad sha256"),
        (_mutate(["models", 0, "files", 0, "sha256"], SHA.upper()), "bad sha256"),
        (_mutate(["models", 0, "files", 0, "path"], "../../etc/passwd"), "'..'"),
        (_mutate(["models", 0, "files", 0, "path"], "/etc/passwd"), "absolute"),
        (_mutate(["models", 0, "files", 0, "path"], "a\x00b"), "control"),
        (_mutate(["models", 0, "files", 0, "path"], "\\\\host\\share"), "backslash"),
        (_mutate(["models", 0, "files", 0, "path"], "C:x.gguf"), "absolute"),
        (_mutate(["models", 0, "repo"], "no-slash"), "bad repo"),
        (_mutate(["models", 0, "revision"], "../main"), "bad revision"),
        (_mutate(["models", 0, "source"], "ftp"), "unknown source"),
        (_mutate(["models", 1, "url"], "file:///etc/passwd"), "bad url"),
        (_mutate(["models", 1, "id"], "tiny-q4"), "duplicate id"),
        (_mutate(["models", 0, "files"], []), "non-empty"),
        (_mutate(["models", 0, "files", 0, "size"], -1), "bad size"),
    ],
)
def test_bad_manifests_are_rejected_in_one_line(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as exc:
        parse_manifest(text)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value) and "nothing was imported" in str(exc.value)


def test_export_lists_remote_models_and_skips_local(services, settings) -> None:
    inv = services.inventory
    repo_dir = settings.models_dir / "acme" / "Tiny-GGUF"
    inv.upsert_model(ModelRecord(
        id="tiny", name="Tiny", format="gguf", path=str(repo_dir / "sub" / "t.gguf"),
        source="hf", source_ref="acme/Tiny-GGUF", revision="b" * 40,
        files=[ModelFile(str(repo_dir / "sub" / "t.gguf"), 10, SHA)],
    ))
    inv.upsert_model(ModelRecord(
        id="loose", name="Loose", format="gguf", path="/data/l.gguf", source="scan",
        files=[ModelFile("/data/l.gguf", 3)],
    ))
    data = export_manifest(inv, settings.models_dir)
    assert data["skipped"] == [{"id": "loose", "reason": "no remote source (found on disk)"}]
    (entry,) = data["models"]
    assert entry["repo"] == "acme/Tiny-GGUF" and entry["revision"] == "b" * 40
    assert entry["files"] == [{"path": "sub/t.gguf", "size": 10, "sha256": SHA}]
    # What we export, we can import.
    assert parse_manifest(json.dumps(data)).entries[0].files[0].path == "sub/t.gguf"
