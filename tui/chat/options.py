"""Load options a user sets for a model (context length, GPU layers, threads, parallel
answers): parsed from text fields, validated, and kept as JSON. No Textual here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tui.runtime.service import MAX_PARALLEL
from tui.runtime.types import LoadOptions

MIN_CONTEXT = 64  # llama.cpp needs room for a template and an answer
MAX_CONTEXT = 1 << 20  # 1,048,576 tokens
MAX_GPU_LAYERS = 10_000
MAX_THREADS = 1024
FIELDS = ("context_length", "gpu_layers", "threads", "parallel")


class OptionError(ValueError):
    """A bad field: ``field`` names it, the message says what is allowed (one line)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _whole(text: str) -> int | None:
    text = text.strip().replace(",", "").replace("_", "")
    if not text.isdigit() or len(text) > 9:
        return None
    return int(text)


def parse_gpu_layers(text: str) -> str | int:
    """``auto``, ``all`` or a layer count (0 = CPU only); :class:`OptionError` otherwise."""
    value = text.strip().lower() or "auto"
    if value in ("auto", "all"):
        return value
    number = _whole(value)
    if number is None or number > MAX_GPU_LAYERS:
        raise OptionError("gpu_layers", "GPU layers: auto, all or a number of layers (0 = CPU)")
    return number


def parse_load_options(values: Mapping[str, str], parallel_default: int | None = None
                       ) -> LoadOptions:
    """:class:`LoadOptions` from the fields' text (blank: the default). Raises
    :class:`OptionError` naming the first bad field."""
    ctx_text = values.get("context_length", "").strip()
    context = _whole(ctx_text) if ctx_text else None
    if ctx_text and (context is None or not MIN_CONTEXT <= context <= MAX_CONTEXT):
        raise OptionError("context_length", f"context length must be a whole number from "
                          f"{MIN_CONTEXT} to {MAX_CONTEXT:,}, or blank for the model's default")
    gpu_layers = parse_gpu_layers(values.get("gpu_layers", ""))
    threads_text = values.get("threads", "").strip()
    threads = _whole(threads_text) if threads_text else None
    if threads_text and (threads is None or not 1 <= threads <= MAX_THREADS):
        raise OptionError("threads", f"threads must be a whole number from 1 to {MAX_THREADS}, "
                          "or blank for the physical cores")
    parallel_text = values.get("parallel", "").strip()
    parallel = _whole(parallel_text) if parallel_text else None
    if parallel_text and (parallel is None or not 1 <= parallel <= MAX_PARALLEL):
        raise OptionError("parallel", f"parallel answers must be a whole number from 1 to "
                          f"{MAX_PARALLEL}, or blank for the setting")
    return LoadOptions(context_length=context, gpu_layers=gpu_layers, threads=threads,
                       parallel=parallel)


def field_values(options: LoadOptions | None) -> dict[str, str]:
    """The text each field shows for ``options`` (None: all defaults)."""
    options = options or LoadOptions()
    return {
        "context_length": "" if options.context_length is None else str(options.context_length),
        "gpu_layers": str(options.gpu_layers),
        "threads": "" if options.threads is None else str(options.threads),
        "parallel": "" if options.parallel is None else str(options.parallel),
    }


def describe_load(options: LoadOptions | None) -> str:
    """``ctx 4,096 | gpu all | 8 threads | 2 parallel`` (only what is set; blank: defaults)."""
    if options is None:
        return ""
    parts = []
    if options.context_length is not None:
        parts.append(f"ctx {options.context_length:,}")
    if options.gpu_layers != "auto":
        parts.append(f"gpu {options.gpu_layers}")
    if options.threads is not None:
        parts.append(f"{options.threads} thread" + ("s" if options.threads != 1 else ""))
    if options.parallel is not None:
        parts.append(f"{options.parallel} parallel")
    return " | ".join(parts)


def to_json(options: LoadOptions) -> str:
    """The remembered fields as JSON."""
    return json.dumps({name: getattr(options, name) for name in FIELDS}, sort_keys=True)


def from_json(text: Any) -> LoadOptions | None:
    """Options read back; a damaged or out-of-range value is dropped (its default is used),
    unreadable JSON gives None."""
    if not isinstance(text, str) or len(text) > 4096:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    fields: dict[str, str] = {}
    for name in FIELDS:
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int | str):
            continue
        fields[name] = str(value)
        try:  # each field on its own: one bad value does not cost the others
            parse_load_options({name: fields[name]})
        except OptionError:
            del fields[name]
    return parse_load_options(fields)
