"""Model runtime: one interface over llama-cpp-python, transformers and OpenAI-compatible HTTP.

Importing this package (or :mod:`tui.runtime.service`) imports no model library; llama_cpp,
torch and transformers are imported when their backend is first used.
"""

from tui.runtime.errors import (
    AnswerStoppedError,
    BackendMissingError,
    ContextLengthError,
    EmbeddingError,
    EndpointError,
    GenerationError,
    LoadError,
    ModelBusyError,
    NotLoadedError,
    QueueFullError,
    RuntimeError_,
    TemplateError,
    WontFitError,
)
from tui.runtime.types import (
    GenerationMetrics,
    GenParams,
    LoadedModel,
    LoadOptions,
    ModelSpec,
    ModelState,
    RuntimeEvent,
    ServingStats,
)

__all__ = [
    "AnswerStoppedError",
    "BackendMissingError",
    "ContextLengthError",
    "EmbeddingError",
    "EndpointError",
    "GenParams",
    "GenerationError",
    "GenerationMetrics",
    "LoadError",
    "LoadOptions",
    "LoadedModel",
    "ModelBusyError",
    "ModelSpec",
    "ModelState",
    "NotLoadedError",
    "QueueFullError",
    "RuntimeError_",
    "RuntimeEvent",
    "ServingStats",
    "TemplateError",
    "WontFitError",
]
