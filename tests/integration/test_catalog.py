"""Catalog: built-in entries, search, custom entries that persist and validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui.catalog import Catalog
from tui.errors import InvalidInputError, NotFoundError
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
