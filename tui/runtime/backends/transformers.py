"""safetensors model folders through Hugging Face transformers (torch).

Safety defaults: ``trust_remote_code=False`` and ``use_safetensors=True`` unless the user opts
in (``LoadOptions.trust_remote_code`` / ``allow_pickle``); nothing is fetched from the Hub
(``local_files_only=True``). The chat template is rendered by :mod:`tui.runtime.templates`
(bounded in time and size, which transformers' own renderer is not) with the tokenizer's
``special_tokens_map``, exactly as ``apply_chat_template`` renders it.
Tokens stream through a :class:`transformers.TextStreamer` subclass called in the generating
thread; cancellation is a ``StoppingCriteria`` reading a ``threading.Event``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tui.runtime.backends.base import BackendStats, Emit, one_line
from tui.runtime.errors import ContextLengthError, GenerationError, LoadError
from tui.runtime.templates import render_chat
from tui.runtime.types import GenParams, LoadOptions, Message, ModelSpec

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(safetensors files, pickle files)`` in a model folder."""
    safe = sorted(folder.glob("*.safetensors"))
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    return safe, pickles


def check_folder(
    folder: Path, options: LoadOptions, *, check_architecture: bool = True
) -> list[Path]:
    """Validate a model folder before anything is unloaded for it; return its weight files.

    Raises :class:`LoadError` for a missing ``config.json``, no weights, pickle-only weights
    without opt-in, or (``check_architecture``, imports transformers) an architecture this
    transformers does not know.
    """
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise LoadError(f"{folder.name} has no config.json; not a transformers model folder")
    safe, pickles = weight_files(folder)
    if not safe and not pickles:
        raise LoadError(
            f"{folder.name} has no weights (*.safetensors)",
            hint="the download may be incomplete; re-download the model",
        )
    if not safe and not options.allow_pickle:
        raise LoadError(
            f"{folder.name} has only pickle weights ({pickles[0].name}), which can run code "
            "when loaded; refusing",
            hint="convert to safetensors, or pass --allow-pickle if you trust the source",
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LoadError(f"{folder.name}/config.json is unreadable: {one_line(exc)}") from None
    if not isinstance(config, dict):
        raise LoadError(f"{folder.name}/config.json is not a JSON object")
    if not check_architecture:
        return safe or pickles
    model_type = config.get("model_type")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        if config.get("auto_map") and options.trust_remote_code:
            return safe or pickles
        hint = (
            "it needs the repo's own code: pass --trust-remote-code if you trust it"
            if config.get("auto_map")
            else "upgrade transformers, or use a GGUF of this model"
        )
        raise LoadError(
            f"transformers does not know the architecture {model_type!r} of {folder.name}",
            hint=hint,
        )
    return safe or pickles


class _Cancel:
    """A ``StoppingCriteria`` that stops every sequence once the event is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def _streamer(tokenizer: Any, emit: Emit) -> Any:
    from transformers import TextStreamer

    class _EmitStreamer(TextStreamer):
        """TextStreamer that hands finalized text to ``emit`` and counts new tokens."""

        def __init__(self) -> None:
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.generated = 0
            self.last: int | None = None  # the last generated token id

        def put(self, value: Any) -> None:
            if not self.next_tokens_are_prompt:
                if not self.generated:
                    emit("")  # first token: TTFT even if its text waits for a word boundary
                self.generated += int(value.numel())
                if value.numel():
                    self.last = int(value.reshape(-1)[-1])
            super().put(value)

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                emit(text)

    return _EmitStreamer()


class TransformersBackend:
    """A causal LM folder in transformers."""

    def __init__(
        self, spec: ModelSpec, options: LoadOptions, n_ctx: int, gpu_layers: int = -1
    ) -> None:
        self.spec = spec
        self.options = options
        self.n_ctx = n_ctx
        self.gpu_layers = gpu_layers  # 0: the fit check said CPU only
        self.model: Any = None
        self.tokenizer: Any = None
        self.device = "cpu"

    def load(self) -> None:
        """Load tokenizer and weights (blocking)."""
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        assert self.spec.path is not None
        folder = self.spec.path
        weights = check_folder(folder, self.options)
        cuda = torch.cuda.is_available()
        self.device = self.options.device or (
            "cuda" if cuda and self.gpu_layers != 0 else "cpu"
        )
        dtype = self._dtype(torch, self.device)
        kwargs: dict[str, Any] = {
            "trust_remote_code": self.options.trust_remote_code,
            "use_safetensors": weights[0].suffix == ".safetensors",
            "local_files_only": True,
            "low_cpu_mem_usage": True,
        }
        major = int(transformers.__version__.split(".")[0])
        kwargs["dtype" if major >= 5 else "torch_dtype"] = dtype
        use_device_map = self.device.startswith("cuda") and _has_accelerate()
        with contextlib.suppress(Exception):
            transformers.utils.logging.disable_progress_bar()
        if use_device_map:
            kwargs["device_map"] = "auto"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                folder, trust_remote_code=self.options.trust_remote_code, local_files_only=True
            )
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
            if not use_device_map:
                model = model.to(self.device)
        except (OSError, ValueError, KeyError, RuntimeError, ImportError, TypeError) as exc:
            self.close()
            raise LoadError(
                f"transformers cannot load {folder.name}: {type(exc).__name__}: {one_line(exc)}"
            ) from None
        model.eval()
        self.model = model

    def _dtype(self, torch: Any, device: str) -> Any:
        name = self.options.dtype
        if name == "auto":
            if device.startswith("cuda"):
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.float32
        try:
            return {"float32": torch.float32, "float16": torch.float16,
                    "bfloat16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16,
                    "bf16": torch.bfloat16}[name]
        except KeyError:
            raise LoadError(
                f"unknown dtype {name!r} (use auto, float32, float16, bfloat16)"
            ) from None

    def render_prompt(
        self, messages: Sequence[Message], cancel: threading.Event | None = None, **kwargs: Any
    ) -> str:
        """The chat template rendered as ``apply_chat_template(..., tokenize=False)`` renders
        it, in the bounded sandbox; ``kwargs`` go to :func:`render_chat` (``tools``, …)."""
        if self.tokenizer is None:
            raise GenerationError("model is not loaded")
        tok = self.tokenizer
        return render_chat(
            _chat_template(tok, kwargs.get("tools")), messages,
            special_tokens=tok.special_tokens_map, cancel=cancel, **kwargs,
        )

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """How many tokens :meth:`generate` would feed for ``messages``."""
        if self.tokenizer is None:
            raise GenerationError("model is not loaded")
        prompt = self.render_prompt(messages)
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def generate(
        self,
        messages: Sequence[Message],
        params: GenParams,
        emit: Emit,
        cancel: threading.Event,
        *,
        prompt: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> BackendStats:
        """Stream one answer: to ``messages`` in the chat template (with ``tools``), or the
        continuation of a raw ``prompt`` (tokenized with the tokenizer's special tokens)."""
        import torch
        from transformers import StoppingCriteriaList

        if self.model is None:
            raise GenerationError("model is not loaded")
        tok = self.tokenizer
        raw = prompt is not None
        if prompt is None:
            prompt = self.render_prompt(messages, cancel, **({"tools": tools} if tools else {}))
        inputs = tok(prompt, return_tensors="pt", add_special_tokens=raw)
        input_ids = inputs["input_ids"].to(self.model.device)
        n_prompt = int(input_ids.shape[1])
        if not n_prompt:
            raise GenerationError("the prompt is empty")
        if n_prompt >= self.n_ctx:
            raise ContextLengthError(
                f"the conversation is {n_prompt} tokens, the context holds {self.n_ctx}",
                hint="start a new chat or load with a larger context (--ctx)",
            )
        streamer = _streamer(tok, emit)
        max_new = params.max_tokens if params.max_tokens > 0 else self.n_ctx - n_prompt
        max_new = min(max_new, self.n_ctx - n_prompt)
        gen: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": inputs["attention_mask"].to(self.model.device),
            "max_new_tokens": max_new,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_Cancel(cancel)]),
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None
            else tok.eos_token_id,
        }
        if params.temperature > 0:
            gen.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            gen.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            gen.update(stop_strings=list(params.stop), tokenizer=tok)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        try:
            with torch.inference_mode():
                self.model.generate(**gen)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise GenerationError(f"transformers failed: {one_line(exc)}") from None
        n = streamer.generated
        ended = n > 0 and streamer.last in _eos_ids(self.model, tok)
        if ended:
            n -= 1  # the end token is not part of the answer
        if cancel.is_set():
            finish = "cancelled"
        elif ended or n < max_new:
            finish = "stop"
        else:
            finish = "length"
        return BackendStats(n_prompt, n, finish)

    def interrupt(self) -> None:
        """The stopping criterion is checked every token; nothing else to do."""

    def close(self) -> None:
        """Drop the model, collect, and empty the CUDA cache."""
        self.model = None
        self.tokenizer = None
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None:
            with contextlib.suppress(Exception):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()


def _chat_template(tokenizer: Any, tools: Any = None) -> str | None:
    """The template ``apply_chat_template`` would use (of several, "tool_use" with tools, else
    "default"), or None (none at all, or several and no default)."""
    if not hasattr(tokenizer, "get_chat_template"):  # an older transformers
        template = getattr(tokenizer, "chat_template", None)
        return template if isinstance(template, str) else None
    try:
        template = tokenizer.get_chat_template(tools=tools)
    except ValueError:
        return None
    return template if isinstance(template, str) else None


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The token ids that end an answer (generation config and tokenizer)."""
    config = getattr(model, "generation_config", None)
    ids = getattr(config, "eos_token_id", None)
    found = set(ids) if isinstance(ids, (list, tuple)) else {ids}
    found.add(getattr(tokenizer, "eos_token_id", None))
    return {int(i) for i in found if i is not None}


def _has_accelerate() -> bool:
    import importlib.util

    return importlib.util.find_spec("accelerate") is not None
