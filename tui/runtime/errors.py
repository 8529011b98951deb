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


class NotAChatModelError(GenerationError):
    """Asked for an answer from a model that makes embeddings only."""


class ContextLengthError(GenerationError):
    """The prompt does not fit in the model's context (an HTTP server answers 400)."""


class EmbeddingError(RuntimeError_):
    """The model cannot make embeddings (a chat model in transformers, an endpoint)."""


class EndpointError(GenerationError):
    """An OpenAI-compatible endpoint is unreachable or answered something unusable."""


class NotLoadedError(RuntimeError_):
    """An operation needs a loaded model and none is loaded with that id."""


class ModelBusyError(RuntimeError_):
    """A model is answering requests: unloading, reloading or evicting it now would cut them
    off (unload with ``force`` to stop them, saying so)."""


class QueueFullError(RuntimeError_):
    """A model's request queue is full; ``retry_after`` (seconds) estimates when a place frees
    up (an HTTP server answers 429 with ``Retry-After``)."""

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class AnswerStoppedError(GenerationError):
    """An answer was cut off by the runtime itself (its model was unloaded with ``force``, or
    the runtime shut down); the message says how far it got and why."""
