"""Validate the built-in model catalog shipped in ``tui/catalog/builtin.json``.

The file is pure data; these tests pin its schema (``tui/catalog/SCHEMA.md``) so a bad edit
(duplicate id, unsafe path, missing default quant, a VLM without its projector, a LoRA without
its base model, a size with no source, ...) fails CI instead of breaking the catalog at runtime.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import PurePosixPath
from typing import Any

import pytest

from tui.catalog import BASE_MODELS, ROLES, entry_from_dict
from tui.kinds import KINDS, LLM, RUNNABLE, UNKNOWN, VLM

from tests.support.checks import REPO

ID_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
QUANT_RE = re.compile(r"^(?:I?Q[1-8](?:_[0-9A-Z]+)*|F16|BF16|F32|MXFP4)$")
SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
FORMATS = {"gguf", "safetensors", "diffusers"}
MODEL_KINDS = {"llm", "vlm", "embedding"}  # kinds that must state parameters and context
NEEDS_BASE = {"lora", "vae", "controlnet", "text-encoder"}
MAX_SIZE = 1 << 50

ENTRY_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "name": str,
    "kind": str,
    "family": str,
    "format": str,
    "repo": str,
    "revision": str,
    "license": str,
    "gated": bool,
    "tags": list,
    "description": str,
}
MODEL_REQUIRED = {"parameters": int, "context_length": int, "architecture": str}
ENTRY_KEYS = {*ENTRY_REQUIRED, *MODEL_REQUIRED, "base_model", "quants", "files"}
FILE_KEYS = {"path", "size", "size_estimated", "role"}
QUANT_KEYS = {"quant", "files", "default"}


def _load_text(name: str = "builtin.json") -> str:
    try:
        res = importlib.resources.files("tui") / "catalog" / name
        return res.read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError, NotADirectoryError, TypeError):
        return (REPO / "tui" / "catalog" / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def catalog() -> dict[str, Any]:
    return json.loads(_load_text())


@pytest.fixture(scope="module")
def entries(catalog: dict[str, Any]) -> list[dict[str, Any]]:
    return catalog["entries"]


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    """``SOURCES.md`` rows: entry id -> where its sizes come from."""
    rows = {}
    for line in (REPO / "tui" / "catalog" / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| `([^`]+)` \| (.+) \|$", line)
        if m:
            assert m.group(1) not in rows, f"SOURCES.md lists {m.group(1)} twice"
            rows[m.group(1)] = m.group(2)
    return rows


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
    assert 0 < f["size"] < MAX_SIZE, f"{entry_id}: {f['path']} size out of range"
    if "size_estimated" in f:  # only where set: never an explicit false
        assert f["size_estimated"] is True, f"{entry_id}: size_estimated is only ever true"
    if "role" in f:
        assert f["role"] in ROLES, f"{entry_id}: {f['path']} has an unknown role {f['role']!r}"


def _check_shards(where: str, paths: list[str]) -> None:
    """``paths`` (a quant's model files) are one file, or one complete consecutive split set."""
    shards = [(p, m) for p in paths if (m := SHARD_RE.search(p))]
    if not shards:
        assert len(paths) == 1, f"{where}: several unsplit model files"
        return
    assert len(shards) == len(paths), f"{where}: split and unsplit files mixed"
    stems = {p[: m.start()] for p, m in shards}
    assert len(stems) == 1, f"{where}: shards of different sets {sorted(stems)}"
    totals = {m.group(2) for _, m in shards}
    assert len(totals) == 1, f"{where}: shards disagree on the shard count"
    total = int(totals.pop())
    numbers = [int(m.group(1)) for _, m in shards]
    assert numbers == list(range(1, total + 1)), f"{where}: shards not 1..{total} in order"


# -- the whole file --------------------------------------------------------------------------


def test_top_level_schema(catalog: dict[str, Any]) -> None:
    assert isinstance(catalog, dict)
    assert catalog.get("schema") == 2
    assert isinstance(catalog.get("entries"), list)
    assert set(catalog) == {"schema", "entries"}


def test_entry_count(entries: list[dict[str, Any]]) -> None:
    assert 50 <= len(entries) <= 100


def test_ids_unique_and_slugged(entries: list[dict[str, Any]]) -> None:
    ids = [e["id"] for e in entries]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for entry_id in ids:
        assert ID_RE.match(entry_id), f"id {entry_id!r} is not a lowercase slug"


def test_every_entry_loads_as_its_kind(entries: list[dict[str, Any]]) -> None:
    for e in entries:
        loaded = entry_from_dict(e, builtin=True)
        assert loaded.kind == e["kind"] and loaded.base_model == e.get("base_model"), e["id"]
        runs = e["kind"] in RUNNABLE or (e["kind"] == "embedding" and e.get("format") == "gguf")
        assert loaded.source == "hf" and loaded.runnable == runs, e["id"]


# -- entries -------------------------------------------------------------------------------


def test_required_fields_and_types(entries: list[dict[str, Any]]) -> None:
    for e in entries:
        assert set(e) <= ENTRY_KEYS, f"{e.get('id')}: unknown keys {set(e) - ENTRY_KEYS}"
        required = dict(ENTRY_REQUIRED)
        if e.get("kind") in MODEL_KINDS:
            required.update(MODEL_REQUIRED)
        for key in required:
            assert key in e, f"{e.get('id')}: missing {key}"
        for key, typ in {**ENTRY_REQUIRED, **MODEL_REQUIRED}.items():
            if key not in e:
                continue
            if typ is int:
                assert _is_int(e[key]) and e[key] > 0, f"{e['id']}: {key} must be a positive int"
            else:
                assert isinstance(e[key], typ), f"{e['id']}: {key} must be {typ}"
        assert isinstance(e["gated"], bool), f"{e['id']}: gated must be bool"
        assert e["format"] in FORMATS, f"{e['id']}: bad format {e['format']!r}"
        assert REPO_RE.match(e["repo"]), f"{e['id']}: repo {e['repo']!r} is not owner/name"
        assert e["revision"].strip(), f"{e['id']}: empty revision"
        assert e["name"].strip() and e["description"].strip(), e["id"]
        assert "\n" not in e["description"], f"{e['id']}: description must be one line"
        assert all(isinstance(t, str) and t for t in e["tags"]), f"{e['id']}: bad tags"


def test_kinds_come_from_the_vocabulary(entries: list[dict[str, Any]]) -> None:
    for e in entries:
        assert e["kind"] in KINDS and e["kind"] != UNKNOWN, f"{e['id']}: kind {e['kind']!r}"
    kinds = {e["kind"] for e in entries}
    # the catalog covers what GPU pods keep: text, vision, embeddings and image models
    assert {"llm", "vlm", "embedding", "diffusion", "lora", "vae"} <= kinds


def test_base_model_exactly_where_it_applies(entries: list[dict[str, Any]]) -> None:
    for e in entries:
        if e["kind"] in NEEDS_BASE:
            assert e.get("base_model") in BASE_MODELS, f"{e['id']}: needs a base_model"
        else:
            assert "base_model" not in e, f"{e['id']}: base_model only for LoRA/VAE/…"


def test_gguf_entries_have_quants_and_one_default(entries: list[dict[str, Any]]) -> None:
    for e in (e for e in entries if e["format"] == "gguf"):
        assert "files" not in e, f"{e['id']}: gguf entries list files under quants"
        quants = e.get("quants")
        assert isinstance(quants, list) and quants, f"{e['id']}: needs at least one quant"
        names = [q.get("quant") for q in quants]
        assert len(names) == len(set(names)), f"{e['id']}: duplicate quant names"
        defaults = [q for q in quants if q.get("default") is True]
        assert len(defaults) == 1, f"{e['id']}: exactly one default quant, got {len(defaults)}"
        if "Q4_K_M" in names and e["kind"] in (LLM, VLM):
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
            paths = [f["path"] for f in q["files"]]
            assert len(paths) == len(set(paths)), f"{e['id']} {q['quant']}: duplicate files"


def test_split_gguf_shards_are_complete(entries: list[dict[str, Any]]) -> None:
    split = 0
    for e in (e for e in entries if e["format"] == "gguf"):
        for q in e["quants"]:
            models = [f["path"] for f in q["files"] if f.get("role") != "projector"]
            _check_shards(f"{e['id']} {q['quant']}", models)
            split += len(models) > 1
    assert split >= 4, "the catalog should carry split GGUFs (70B-class and bigger)"


def test_shard_checker_rejects_broken_sets() -> None:
    for bad in (
        ["m-00001-of-00003.gguf", "m-00002-of-00003.gguf"],  # one missing
        ["m-00001-of-00002.gguf", "m-00003-of-00002.gguf"],  # not consecutive
        ["m-00002-of-00002.gguf", "m-00001-of-00002.gguf"],  # out of order
        ["a-00001-of-00002.gguf", "b-00002-of-00002.gguf"],  # two sets
        ["m-00001-of-00002.gguf", "m-00002-of-00003.gguf"],  # counts disagree
        ["m-00001-of-00001.gguf", "x.gguf"],  # split and unsplit mixed
        ["x.gguf", "y.gguf"],
    ):
        with pytest.raises(AssertionError):
            _check_shards("t", bad)
    _check_shards("t", ["d/m-00001-of-00002.gguf", "d/m-00002-of-00002.gguf"])


def test_vlm_quants_carry_their_projector(entries: list[dict[str, Any]]) -> None:
    vlms = [e for e in entries if e["kind"] == VLM]
    assert len(vlms) >= 4
    for e in entries:
        for q in e.get("quants", []):
            projectors = [f for f in q["files"] if f.get("role") == "projector"]
            mmproj = [f for f in q["files"] if "mmproj" in f["path"].lower()]
            assert projectors == mmproj, f"{e['id']} {q['quant']}: mmproj files are projectors"
            expected = 1 if e["kind"] == VLM else 0
            assert len(projectors) == expected, f"{e['id']} {q['quant']}: projector count"
        if e["kind"] == VLM:
            assert e["format"] == "gguf", f"{e['id']}: VLM entries are GGUF + projector"


def test_file_entries_have_their_weights(entries: list[dict[str, Any]]) -> None:
    for e in (e for e in entries if e["format"] in ("safetensors", "diffusers")):
        assert "quants" not in e, f"{e['id']}: {e['format']} entries use files, not quants"
        files = e.get("files")
        assert isinstance(files, list) and files, f"{e['id']}: needs files"
        for f in files:
            _check_file(e["id"], f)
            assert f.get("role") != "projector", f"{e['id']}: projectors belong to GGUF VLMs"
        paths = [f["path"] for f in files]
        assert len(paths) == len(set(paths)), f"{e['id']}: duplicate file paths"
        assert any(p.endswith(".safetensors") for p in paths), f"{e['id']}: no .safetensors"
        if e["format"] == "diffusers":
            assert "model_index.json" in paths, f"{e['id']}: a diffusers folder needs it"
            assert any("/" in p for p in paths), f"{e['id']}: components live in folders"
        elif e["kind"] in MODEL_KINDS:  # a transformers / sentence-transformers folder
            assert "config.json" in paths, f"{e['id']}: missing config.json"
            assert any(p.startswith("tokenizer") for p in paths), f"{e['id']}: no tokenizer"


def test_all_file_paths_safe_and_sizes_in_range(entries: list[dict[str, Any]]) -> None:
    for e in entries:
        files = _all_files(e)
        assert files, e["id"]
        for f in files:
            _check_file(e["id"], f)


def test_file_checker_rejects_bad_files() -> None:
    good = {"path": "m.gguf", "size": 1}
    _check_file("t", good)
    for bad in (
        {"path": "m.gguf", "size": 0},
        {"path": "m.gguf", "size": -5},
        {"path": "m.gguf", "size": 1 << 50},
        {"path": "m.gguf", "size": 1.5},
        {"path": "m.gguf", "size": True},
        {"path": "m.gguf", "size": 1, "size_estimated": False},
        {"path": "m.gguf", "size": 1, "role": "decoder"},
        {"path": "m.gguf", "size": 1, "sha": "x"},
    ):
        with pytest.raises(AssertionError):
            _check_file("t", bad)


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


# -- access and sources ----------------------------------------------------------------------


def test_gated_flags(entries: list[dict[str, Any]]) -> None:
    by_id = {e["id"]: e for e in entries}
    for e in entries:
        owner = e["repo"].split("/", 1)[0]
        # Community GGUF mirrors are not gated; the gated flag belongs on vendor originals.
        if owner in {"bartowski", "lmstudio-community", "TheBloke", "unsloth", "ggml-org"}:
            assert e["gated"] is False, f"{e['id']}: community repo marked gated"
        if owner in {"meta-llama", "google", "mistralai"}:
            assert e["gated"] is True, f"{e['id']}: vendor original not marked gated"
    assert by_id["flux.1-dev"]["gated"] is True  # black-forest-labs/FLUX.1-dev asks first
    for free in ("flux.1-schnell", "sdxl-base-1.0", "sdxl-refiner-1.0", "sdxl-turbo"):
        assert by_id[free]["gated"] is False, free


def test_every_size_has_a_source(entries: list[dict[str, Any]], sources: dict[str, str]
                                 ) -> None:
    ids = {e["id"] for e in entries}
    assert set(sources) == ids, (
        f"SOURCES.md out of step: missing {sorted(ids - set(sources))}, "
        f"stale {sorted(set(sources) - ids)}"
    )
    for e in entries:
        confirmed = [f for f in _all_files(e) if not f.get("size_estimated")]
        row = sources[e["id"]]
        if confirmed:
            assert re.search(r"https://\S+", row), f"{e['id']}: confirmed sizes need a URL"
        else:
            assert "estimated" in row, f"{e['id']}: all sizes estimated, say so in SOURCES.md"
