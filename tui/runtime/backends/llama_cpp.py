"""GGUF models through llama.cpp, several answers at once (:mod:`.llama_batch`).

The chat template stored in the GGUF is rendered by :mod:`tui.runtime.templates` (immutable
sandbox) in the caller's thread, the prompt tokenized there, and the tokens handed to the
model's :class:`~tui.runtime.backends.llama_batch.BatchEngine`, which decodes up to
``parallel`` answers together. Only llama-cpp-python's public C-API bindings are used.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from tui.runtime.backends.base import BackendStats, Emit, one_line
from tui.runtime.backends.llama_batch import BatchEngine, BatchRequest
from tui.runtime.errors import GenerationError, LoadError
from tui.runtime.templates import render_chat
from tui.runtime.types import GenParams, LoadOptions, Message, ModelSpec


class LlamaCppBackend:
    """A GGUF model in llama.cpp. ``n_gpu_layers``: -1 = all, 0 = CPU only; ``n_ctx`` is each
    answer's context, ``parallel`` how many answers are decoded together."""

    batched = True  # generate() may be called from several threads; emit must not block

    def __init__(
        self,
        spec: ModelSpec,
        options: LoadOptions,
        n_gpu_layers: int,
        n_ctx: int,
        parallel: int = 1,
    ) -> None:
        self.spec = spec
        self.options = options
        self.n_gpu_layers = n_gpu_layers
        self.n_ctx = n_ctx
        self.parallel = max(1, parallel)
        self.engine: BatchEngine | None = None
        self._template: str | None = None
        self._bos_text = ""
        self._eos_text = ""

    def load(self) -> None:
        """Load the GGUF and start its engine (blocking)."""
        assert self.spec.path is not None
        engine = BatchEngine(
            self.spec.path,
            slots=self.parallel,
            n_ctx=self.n_ctx,
            n_gpu_layers=self.n_gpu_layers,
            n_batch=self.options.batch,
            threads=self.options.threads,
            flash_attention=self.options.flash_attention,
        )
        try:
            engine.load()
        except LoadError as exc:
            arch = self.spec.metadata.architecture if self.spec.metadata else None
            name = self.spec.path.name
            what = f"{name} (architecture {arch!r})" if arch else name
            raise LoadError(
                f"llama.cpp cannot load {what}: {exc.message}",
                hint=exc.hint or "the file may be corrupt, truncated or of an unsupported "
                "architecture",
            ) from None
        self.engine = engine
        self.n_ctx = engine.n_ctx
        self._template = engine.meta("tokenizer.chat_template") or (
            self.spec.metadata.chat_template if self.spec.metadata else None
        )
        self._bos_text = engine.token_text(engine.bos)
        self._eos_text = engine.token_text(engine.eos)

    def prompt_tokens(
        self, messages: Sequence[Message], cancel: threading.Event | None = None
    ) -> list[int]:
        """Render the chat template (sandboxed, bounded; ``cancel`` stops it) and tokenize."""
        engine = self._engine()
        prompt = render_chat(
            self._template, messages, bos_token=self._bos_text, eos_token=self._eos_text,
            cancel=cancel,
        )
        add_bos = not (self._bos_text and prompt.startswith(self._bos_text))
        return engine.tokenize(prompt.encode("utf-8"), add_special=add_bos)

    def generate(
        self,
        messages: Sequence[Message],
        params: GenParams,
        emit: Emit,
        cancel: threading.Event,
        ready: Callable[[], bool] | None = None,
    ) -> BackendStats:
        """Stream one answer (blocking until done; other answers are decoded alongside).

        ``emit`` is called on the engine's thread and must not block; ``ready`` returning
        False pauses this answer until the reader catches up.
        """
        engine = self._engine()
        tokens = self.prompt_tokens(messages, cancel)
        n_prompt = len(tokens)
        if not n_prompt:
            raise GenerationError("the prompt is empty after the chat template",
                                  hint="check the model's chat template")
        if n_prompt >= engine.n_ctx:
            raise GenerationError(
                f"the conversation is {n_prompt} tokens, the context holds {engine.n_ctx}",
                hint="start a new chat or load with a larger context (--ctx)",
            )
        limit = engine.n_ctx - n_prompt
        if params.max_tokens > 0:
            limit = min(limit, params.max_tokens)
        request = BatchRequest(tokens, params, emit, cancel, ready, limit)
        try:
            return engine.run(request)
        except GenerationError:
            raise
        except (ValueError, RuntimeError, OSError) as exc:
            raise GenerationError(f"llama.cpp failed: {one_line(exc)}") from None

    def _engine(self) -> BatchEngine:
        engine = self.engine
        if engine is None:
            raise GenerationError("model is not loaded")
        return engine

    def interrupt(self) -> None:
        """Have the engine notice a cancelled answer at once."""
        engine = self.engine
        if engine is not None:
            engine.wake()

    def close(self) -> None:
        """Stop the engine and free the model and its context."""
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.close()
