"""Model runtime: one interface over llama-cpp-python, transformers and OpenAI-compatible HTTP.

Importing this package (or :mod:`tui.runtime.service`) imports no model library; llama_cpp,
torch and transformers are imported when their backend is first used.
"""

from tui.runtime.errors import (
    BackendMissingError,
    EndpointError,
    GenerationError,
    LoadError,
    NotLoadedError,
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
)

__all__ = [
    "BackendMissingError",
    "EndpointError",
    "GenParams",
    "GenerationError",
    "GenerationMetrics",
    "LoadError",
    "LoadOptions",
    "LoadedModel",
    "ModelSpec",
    "ModelState",
    "NotLoadedError",
    "RuntimeError_",
    "RuntimeEvent",
    "TemplateError",
    "WontFitError",
]
