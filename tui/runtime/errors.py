"""Errors raised by the runtime: one line each, actionable, never containing a secret."""

from __future__ import annotations

from tui.errors import ModelDeckError


class RuntimeError_(ModelDeckError):
    """Base class of runtime errors."""


class LoadError(RuntimeError_):
    """A model could not be loaded (bad file, unknown architecture, backend failure)."""


class WontFitError(RuntimeError_):
    """The fit check says the model does not fit in free memory (load with force to try)."""


class BackendMissingError(RuntimeError_):
    """The optional backend package is not installed."""


class TemplateError(RuntimeError_):
    """A chat template failed to render or tried something the sandbox forbids."""


class GenerationError(RuntimeError_):
    """Generation failed (backend error, endpoint down or sending garbage)."""


class EndpointError(GenerationError):
    """An OpenAI-compatible endpoint is unreachable or answered something unusable."""


class NotLoadedError(RuntimeError_):
    """An operation needs a loaded model and none is loaded with that id."""
