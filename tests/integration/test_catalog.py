"""Catalog: built-in entries, search, kinds, custom entries that persist and validate, and
``modeldeck catalog --kind`` / ``modeldeck fit`` on entries ModelDeck does not run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tui.catalog import Catalog
from tui.errors import InvalidInputError, NotFoundError
from tui.kinds import RUNNABLE
from tui.services import build_services

from tests.support.gguf import write_gguf
from tests.support.safetensors import write_safetensors_folder


def test_builtin_entries_and_search(services) -> None:
    cat = services.catalog
    assert 50 <= len(cat.builtin) <= 100
    gguf = cat.search(format="gguf")
    assert gguf and all(e.format == "gguf" for e in gguf)
    qwen = cat.search(text="qwen coder")
    assert qwen and all("qwen" in e.id and "coder" in (e.id + " ".join(e.tags)) for e in qwen)
    entry = gguf[0]
    default = entry.default_quant
    assert default is not None and entry.files_for() == list(default.files)
    assert entry.size_for() == default.size > 0
    with pytest.raises(NotFoundError, match="available"):
        entry.quant("Q9_Z")


def test_custom_entries_persist_across_instances(services, settings) -> None:
    cat = services.catalog
    e = cat.add_hf("someone/Tiny-GGUF", quant="Q4_K_M")
    assert e.source == "hf" and e.format == "gguf" and not e.builtin
    # nobody has looked inside a custom entry yet: its kind is unknown, the runtime decides
    assert e.kind == "unknown" and e.runnable
    cat.add_url("http://127.0.0.1:9/files/x.gguf", sha256="A" * 64, entry_id="xurl")
    again = build_services(settings)
    try:
        ids = {c.id for c in again.catalog.custom()}
        assert ids == {e.id, "xurl"}
        assert again.catalog.require("xurl").sha256 == "a" * 64
    finally:
        again.close()
    cat.remove("xurl")
    assert cat.get("xurl") is None
    with pytest.raises(InvalidInputError, match="built-in"):
        cat.remove(cat.builtin[0].id)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.add_hf("not a repo"), "not a Hub repo id"),
        (lambda c: c.add_hf("a/b", files=["../etc/passwd"]), "'..'"),
        (lambda c: c.add_hf("a/b", files=["/abs.gguf"]), "absolute"),
        (lambda c: c.add_hf("a/b", format="onnx"), "unknown format"),
        (lambda c: c.add_url("ftp://x/y"), "not an http"),
        (lambda c: c.add_url("https://x/y.gguf", sha256="123"), "64 hex"),
        (lambda c: c.add_hf("a/b", entry_id="Bad Id!"), "bad id"),
    ],
)
def test_bad_custom_entries_change_nothing(services, call, message) -> None:
    with pytest.raises(InvalidInputError, match=message):
        call(services.catalog)
    assert services.catalog.custom() == []


def test_add_local(services, tmp_path: Path) -> None:
    cat: Catalog = services.catalog
    g = write_gguf(tmp_path / "x" / "my-model.Q8_0.gguf")
    e = cat.add_local(g)
    assert e.source == "local" and e.format == "gguf" and e.local_path == str(g.resolve())
    st = write_safetensors_folder(tmp_path / "st")
    assert cat.add_local(st).format == "safetensors"
    with pytest.raises(InvalidInputError, match="taken"):
        cat.add_local(g)
    with pytest.raises(NotFoundError):
        cat.add_local(tmp_path / "nope.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="neither"):
        cat.add_local(tmp_path / "empty")


def runs(kind: str, fmt: str | None) -> bool:
    """What the runtime loads: LLMs and VLMs, and GGUF embedding models (for embeddings)."""
    return kind in RUNNABLE or (kind == "embedding" and fmt == "gguf")


def test_builtin_kinds_and_search_by_kind(services) -> None:
    cat = services.catalog
    kinds = {e.kind for e in cat.builtin}
    assert {"llm", "vlm", "embedding", "diffusion", "lora", "vae"} <= kinds
    for kind in kinds:
        found = cat.search(kind=kind)
        assert found and all(e.kind == kind for e in found)
        assert all(e.runnable == runs(kind, e.format) for e in found)
    # kind and base model are searchable words too
    assert {e.id for e in cat.search(text="lora sdxl")} == {
        e.id for e in cat.builtin if e.kind == "lora" and e.base_model == "sdxl"}
    vlm = cat.require("qwen2.5-vl-3b-instruct-gguf")
    projector = vlm.default_quant.projector
    assert projector is not None and projector.path.startswith("mmproj-")
    assert projector in vlm.files_for() and len(vlm.files_for()) == 2


@pytest.mark.parametrize("kind", ["diffusion", "lora", "vae", "embedding", "vlm"])
def test_catalog_kind_filter(cli, kind: str) -> None:
    code, out, err = cli("catalog", "--kind", kind, "--json")
    entries = json.loads(out)
    assert code == 0 and err == "" and entries
    assert all(e["kind"] == kind and e["runnable"] == runs(kind, e["format"]) for e in entries)
    for e in entries:
        files = [f for q in e["quants"] for f in q["files"]] + e["files"]
        assert files and all(f["size"] > 0 for f in files)
        if kind in ("lora", "vae"):
            assert e["base_model"] in ("sdxl", "flux1")
        if kind == "vlm":
            assert all(any(f.get("role") == "projector" for f in q["files"])
                       for q in e["quants"])
    code, out, _ = cli("catalog", "--kind", kind)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["ID", "KIND", "FORMAT"]
    rows = [line.split() for line in lines[1:len(entries) + 1]]
    assert [r[0] for r in rows] == [e["id"] for e in entries]
    assert all(r[1] == kind for r in rows)
    if all(runs(kind, e["format"]) for e in entries):
        assert "Not runnable here" not in out
    else:
        assert lines[-1] == f"Not runnable here (downloaded, sized and deleted only): {kind}."


def test_catalog_bad_kind_is_refused(cli) -> None:
    with pytest.raises(SystemExit) as exc:
        cli("catalog", "--kind", "spaceship")
    assert exc.value.code == 2


@pytest.mark.parametrize("entry_id", ["flux.1-dev", "sdxl-base-1.0-diffusers", "lcm-lora-sdxl"])
def test_fit_on_an_entry_modeldeck_does_not_run_is_one_line(cli, services, entry_id) -> None:
    entry = services.catalog.require(entry_id)
    code, out, err = cli("fit", entry_id)
    assert code == 0 and err == ""
    (line,) = out.splitlines()
    assert line.startswith(f"{entry.name} ({entry.kind}) is not runnable here; needs ")
    assert " on disk (" in line and " free in " in line
    code, out, _ = cli("fit", entry_id, "--json")
    data = json.loads(out)
    assert code == 0 and data["runnable"] is False and data["kind"] == entry.kind
    assert data["disk_bytes"] == entry.size_for() > 0 and isinstance(data["fits_on_disk"], bool)


def test_fit_takes_the_quant(cli, services) -> None:
    """A GGUF embedding model runs (for embeddings): fitted like a GGUF, by the quant asked."""
    entry = services.catalog.require("nomic-embed-text-v1.5-gguf")
    assert entry.kind == "embedding" and entry.runnable
    code, out, _ = cli("fit", entry.id, "--quant", "Q4_K_M", "--json")
    assert code == 0 and json.loads(out)["estimate"]["weights_bytes"] == entry.quant("Q4_K_M").size
    code, out, err = cli("fit", entry.id, "--quant", "Q9_Z")
    assert code != 0 and out == "" and len(err.strip().splitlines()) == 1
    assert "has no quant 'Q9_Z'" in err and "Traceback" not in err
