"""Discovery over a real tree: GGUF, split GGUF, safetensors folders, an HF cache layout,
duplicates, incremental rescans, and what happens to files that vanish or are corrupt."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tui.discovery import Scanner
from tui.errors import InvalidInputError, NotFoundError
from tui.settings import Settings

from tests.support.gguf import write_gguf
from tests.support.safetensors import write_safetensors_folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_hf_cache(hub: Path, repo: str, files: dict[str, Path], commit: str = "c" * 40) -> Path:
    """Lay files out as huggingface_hub's cache does: blobs by hash, snapshot symlinks."""
    base = hub / ("models--" + repo.replace("/", "--"))
    (base / "blobs").mkdir(parents=True, exist_ok=True)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    for name, src in files.items():
        data = src.read_bytes()
        blob_name = (hashlib.sha256(data).hexdigest() if name.endswith((".gguf", ".safetensors"))
                     else hashlib.sha1(data).hexdigest())
        blob = base / "blobs" / blob_name
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snap


@pytest.fixture
def tree(settings: Settings, tmp_path: Path) -> dict[str, Path]:
    m = settings.models_dir
    paths = {
        "single": write_gguf(m / "loose" / "tiny-Q4_K_M.gguf", name="Tiny Llama", file_type=15),
        "split1": write_gguf(m / "big" / "big-Q8_0-00001-of-00002.gguf", file_type=7, seed=1),
        "split2": write_gguf(m / "big" / "big-Q8_0-00002-of-00002.gguf", file_type=7, seed=2),
        "st": write_safetensors_folder(m / "acme" / "st-model", shards=2, shapes={
            "a.weight": (8, 8), "b.weight": (8, 4), "c.weight": (4,)}),
    }
    (m / "loose" / "partial.gguf.part").write_bytes(b"half")
    (m / ".hidden").mkdir()
    write_gguf(m / ".hidden" / "secret.gguf")
    return paths


def test_scan_finds_every_kind(services, settings, tree) -> None:
    report = Scanner(settings, services.inventory).scan()
    assert report.errors == []
    by_path = {m.path: m for m in services.inventory.list_models()}
    assert set(by_path) == {str(tree["single"]), str(tree["split1"]), str(tree["st"])}

    single = by_path[str(tree["single"])]
    assert single.format == "gguf" and single.quantization == "Q4_K_M"
    assert single.name == "Tiny Llama" and single.architecture == "llama"
    assert single.context_length == 4096 and single.size_bytes == tree["single"].stat().st_size
    assert single.metadata.n_layers == 2 and single.metadata.has_chat_template

    split = by_path[str(tree["split1"])]
    assert [Path(f.path).name for f in split.files] == [
        "big-Q8_0-00001-of-00002.gguf", "big-Q8_0-00002-of-00002.gguf"]
    assert split.quantization == "Q8_0" and split.metadata.split_count == 2
    one = services.inventory  # parameters are summed over shards
    assert split.parameters == 2 * (64 * 32 + 64)
    assert split.size_bytes == tree["split1"].stat().st_size + tree["split2"].stat().st_size
    del one

    st = by_path[str(tree["st"])]
    assert st.format == "safetensors" and st.architecture == "llama"
    assert st.parameters == 8 * 8 + 8 * 4 + 4
    assert st.context_length == 2048
    names = {Path(f.path).name for f in st.files}
    assert {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
            "config.json"} <= names


def test_rescan_is_incremental(services, settings, tree) -> None:
    scanner = Scanner(settings, services.inventory)
    first = scanner.scan()
    assert first.files_read == 3 and first.files_cached == 0 and len(first.added) == 3
    second = scanner.scan()
    assert second.files_read == 0 and second.files_cached == 3
    assert second.added == [] and second.updated == []
    # Touch one file: only it is read again.
    os.utime(tree["single"], ns=(1, 1))
    third = scanner.scan()
    assert third.files_read == 1 and third.files_cached == 2
    assert len(services.inventory.list_models()) == 3


def test_rescan_keeps_user_data(services, settings, tree) -> None:
    scanner = Scanner(settings, services.inventory)
    scanner.scan()
    model = services.inventory.find_by_path(str(tree["single"]))
    services.inventory.record_metrics(model.id, tokens_per_s=42.0)
    os.utime(tree["single"], ns=(5, 5))
    scanner.scan()
    again = services.inventory.require_model(model.id)
    assert again.tokens_per_s == 42.0 and again.installed_at == model.installed_at


def test_incomplete_split_and_corrupt_files_are_reported_not_registered(
    services, settings, tmp_path
) -> None:
    m = settings.models_dir
    write_gguf(m / "x-00001-of-00003.gguf")
    write_gguf(m / "x-00002-of-00003.gguf")
    (m / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    (m / "notgguf.gguf").write_bytes(b"hello world, not a model")
    report = Scanner(settings, services.inventory).scan()
    errors = dict(report.errors)
    assert "2 of 3 shards" in errors[str(m / "x-00001-of-00003.gguf")]
    assert str(m / "bad.gguf") in errors and str(m / "notgguf.gguf") in errors
    assert all("\n" not in e for e in errors.values())
    assert services.inventory.list_models() == []
    # The bad file's verdict is cached: not re-read while unchanged.
    again = Scanner(settings, services.inventory).scan()
    assert again.files_read == 0 and str(m / "bad.gguf") in dict(again.errors)


def test_vanished_files_become_missing(services, settings, tree) -> None:
    scanner = Scanner(settings, services.inventory)
    scanner.scan()
    tree["single"].unlink()
    report = scanner.scan()
    (gone,) = report.missing
    assert services.inventory.require_model(gone).status == "missing"


def test_duplicates_are_found_and_hard_links_are_not(services, tmp_path, tree) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(tree["single"], extra / "copy.gguf")
    os.link(tree["single"], extra / "hardlink.gguf")
    settings = Settings(models_dir=tree["single"].parents[1], state_dir=tmp_path / "state",
                        extra_dirs=(extra,), scan_hf_cache=False)
    report = Scanner(settings, services.inventory).scan()
    (dup,) = report.duplicates
    assert not dup.verified and dup.key.startswith("sample:")
    assert set(dup.paths) == {str(tree["single"]), str(extra / "copy.gguf"),
                              str(extra / "hardlink.gguf")}
    size = tree["single"].stat().st_size
    assert dup.wasted_bytes == size  # three paths, two inodes
    verified = Scanner(settings, services.inventory).scan(verify_duplicates=True)
    assert verified.duplicates[0].verified and verified.duplicates[0].key == _sha(tree["single"])


def test_same_size_different_content_is_not_a_duplicate(services, settings) -> None:
    m = settings.models_dir
    write_gguf(m / "a.gguf", seed=1)
    write_gguf(m / "b.gguf", seed=2)
    assert (m / "a.gguf").stat().st_size == (m / "b.gguf").stat().st_size
    assert Scanner(settings, services.inventory).scan().duplicates == []


def test_hf_cache_layout(services, settings, tmp_path, monkeypatch) -> None:
    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    src = tmp_path / "src"
    g = write_gguf(src / "q.gguf", file_type=15)
    st = write_safetensors_folder(src / "st")
    make_hf_cache(hub, "acme/Tiny-GGUF", {"tiny-Q4_K_M.gguf": g}, commit="a" * 40)
    make_hf_cache(hub, "acme/tiny-st", {
        "model.safetensors": st / "model.safetensors",
        "config.json": st / "config.json",
    }, commit="b" * 40)
    # The same GGUF also sits loose in the models dir: a duplicate of the cached blob.
    settings.models_dir.mkdir(parents=True)
    shutil.copy(g, settings.models_dir / "copy.gguf")

    cfg = replace(settings, scan_hf_cache=True)
    report = Scanner(cfg, services.inventory).scan()
    assert report.errors == []
    cached = [m for m in services.inventory.list_models() if m.source == "hf-cache"]
    by_repo = {m.source_ref: m for m in cached}
    assert set(by_repo) == {"acme/Tiny-GGUF", "acme/tiny-st"}
    gg = by_repo["acme/Tiny-GGUF"]
    assert gg.revision == "a" * 40 and gg.quantization == "Q4_K_M"
    assert gg.files[0].sha256 == _sha(g)  # taken from the blob name, not re-hashed
    assert by_repo["acme/tiny-st"].format == "safetensors"
    (dup,) = report.duplicates
    assert dup.wasted_bytes == g.stat().st_size


def test_scan_dir_must_be_inside_managed_folders(services, settings, tmp_path, tree) -> None:
    scanner = Scanner(settings, services.inventory)
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(InvalidInputError, match="outside the folders ModelDeck manages"):
        scanner.scan(outside)
    with pytest.raises(NotFoundError):
        scanner.scan(tmp_path / "nope")
    assert services.inventory.list_models() == []
    report = scanner.scan(settings.models_dir / "loose")
    assert [Path(m.path).name for m in report.models] == ["tiny-Q4_K_M.gguf"]
