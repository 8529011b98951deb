"""GGUF models through llama.cpp, several answers at once (:mod:`.llama_batch`).

The chat template stored in the GGUF is rendered by :mod:`tui.runtime.templates` (immutable
sandbox) in the caller's thread, given every special token of the vocabulary
(:func:`gguf_special_tokens`), the prompt tokenized there, and the tokens handed to the
model's :class:`~tui.runtime.backends.llama_batch.BatchEngine`, which decodes up to
``parallel`` answers together. Only llama-cpp-python's public C-API bindings are used.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tui.runtime.backends.base import BackendStats, Emit, one_line
from tui.runtime.backends.llama_batch import BatchEngine, BatchRequest
from tui.runtime.errors import ContextLengthError, GenerationError, LoadError
from tui.runtime.templates import render_chat
from tui.runtime.types import GenParams, LoadOptions, Message, ModelSpec

_TOKEN_ID_KEY = re.compile(r"tokenizer\.ggml\.([a-z][a-z_]{0,31})_token_id")
_TOKEN_NAMES = {"unknown": "unk", "seperator": "sep", "separator": "sep", "padding": "pad"}
MAX_TOKEN_CHARS = 256  # longer "special tokens" are left out


def gguf_special_tokens(
    metadata: Mapping[str, Any], n_vocab: int, text: Callable[[int], str]
) -> dict[str, str]:
    """The special tokens of a GGUF for its chat template, named as transformers names them.

    Each ``tokenizer.ggml.<name>_token_id`` becomes ``<name>_token`` (``unknown`` →
    ``unk_token``, ``seperator`` → ``sep_token``, ``padding`` → ``pad_token``; ``bos``, ``eos``,
    ``eot``, ``cls``, ``mask``, ``fim_pre``… keep their name), ``text`` giving its text. An id
    that is not a number in the vocabulary, or an empty or over-long text, is left out.
    """
    tokens: dict[str, str] = {}
    for key, value in metadata.items():
        match = _TOKEN_ID_KEY.fullmatch(str(key))
        if match is None:
            continue
        try:
            token = int(str(value).strip())  # llama.cpp gives strings
        except ValueError:
            continue
        if not 0 <= token < n_vocab:
            continue
        piece = text(token)
        if piece and len(piece) <= MAX_TOKEN_CHARS:
            name = match.group(1)
            tokens[f"{_TOKEN_NAMES.get(name, name)}_token"] = piece
    return tokens


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
        self._special: dict[str, str] = {}

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
        self._special = self._special_tokens(engine)
        self._bos_text = self._special["bos_token"]

    @staticmethod
    def _special_tokens(engine: BatchEngine) -> dict[str, str]:
        """Every special token of the vocabulary; ``bos_token``/``eos_token`` always (empty
        when the model has none, as llama.cpp passes them)."""
        metadata = {key: engine.meta(key) for key in engine.meta_keys()
                    if _TOKEN_ID_KEY.fullmatch(key)}
        tokens = gguf_special_tokens(metadata, engine.n_vocab, engine.special_text)
        for name, token in (("bos_token", engine.bos), ("eos_token", engine.eos)):
            piece = engine.special_text(token)
            tokens[name] = piece if len(piece) <= MAX_TOKEN_CHARS else ""
        return tokens

    def render_prompt(
        self, messages: Sequence[Message], cancel: threading.Event | None = None, **kwargs: Any
    ) -> str:
        """The chat template rendered (sandboxed, bounded; ``cancel`` stops it) with the
        model's special tokens; ``kwargs`` go to :func:`render_chat` (``tools``, …)."""
        return render_chat(
            self._template, messages, special_tokens=self._special, cancel=cancel, **kwargs
        )

    def prompt_tokens(
        self,
        messages: Sequence[Message],
        cancel: threading.Event | None = None,
        *,
        prompt: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[int]:
        """Render the chat template (:meth:`render_prompt`, with ``tools``) and tokenize; a raw
        ``prompt`` is tokenized as it is (BOS added, special tokens parsed as llama.cpp's own
        completion endpoint does)."""
        engine = self._engine()
        if prompt is None:
            prompt = self.render_prompt(messages, cancel, **({"tools": tools} if tools else {}))
        add_bos = not (self._bos_text and prompt.startswith(self._bos_text))
        return engine.tokenize(prompt.encode("utf-8", "replace"), add_special=add_bos)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """How many tokens :meth:`generate` would feed for ``messages``."""
        return len(self.prompt_tokens(messages))

    def generate(
        self,
        messages: Sequence[Message],
        params: GenParams,
        emit: Emit,
        cancel: threading.Event,
        ready: Callable[[], bool] | None = None,
        *,
        prompt: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> BackendStats:
        """Stream one answer (blocking until done; other answers are decoded alongside).

        ``emit`` is called on the engine's thread and must not block; ``ready`` returning
        False pauses this answer until the reader catches up. ``prompt``/``tools``: see
        :meth:`prompt_tokens`.
        """
        engine = self._engine()
        tokens = self.prompt_tokens(messages, cancel, prompt=prompt, tools=tools)
        n_prompt = len(tokens)
        if not n_prompt:
            raise GenerationError("the prompt is empty after the chat template",
                                  hint="check the model's chat template")
        if n_prompt >= engine.n_ctx:
            raise ContextLengthError(
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

    def embed(
        self, texts: list[str], cancel: threading.Event | None = None
    ) -> tuple[list[list[float]], int]:
        """Embeddings of ``texts`` and the tokens they took (see :meth:`BatchEngine.embed`)."""
        return self._engine().embed(texts, cancel)

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
