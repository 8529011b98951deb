"""Model file metadata: GGUF headers and safetensors folders, read fast and defensively."""

from tui.metadata.types import ModelMetadata

__all__ = ["ModelMetadata"]
