"""Built-in catalog entries of the new shapes download exactly their files from the fake Hub:
a VLM quant with its projector, every shard of a split GGUF, a diffusers folder, a LoRA.

The repos carry the catalog's real file names with tiny real files standing in (written with
``gguf`` and ``safetensors``), next to files of the same repo that must not be fetched.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tui.catalog import Catalog, CatalogEntry
from tui.download import JobSpec
from tui.download.planner import resolve_catalog
from tui.download.service import DownloadService

from tests.fakehub import FakeHub
from tests.fakehub.testing import make_service, part_files
from tests.support.gguf import write_gguf, write_split_gguf


@pytest.fixture
async def catalog_service(dl_settings) -> DownloadService:
    """A download service whose catalog holds the built-in entries."""
    svc = make_service(dl_settings)
    svc.catalog = Catalog(svc.inventory)
    yield svc
    await svc.stop()
    svc.db.close()


def _gguf(tmp: Path, name: str, *, arch: str = "llama", seed: int = 0) -> bytes:
    return write_gguf(tmp / name, arch=arch, seed=seed).read_bytes()


def _safetensors(tmp: Path, name: str, tensors: dict[str, tuple[int, ...]]) -> bytes:
    path = tmp / name.replace("/", "_")
    save_file({k: np.zeros(shape, dtype=np.float16) for k, shape in tensors.items()}, str(path))
    return path.read_bytes()


def _paths(entry: CatalogEntry, quant: str | None = None) -> list[str]:
    return [f.path for f in entry.files_for(quant)]


async def _pull(svc: DownloadService, entry_id: str, quant: str | None = None):
    [job] = await svc.run_until_complete(
        [svc.enqueue(JobSpec(kind="catalog", catalog_id=entry_id, quant=quant))])
    assert job.state == "done", job.error
    return job


def _on_disk(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


async def test_vlm_quant_downloads_its_projector(hub: FakeHub, catalog_service, dl_settings,
                                                 tmp_path: Path) -> None:
    entry = catalog_service.catalog.require("qwen2.5-vl-7b-instruct-gguf")
    q4, q8 = entry.quant("Q4_K_M"), entry.quant("Q8_0")
    projector = q4.projector
    assert projector is not None and projector.role == "projector"
    files = {
        q4.files[0].path: _gguf(tmp_path, "q4.gguf", arch="qwen2vl", seed=1),
        q8.files[0].path: _gguf(tmp_path, "q8.gguf", arch="qwen2vl", seed=2),
        projector.path: _gguf(tmp_path, "mmproj.gguf", arch="clip", seed=3),
        "mmproj-Qwen2.5-VL-7B-Instruct-f16.gguf": _gguf(tmp_path, "f16.gguf", arch="clip"),
        "README.md": b"# Qwen2.5-VL\n",
    }
    hub.add_repo(entry.repo, files)
    job = await _pull(catalog_service, entry.id)
    # the default quant is the model file plus its projector, nothing else of the repo
    assert [f.path for f in job.files] == _paths(entry) == [q4.files[0].path, projector.path]
    root = dl_settings.models_dir / entry.repo
    assert _on_disk(root) == set(_paths(entry))
    for name in _paths(entry):
        assert (root / name).read_bytes() == files[name]
    assert part_files(dl_settings.models_dir) == []
    # another quant brings the same projector along (already on disk from the same commit)
    job = await _pull(catalog_service, entry.id, "Q8_0")
    assert [f.path for f in job.files] == [q8.files[0].path, projector.path]
    assert _on_disk(root) == {q4.files[0].path, q8.files[0].path, projector.path}


async def test_split_gguf_entry_downloads_every_shard(hub: FakeHub, catalog_service,
                                                      dl_settings, tmp_path: Path) -> None:
    entry = catalog_service.catalog.require("gpt-oss-120b-gguf")
    shards = _paths(entry)
    assert shards == [f"gpt-oss-120b-mxfp4-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    written = write_split_gguf(tmp_path, "gpt-oss-120b-mxfp4", 3)
    assert [p.name for p in written] == shards
    hub.add_repo(entry.repo, {p.name: p.read_bytes() for p in written} | {
        "gpt-oss-120b-F16.gguf": _gguf(tmp_path, "other.gguf")})
    job = await _pull(catalog_service, entry.id)
    assert [f.path for f in job.files] == shards
    root = dl_settings.models_dir / entry.repo
    assert _on_disk(root) == set(shards)
    # the three shards are one installed model
    model = catalog_service.inventory.get_model(job.model_id)
    assert model is not None and sorted(Path(f.path).name for f in model.files) == shards


async def test_diffusers_folder_entry_downloads_the_listed_files(
        hub: FakeHub, catalog_service, dl_settings, tmp_path: Path) -> None:
    entry = catalog_service.catalog.require("sdxl-base-1.0-diffusers")
    single = catalog_service.catalog.require("sdxl-base-1.0")  # same repo, other layout
    assert entry.format == "diffusers" and entry.repo == single.repo
    files: dict[str, bytes] = {}
    for path in _paths(entry):
        if path.endswith(".safetensors"):
            files[path] = _safetensors(tmp_path, path, {"weight": (4, 4)})
        elif path.endswith(".json"):
            files[path] = json.dumps({"_class_name": path.split("/")[0]}).encode()
        else:
            files[path] = b"stand-in " + path.encode()
    others = {
        single.files[0].path: _safetensors(tmp_path, "single", {"model.w": (8, 8)}),
        "unet/diffusion_pytorch_model.safetensors": _safetensors(tmp_path, "fp32", {"w": (8,)}),
        "sd_xl_offset_example-lora_1.0.safetensors": _safetensors(tmp_path, "lora", {"w": (2,)}),
    }
    hub.add_repo(entry.repo, files | others)
    job = await _pull(catalog_service, entry.id)
    assert sorted(f.path for f in job.files) == sorted(_paths(entry))
    root = dl_settings.models_dir / entry.repo
    assert _on_disk(root) == set(_paths(entry))  # fp16 variant only, no single-file checkpoint
    assert (root / "unet" / "diffusion_pytorch_model.fp16.safetensors").read_bytes() == files[
        "unet/diffusion_pytorch_model.fp16.safetensors"]


async def test_lora_entry_downloads_its_single_file(hub: FakeHub, catalog_service, dl_settings,
                                                    tmp_path: Path) -> None:
    entry = catalog_service.catalog.require("lcm-lora-sdxl")
    assert entry.kind == "lora" and entry.base_model == "sdxl" and len(entry.files) == 1
    data = _safetensors(tmp_path, "lora", {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)})
    hub.add_repo(entry.repo, {entry.files[0].path: data, "README.md": b"# LCM-LoRA\n"})
    job = await _pull(catalog_service, entry.id)
    assert [f.path for f in job.files] == [entry.files[0].path]
    root = dl_settings.models_dir / entry.repo
    assert _on_disk(root) == {entry.files[0].path}
    assert catalog_service.inventory.get_model(job.model_id).catalog_id == entry.id


@pytest.mark.parametrize(("entry_id", "quant"), [
    ("qwen3-235b-a22b-instruct-2507-gguf", "Q8_0"),
    ("llama-3.3-70b-instruct-gguf", "Q8_0"),
    ("gemma-3-27b-it-qat-gguf", None),
    ("flux.1-dev", None),
    ("flux1-text-encoders", None),
])
def test_resolve_catalog_asks_the_hub_for_exactly_the_entry_files(services, entry_id, quant
                                                                  ) -> None:
    entry = services.catalog.require(entry_id)
    spec = resolve_catalog(JobSpec(kind="catalog", catalog_id=entry_id, quant=quant),
                           services.catalog)
    assert spec.kind == "hf" and spec.repo == entry.repo and spec.include == []
    assert spec.files == _paths(entry, quant) and len(spec.files) >= 2
    assert spec.catalog_id == entry_id and spec.name == entry.name
