"""Model file metadata: GGUF headers and safetensors folders, read fast and defensively.

The readers are exported lazily, so importing :mod:`tui.metadata.types` (which every layer
does) does not import them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from tui.metadata.types import ModelMetadata

if TYPE_CHECKING:
    from tui.metadata.gguf import (
        gguf_shard_paths,
        read_gguf,
        read_gguf_model,
        read_gguf_set,
        split_gguf_info,
    )
    from tui.metadata.quant import file_type_name, guess_quant_from_filename
    from tui.metadata.safetensors import (
        read_safetensors,
        read_safetensors_file,
        read_safetensors_folder,
    )

_LAZY = {
    "gguf_shard_paths": "tui.metadata.gguf",
    "read_gguf": "tui.metadata.gguf",
    "read_gguf_model": "tui.metadata.gguf",
    "read_gguf_set": "tui.metadata.gguf",
    "split_gguf_info": "tui.metadata.gguf",
    "file_type_name": "tui.metadata.quant",
    "guess_quant_from_filename": "tui.metadata.quant",
    "read_safetensors": "tui.metadata.safetensors",
    "read_safetensors_file": "tui.metadata.safetensors",
    "read_safetensors_folder": "tui.metadata.safetensors",
}

__all__ = [
    "ModelMetadata",
    "file_type_name",
    "gguf_shard_paths",
    "guess_quant_from_filename",
    "read_gguf",
    "read_gguf_model",
    "read_gguf_set",
    "read_safetensors",
    "read_safetensors_file",
    "read_safetensors_folder",
    "split_gguf_info",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
