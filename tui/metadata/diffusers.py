"""A diffusers folder: ``model_index.json`` naming the pipeline and its components (``unet``,
``vae``, ``text_encoder``, ``transformer``, …), each a subfolder with its config and weights.

The pipeline class gives the kind (diffusion) and family (SDXL, Flux, …); each component's
safetensors headers are read (one weight variant per component: the plain one if present,
else the first of ``fp16``/``bf16``/…); pickle weights are listed, never opened.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from tui import kinds as K
from tui.errors import MetadataError
from tui.metadata.kinds import pipeline_family
from tui.metadata.types import ModelMetadata, sanitize

__all__ = ["read_diffusers_folder"]

MAX_COMPONENTS = 32
MAX_FILES_PER_COMPONENT = 64
_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_VARIANT = re.compile(r"\.(fp16|fp32|bf16|fp8|non_ema|ema)\.", re.IGNORECASE)


def _component_files(folder: Path) -> tuple[list[str], list[str]]:
    """(safetensors files of one variant, pickle files) of a component folder."""
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_file())
    except OSError:
        return [], []
    st = [n for n in names if n.lower().endswith(".safetensors")]
    plain = [n for n in st if not _VARIANT.search(n)]
    if not plain and st:
        variant = _VARIANT.search(st[0]).group(1)  # type: ignore[union-attr]
        plain = [n for n in st if f".{variant}." in n]
    pickles = [n for n in names if n.lower().endswith((".bin", ".pt", ".pth", ".ckpt"))]
    return plain[:MAX_FILES_PER_COMPONENT], pickles[:MAX_FILES_PER_COMPONENT]


def read_diffusers_folder(path: str | os.PathLike[str]) -> ModelMetadata:
    """Metadata of a diffusers folder: pipeline class and family, components with their
    classes and parameter counts, total parameters and weight bytes. Raises
    :class:`MetadataError` (one line) for a missing or malformed ``model_index.json`` or a
    malformed safetensors header."""
    from tui.metadata.safetensors import _FileSummary, _read_header, _read_json

    folder = Path(path)
    index = _read_json(folder / "model_index.json")
    if not isinstance(index, dict):
        raise MetadataError(f"{folder / 'model_index.json'}: not a JSON object")
    cls = index.get("_class_name")
    if not isinstance(cls, str) or not cls or len(cls) > 200:
        raise MetadataError(f"{folder / 'model_index.json'}: no pipeline _class_name")
    components: dict[str, Any] = {}
    total = _FileSummary()
    pickles: list[str] = []
    for name, value in index.items():
        if name.startswith("_") or not (isinstance(value, list) and len(value) == 2):
            continue
        if len(components) >= MAX_COMPONENTS:
            raise MetadataError(f"{folder}: more than {MAX_COMPONENTS} components")
        library, comp_cls = value
        if not _COMPONENT.match(name):
            raise MetadataError(f"{folder / 'model_index.json'}: component name "
                                f"{name[:60]!r} is not a plain folder name")
        entry: dict[str, Any] = {
            "class": comp_cls[:100] if isinstance(comp_cls, str) else None,
            "library": library[:100] if isinstance(library, str) else None,
        }
        sub = folder / name
        if sub.is_dir():
            st, pk = _component_files(sub)
            part = _FileSummary()
            for file_name in st:
                part.add(_read_header(sub / file_name))
            if st:
                entry["parameters"] = part.parameters
                entry["files"] = st
                total.add(part)
            if pk:
                pickles += [f"{name}/{n}" for n in pk]
        components[name] = entry
    dtype = total.dominant_dtype()
    extra: dict[str, Any] = {
        "pipeline": cls,
        "components": components,
        "n_tensors": total.n_tensors,
    }
    family = pipeline_family(cls)
    if family:
        extra["base_family"] = family
    if pickles:
        extra["pickle_weights"] = pickles
        extra["unsafe_format"] = not total.n_tensors  # only pickles: nothing safe to load
    kind = K.CONTROLNET if "ControlNet" in cls and "Pipeline" not in cls else K.DIFFUSION
    meta = ModelMetadata(
        format="safetensors" if total.n_tensors or not pickles else "pytorch",
        name=folder.name,
        architecture=family,
        parameters=total.parameters,
        quantization=dtype,
        dtype=dtype,
        tensor_bytes=total.bytes,
        kind=kind,
        extra=extra,
    )
    return sanitize(meta)
