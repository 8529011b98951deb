"""Validate the built-in model catalog shipped in ``tui/catalog/builtin.json``.

The file is pure data; these tests pin its schema so a bad edit (duplicate id, unsafe path,
missing default quant, ...) fails CI instead of breaking the catalog screen at runtime.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.support.checks import REPO

ID_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
QUANT_RE = re.compile(r"^(?:I?Q[1-8](?:_[0-9A-Z]+)*|F16|BF16|F32)$")
FORMATS = {"gguf", "safetensors"}

ENTRY_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "name": str,
    "family": str,
    "format": str,
    "repo": str,
    "revision": str,
    "parameters": int,
    "context_length": int,
    "architecture": str,
    "license": str,
    "gated": bool,
    "tags": list,
    "description": str,
}
FILE_KEYS = {"path", "size", "size_estimated"}
QUANT_KEYS = {"quant", "files", "default"}


def _load_text() -> str:
    try:
        res = importlib.resources.files("tui") / "catalog" / "builtin.json"
        return res.read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError, NotADirectoryError, TypeError):
        # Before tui/catalog/ has an __init__.py, fall back to the source tree.
        return (REPO / "tui" / "catalog" / "builtin.json").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def catalog() -> dict[str, Any]:
    return json.loads(_load_text())


@pytest.fixture(scope="module")
def entries(catalog: dict[str, Any]) -> list[dict[str, Any]]:
    return catalog["entries"]


def _all_files(entry: dict[str, Any]) -> list[dict[str, Any]]:
    if entry["format"] == "gguf":
        return [f for q in entry["quants"] for f in q["files"]]
    return list(entry["files"])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_path(path: Any) -> None:
    assert isinstance(path, str) and path, f"bad path {path!r}"
    assert "\x00" not in path, f"NUL in path {path!r}"
    assert "\\" not in path, f"backslash in path {path!r}"
    assert not path.startswith("/"), f"absolute path {path!r}"
    assert not re.match(r"^[A-Za-z]:", path), f"drive-letter path {path!r}"
    parts = PurePosixPath(path).parts
    assert ".." not in parts and "." not in path.split("/"), f"path traversal in {path!r}"
    assert "" not in path.split("/"), f"empty path component in {path!r}"
    assert path == path.strip(), f"surrounding whitespace in {path!r}"


def _check_file(entry_id: str, f: Any) -> None:
    assert isinstance(f, dict), f"{entry_id}: file must be an object"
    assert set(f) <= FILE_KEYS, f"{entry_id}: unknown file keys {set(f) - FILE_KEYS}"
    _check_path(f.get("path"))
    assert _is_int(f.get("size")), f"{entry_id}: {f.get('path')} size must be an int"
    assert f["size"] > 0, f"{entry_id}: {f['path']} size must be positive"
    if "size_estimated" in f:
        assert isinstance(f["size_estimated"], bool), f"{entry_id}: size_estimated must be bool"


def test_top_level_schema(catalog: dict[str, Any]) -> None:
    assert isinstance(catalog, dict)
    assert catalog.get("schema") == 1
    assert isinstance(catalog.get("entries"), list)
    assert set(catalog) == {"schema", "entries"}


def test_entry_count(entries: list[dict[str, Any]]) -> None:
    assert 20 <= len(entries) <= 40


def test_ids_unique_and_slugged(entries: list[dict[str, Any]]) -> None:
    ids = [e["id"] for e in entries]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for entry_id in ids:
        assert ID_RE.match(entry_id), f"id {entry_id!r} is not a lowercase slug"


def test_required_fields_and_types(entries: list[dict[str, Any]]) -> None:
    for e in entries:
        for key, typ in ENTRY_REQUIRED.items():
            assert key in e, f"{e.get('id')}: missing {key}"
            if typ is int:
                assert _is_int(e[key]), f"{e['id']}: {key} must be an int"
            else:
                assert isinstance(e[key], typ), f"{e['id']}: {key} must be {typ}"
        assert isinstance(e["gated"], bool), f"{e['id']}: gated must be bool"
        assert e["parameters"] > 0 and e["context_length"] > 0, e["id"]
        assert e["format"] in FORMATS, f"{e['id']}: bad format {e['format']!r}"
        assert REPO_RE.match(e["repo"]), f"{e['id']}: repo {e['repo']!r} is not owner/name"
        assert e["revision"].strip(), f"{e['id']}: empty revision"
        assert e["name"].strip() and e["description"].strip(), e["id"]
        assert "\n" not in e["description"], f"{e['id']}: description must be one line"
        assert all(isinstance(t, str) and t for t in e["tags"]), f"{e['id']}: bad tags"


def test_gguf_entries_have_quants_and_one_default(entries: list[dict[str, Any]]) -> None:
    for e in (e for e in entries if e["format"] == "gguf"):
        assert "files" not in e, f"{e['id']}: gguf entries list files under quants"
        quants = e.get("quants")
        assert isinstance(quants, list) and quants, f"{e['id']}: needs at least one quant"
        names = [q.get("quant") for q in quants]
        assert len(names) == len(set(names)), f"{e['id']}: duplicate quant names"
        defaults = [q for q in quants if q.get("default") is True]
        assert len(defaults) == 1, f"{e['id']}: exactly one default quant, got {len(defaults)}"
        if "Q4_K_M" in names:
            assert defaults[0]["quant"] == "Q4_K_M", f"{e['id']}: Q4_K_M should be default"
        for q in quants:
            assert set(q) <= QUANT_KEYS, f"{e['id']}: unknown quant keys {set(q) - QUANT_KEYS}"
            assert isinstance(q.get("default"), bool), f"{e['id']}: default must be bool"
            assert isinstance(q["quant"], str) and QUANT_RE.match(q["quant"]), (
                f"{e['id']}: odd quant name {q['quant']!r}"
            )
            assert isinstance(q.get("files"), list) and q["files"], f"{e['id']}: quant w/o files"
            for f in q["files"]:
                _check_file(e["id"], f)
                assert f["path"].endswith(".gguf"), f"{e['id']}: {f['path']} is not a .gguf"


def test_split_gguf_shards_are_complete(entries: list[dict[str, Any]]) -> None:
    shard_re = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
    for e in (e for e in entries if e["format"] == "gguf"):
        for q in e["quants"]:
            paths = [f["path"] for f in q["files"]]
            shards = [m for p in paths if (m := shard_re.search(p))]
            if not shards:
                assert len(paths) == 1, f"{e['id']} {q['quant']}: several unsplit files"
                continue
            total = int(shards[0].group(2))
            assert len(shards) == len(paths) == total, f"{e['id']} {q['quant']}: missing shards"
            assert sorted(int(m.group(1)) for m in shards) == list(range(1, total + 1))


def test_safetensors_entries_have_weights_and_config(entries: list[dict[str, Any]]) -> None:
    for e in (e for e in entries if e["format"] == "safetensors"):
        assert "quants" not in e, f"{e['id']}: safetensors entries use files, not quants"
        files = e.get("files")
        assert isinstance(files, list) and files, f"{e['id']}: needs files"
        for f in files:
            _check_file(e["id"], f)
        paths = [f["path"] for f in files]
        assert len(paths) == len(set(paths)), f"{e['id']}: duplicate file paths"
        assert "config.json" in paths, f"{e['id']}: missing config.json"
        assert any(p.endswith(".safetensors") for p in paths), f"{e['id']}: no .safetensors"
        assert any(p.startswith("tokenizer") for p in paths), f"{e['id']}: no tokenizer files"


def test_all_file_paths_safe_and_sizes_positive(entries: list[dict[str, Any]]) -> None:
    for e in entries:
        files = _all_files(e)
        assert files, e["id"]
        for f in files:
            _check_file(e["id"], f)


def test_path_checker_rejects_unsafe_paths() -> None:
    for bad in [
        "../x.gguf",
        "a/../b.gguf",
        "/etc/passwd",
        "a\\b.gguf",
        "a\x00b",
        "C:x.gguf",
        "a//b.gguf",
        "./x.gguf",
        "",
    ]:
        with pytest.raises(AssertionError):
            _check_path(bad)
    _check_path("sub/dir/model-00001-of-00002.gguf")


def test_gated_entries_are_official_repos(entries: list[dict[str, Any]]) -> None:
    # Community GGUF mirrors are not gated; the gated flag only belongs on vendor originals.
    for e in entries:
        owner = e["repo"].split("/", 1)[0]
        if owner in {"bartowski", "lmstudio-community", "TheBloke", "unsloth", "ggml-org"}:
            assert e["gated"] is False, f"{e['id']}: community repo marked gated"
