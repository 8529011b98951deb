"""GGUF models through llama-cpp-python.

The chat template stored in the GGUF is rendered by :mod:`tui.runtime.templates` (immutable
sandbox), given every special token of the vocabulary (:func:`gguf_special_tokens`), and the
prompt tokens go to ``Llama.generate``; llama-cpp-python's own chat handlers are never called.
Tokens are detokenized one by one (``create_completion(stream=True)`` re-detokenizes the whole
answer per token, quadratic). Cancellation is checked per token.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import gc
import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tui.runtime.backends.base import BackendStats, Emit, one_line
from tui.runtime.errors import GenerationError, LoadError
from tui.runtime.stops import StopMatcher
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
            token = int(str(value).strip())  # llama-cpp-python gives strings
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
    """A GGUF model in llama.cpp. ``n_gpu_layers``: -1 = all, 0 = CPU only."""

    def __init__(self, spec: ModelSpec, options: LoadOptions, n_gpu_layers: int, n_ctx: int):
        self.spec = spec
        self.options = options
        self.n_gpu_layers = n_gpu_layers
        self.n_ctx = n_ctx
        self._llm: Any = None
        self._template: str | None = None
        self._bos_text = ""
        self._special: dict[str, str] = {}

    def load(self) -> None:
        """Load the GGUF (blocking)."""
        from llama_cpp import Llama

        assert self.spec.path is not None
        kwargs: dict[str, Any] = {
            "model_path": str(self.spec.path),
            "n_ctx": self.n_ctx,
            "n_gpu_layers": self.n_gpu_layers,
            "n_batch": self.options.batch,
            "flash_attn": self.options.flash_attention,
            "verbose": False,
        }
        if self.options.threads:
            kwargs["n_threads"] = self.options.threads
            kwargs["n_threads_batch"] = self.options.threads
        if self.options.seed is not None:
            kwargs["seed"] = self.options.seed
        try:
            self._llm = Llama(**kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            arch = self.spec.metadata.architecture if self.spec.metadata else None
            what = f"{self.spec.path.name} (architecture {arch!r})" if arch else self.spec.path.name
            raise LoadError(
                f"llama.cpp cannot load {what}: {one_line(exc)}",
                hint="the file may be corrupt, truncated or of an unsupported architecture",
            ) from None
        meta = self._llm.metadata or {}
        self._template = meta.get("tokenizer.chat_template") or (
            self.spec.metadata.chat_template if self.spec.metadata else None
        )
        self._special = self._special_tokens(meta)
        self._bos_text = self._special["bos_token"]

    def _special_tokens(self, metadata: Mapping[str, Any]) -> dict[str, str]:
        """Every special token of the vocabulary; ``bos_token``/``eos_token`` always (empty
        when the model has none, as llama.cpp passes them)."""
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        n_vocab = self._llm.n_vocab()

        def text(token: int) -> str:
            """The token as text (``special``: control tokens too), "" if it has none."""
            if not 0 <= token < n_vocab:
                return ""
            size = 64
            for _ in range(2):
                buf = ctypes.create_string_buffer(size)
                n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, True)
                if n >= 0:
                    return buf.raw[:n].decode("utf-8", errors="replace")
                size = -n  # the size it needs
                if size > 4 * MAX_TOKEN_CHARS:
                    break
            return ""

        tokens = gguf_special_tokens(metadata, n_vocab, text)
        for name, token in (("bos_token", llama_cpp.llama_vocab_bos(vocab)),
                            ("eos_token", llama_cpp.llama_vocab_eos(vocab))):
            piece = text(token)
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
        self, messages: Sequence[Message], cancel: threading.Event | None = None
    ) -> list[int]:
        """Render the chat template (:meth:`render_prompt`) and tokenize."""
        prompt = self.render_prompt(messages, cancel)
        add_bos = not (self._bos_text and prompt.startswith(self._bos_text))
        return self._llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def generate(
        self,
        messages: Sequence[Message],
        params: GenParams,
        emit: Emit,
        cancel: threading.Event,
    ) -> BackendStats:
        """Stream one answer: sample with ``Llama.generate``, detokenize incrementally."""
        import llama_cpp

        llm = self._llm
        if llm is None:
            raise GenerationError("model is not loaded")
        tokens = self.prompt_tokens(messages, cancel)
        n_prompt = len(tokens)
        if n_prompt >= self.n_ctx:
            raise GenerationError(
                f"the conversation is {n_prompt} tokens, the context holds {self.n_ctx}",
                hint="start a new chat or load with a larger context (--ctx)",
            )
        limit = self.n_ctx - n_prompt
        if params.max_tokens > 0:
            limit = min(limit, params.max_tokens)
        llm.set_seed(params.seed if params.seed is not None else random.getrandbits(32))
        vocab = llm._model.vocab
        detok = llm._model.detokenize
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(params.stop, emit)
        n = 0
        finish = "length"
        gen = llm.generate(
            tokens, temp=params.temperature, top_p=params.top_p, top_k=40, min_p=0.05,
            repeat_penalty=1.0,
        )
        try:
            for token in gen:
                if n == 0:
                    emit("")  # TTFT at the first token, even an end token or held-back text
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = "stop"  # the end token is not part of the answer
                    break
                n += 1
                text = decoder.decode(detok([token]))
                if text and stops.feed(text):
                    finish = "stop"
                    break
                if n >= limit:
                    break
        except (ValueError, RuntimeError) as exc:
            raise GenerationError(f"llama.cpp failed: {one_line(exc)}") from None
        finally:
            gen.close()
        if finish != "cancelled":
            if not stops.stopped:
                stops.feed(decoder.decode(b"", final=True))
                stops.flush()
            if cancel.is_set():
                finish = "cancelled"
        return BackendStats(n_prompt, n, finish)

    def interrupt(self) -> None:
        """Nothing blocks outside the token loop: the stopping criterion handles it."""

    def close(self) -> None:
        """Free the model and its context."""
        llm, self._llm = self._llm, None
        if llm is not None:
            with contextlib.suppress(Exception):
                llm.close()
            del llm
        gc.collect()
