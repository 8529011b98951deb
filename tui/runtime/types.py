"""Plain data types of the runtime: load options, generation parameters, events, metrics."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from tui.metadata.types import ModelMetadata

__all__ = [
    "BackendKind",
    "GenParams",
    "GenerationMetrics",
    "LoadOptions",
    "LoadedModel",
    "Message",
    "ModelSpec",
    "ModelState",
    "RuntimeEvent",
    "ServingStats",
    "redact_url",
]

BackendKind = Literal["gguf", "safetensors", "openai"]
Message = Mapping[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


class ModelState(enum.StrEnum):
    """Lifecycle states reported through :class:`RuntimeEvent`."""

    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    UNLOADED = "unloaded"
    FAILED = "failed"
    SERVING = "serving"  # a request was queued, started or finished (not a lifecycle change)


@dataclass(frozen=True, slots=True)
class RuntimeEvent:
    """A lifecycle change of one model. ``message`` is one line (e.g. the error, or why a
    model was unloaded: ``"idle"``, ``"evicted"``, ``"requested"``).

    ``SERVING`` events report a request: ``message`` is ``"queued"``, ``"started"``,
    ``"finished"`` or ``"refused"`` (the queue was full), ``request_id`` says which,
    ``running``/``queued`` count the model's requests afterwards. They leave
    :meth:`RuntimeService.state` as it was.
    """

    model_id: str
    state: ModelState
    message: str = ""
    seconds: float | None = None  # load time for LOADED
    request_id: str | None = None  # SERVING
    running: int | None = None  # SERVING
    queued: int | None = None  # SERVING


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How to load a model. Backend-specific fields are ignored by the other backends."""

    context_length: int | None = None  # default: model's trained context capped at 4096
    gpu_layers: str | int = "auto"  # "auto" (as many as fit), "all", or a count (llama.cpp)
    threads: int | None = None  # llama.cpp: CPU threads (default: physical cores)
    batch: int = 512  # llama.cpp n_batch
    flash_attention: bool = False  # llama.cpp flash_attn
    seed: int | None = None  # llama.cpp context seed
    parallel: int | None = None  # llama.cpp: answers decoded together (default: setting)
    dtype: str = "auto"  # transformers: auto, float32, float16, bfloat16
    device: str | None = None  # transformers: default cuda if available else cpu
    trust_remote_code: bool = False  # transformers: run the repo's Python code (opt-in)
    allow_pickle: bool = False  # transformers: load .bin/.pt/.ckpt pickles (opt-in)
    force: bool = False  # load even when the fit check says "won't fit"


@dataclass(frozen=True, slots=True)
class GenParams:
    """Sampling parameters of one answer. ``temperature == 0`` is greedy."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(slots=True)
class GenerationMetrics:
    """Measured numbers of one answer (the last item :meth:`RuntimeService.generate` yields)."""

    model_id: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None  # time to first token, from when the request got its slot
    prompt_tokens_per_s: float | None
    tokens_per_s: float | None  # generation speed after the first token
    total_s: float  # from when the request got its slot
    finish_reason: str  # "stop", "length", "cancelled"
    queue_ms: float = 0.0  # time spent waiting for a slot (behind other requests)
    # where the token counts come from: "counted" by a local backend, "reported" by an
    # endpoint's ``usage``, or "estimated" from its stream's chunks (it sent no usage)
    usage: str = "counted"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers."""
        return asdict(self)

    def summary(self) -> str:
        """One line for a status bar or stderr."""
        n = self.completion_tokens
        parts = [(f"{n} token" if n == 1 else f"{n} tokens")
                 + (" (estimated)" if self.usage == "estimated" else "")]
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.ttft_ms is not None:
            parts.append(f"TTFT {self.ttft_ms:.0f} ms")
        if self.prompt_tokens_per_s is not None:
            parts.append(f"prompt {self.prompt_tokens} tok @ {self.prompt_tokens_per_s:.0f} tok/s")
        parts.append(self.finish_reason)
        return ", ".join(parts)


@dataclass(slots=True)
class ModelSpec:
    """A resolved model: an inventory entry, a path, or an OpenAI-compatible endpoint."""

    id: str
    kind: BackendKind
    name: str
    path: Path | None = None
    metadata: ModelMetadata | None = None
    weights_bytes: int | None = None
    base_url: str | None = None  # openai
    remote_model: str | None = None  # openai: the model name the server knows
    api_key: str | None = field(default=None, repr=False)  # never logged
    in_inventory: bool = False

    @classmethod
    def endpoint(cls, base_url: str, model: str, api_key: str | None = None) -> ModelSpec:
        """An OpenAI-compatible endpoint (vLLM, llama-server, Ollama, LM Studio)."""
        base = base_url.rstrip("/")
        return cls(
            id=f"{model}@{redact_url(base)}",
            kind="openai",
            name=model,
            base_url=base,
            remote_model=model,
            api_key=api_key,
        )


def redact_url(url: str) -> str:
    """``url`` without ``user:password@`` (safe to show or log)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A snapshot of one loaded model (what :meth:`RuntimeService.loaded` returns)."""

    id: str
    name: str
    kind: BackendKind
    path: Path | None
    context_length: int
    gpu_layers: int  # -1 = all, 0 = CPU only (0 for endpoints)
    load_seconds: float
    loaded_at: float
    last_used: float
    generating: bool
    memory_bytes: int  # estimated (0 for endpoints)
    fit_label: str | None  # "fits on GPU", "partial offload (…)", "CPU only"; None for endpoints
    slots: int = 1  # answers generated at once (llama.cpp: parallel sequences)
    running: int = 0  # requests being answered
    queued: int = 0  # requests waiting for a slot
    keep_alive_s: float | None = None  # idle seconds before it is unloaded (None: never)
    unload_in_s: float | None = None  # seconds until keep-alive unloads it (None: not idle)


@dataclass(frozen=True, slots=True)
class ServingStats:
    """One loaded model's scheduler, read-only (what :meth:`RuntimeService.stats` returns)."""

    model_id: str
    slots: int  # answers generated at once
    running: int
    queued: int
    queue_limit: int  # waiting requests beyond which ``generate`` raises QueueFullError
    requests: int  # answers finished since the model was loaded
    tokens: int  # tokens generated since the model was loaded
