"""Model file metadata, read fast and defensively: GGUF headers, safetensors files and folders
(MLX, diffusers), ONNX/ORT, TFLite, Core ML and PyTorch pickles (inspected, never loaded).

The readers are exported lazily, so importing :mod:`tui.metadata.types` (which every layer
does) does not import them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from tui.metadata.types import ModelMetadata

if TYPE_CHECKING:
    from tui.metadata.coreml import read_coreml
    from tui.metadata.diffusers import read_diffusers_folder
    from tui.metadata.gguf import (
        gguf_shard_paths,
        read_gguf,
        read_gguf_model,
        read_gguf_set,
        split_gguf_info,
    )
    from tui.metadata.onnx import read_onnx
    from tui.metadata.pytorch import read_pytorch_file, read_pytorch_folder
    from tui.metadata.quant import file_type_name, guess_quant_from_filename
    from tui.metadata.safetensors import (
        read_safetensors,
        read_safetensors_file,
        read_safetensors_folder,
    )
    from tui.metadata.tflite import read_tflite

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
    "read_coreml": "tui.metadata.coreml",
    "read_diffusers_folder": "tui.metadata.diffusers",
    "read_onnx": "tui.metadata.onnx",
    "read_pytorch_file": "tui.metadata.pytorch",
    "read_pytorch_folder": "tui.metadata.pytorch",
    "read_tflite": "tui.metadata.tflite",
}

__all__ = [
    "ModelMetadata",
    "file_type_name",
    "gguf_shard_paths",
    "guess_quant_from_filename",
    "read_coreml",
    "read_diffusers_folder",
    "read_gguf",
    "read_gguf_model",
    "read_gguf_set",
    "read_onnx",
    "read_pytorch_file",
    "read_pytorch_folder",
    "read_safetensors",
    "read_safetensors_file",
    "read_safetensors_folder",
    "read_tflite",
    "split_gguf_info",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
