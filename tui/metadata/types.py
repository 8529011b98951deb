"""The metadata record every reader returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class ModelMetadata:
    """What ModelDeck knows about one model (a GGUF file or set, or a safetensors folder).

    Fields a reader cannot determine stay ``None``. ``extra`` holds reader-specific details
    that are worth keeping (e.g. ``rope_freq_base``) but have no column of their own.
    """

    format: str  # "gguf" or "safetensors"
    architecture: str | None = None  # e.g. "llama", "qwen2"; for safetensors the HF model_type
    name: str | None = None  # general.name / _name_or_path, if present
    parameters: int | None = None  # total parameter count
    quantization: str | None = None  # "Q4_K_M", "F16", "BF16" ... (safetensors: dtype name)
    file_type: int | None = None  # raw GGUF general.file_type
    context_length: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    embedding_size: int | None = None
    head_dim: int | None = None
    vocab_size: int | None = None
    has_chat_template: bool = False
    chat_template: str | None = None  # untrusted text: never render outside a sandbox
    dtype: str | None = None  # safetensors: dominant tensor dtype ("BF16", "F16", ...)
    tensor_bytes: int | None = None  # bytes of weights (sum of tensor sizes)
    split_count: int | None = None  # GGUF split sets: number of shards
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
