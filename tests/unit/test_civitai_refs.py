"""CivitAI references, types and file choice, without a server."""

from __future__ import annotations

import pytest

from tui import kinds
from tui.civitai.client import CivitaiFile, CivitaiVersion, kind_for, parse_ref
from tui.download.sources import JobSpec, parse_source
from tui.errors import InvalidInputError


@pytest.mark.parametrize(("text", "ref"), [
    ("civitai:123", (123, None)),
    ("CIVITAI:123@456", (123, 456)),
    ("https://civitai.com/models/123", (123, None)),
    ("https://civitai.com/models/123/some-name?modelVersionId=456", (123, 456)),
    ("https://www.civitai.com/models/123/x?modelVersionId=456&foo=1", (123, 456)),
    ("https://huggingface.co/models/123", None),
    ("owner/repo", None),
])
def test_parse_ref(text: str, ref: tuple[int, int | None] | None) -> None:
    assert parse_ref(text) == ref


@pytest.mark.parametrize("text", [
    "https://civitai.com/images/123", "https://civitai.com/models/abc",
    "https://civitai.com/models/1?modelVersionId=1;rm", "https://civitai.com/",
])
def test_civitai_urls_that_name_no_model_are_one_line(text: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_ref(text)
    assert "\n" not in str(err.value)


def test_pull_sources() -> None:
    spec = parse_source("civitai:5@6", allow_pickle=True, files=["a.safetensors"])
    assert (spec.kind, spec.civitai_model, spec.civitai_version, spec.allow_pickle) == (
        "civitai", 5, 6, True)
    assert parse_source("https://example.com/m.gguf", allow_pickle=False).kind == "url"
    with pytest.raises(InvalidInputError):
        JobSpec(kind="civitai", civitai_model=-1)
    again = JobSpec.from_json(spec.to_json())
    again.civitai_pinned, again.model_kind, again.base_model = 6, "lora", "SDXL 1.0"
    assert again.request_json() == spec.request_json() != again.to_json()


@pytest.mark.parametrize(("type_", "kind"), [
    ("Checkpoint", kinds.DIFFUSION), ("LORA", kinds.LORA), ("LoCon", kinds.LORA),
    ("DoRA", kinds.LORA), ("VAE", kinds.VAE), ("Controlnet", kinds.CONTROLNET),
    ("TextualInversion", kinds.TEXTUAL_INVERSION), ("Upscaler", kinds.UNKNOWN),
    ("Workflows", kinds.UNKNOWN), (None, kinds.UNKNOWN),
])
def test_kind_for_type(type_: str | None, kind: str) -> None:
    assert kind_for(type_) == kind
    assert kind in kinds.FOLDERS


def _file(name: str, fmt: str, primary: bool = False, type_: str = "Model") -> CivitaiFile:
    return CivitaiFile(id=1, name=name, type=type_, format=fmt, primary=primary, sha256=None,
                       download_url="https://civitai.com/api/download/models/1")


def test_pick_prefers_safetensors_then_needs_allow_pickle() -> None:
    version = CivitaiVersion(1, 2, "m", "LORA", "v1", "SDXL 1.0", [
        _file("a.ckpt", "PickleTensor", primary=True), _file("a.safetensors", "SafeTensor"),
        _file("vae.safetensors", "SafeTensor", primary=True, type_="VAE")])
    assert version.pick().name == "a.safetensors"
    version.files = version.files[:1]
    with pytest.raises(InvalidInputError, match=r"unsafe format.*--allow-pickle"):
        version.pick()
    assert version.pick(allow_pickle=True).name == "a.ckpt"
