"""The metadata record every reader returns, and the bounds every number in it obeys.

Numbers come from untrusted files (a GGUF u64, a config.json integer of thousands of digits,
``1e400``). :func:`bounded_int` is the one check they pass before arithmetic or storage, and
:func:`sanitize` applies it to a whole record: a value out of its field's range becomes
``None`` (unknown) and ``extra["ignored_values"]`` says what was dropped, so nothing that
reaches SQLite (signed 64-bit integers) or ``json.dumps`` can overflow or emit ``NaN``. Lone
surrogates (a JSON ``"\ud800"`` escape), which neither SQLite nor a terminal can take, become
``?``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from tui.kinds import normalise as normalise_kind

SQLITE_INT_MAX = (1 << 63) - 1
SQLITE_INT_MIN = -(1 << 63)
U32_MAX = (1 << 32) - 1
_SMALL = 1 << 20  # layers, heads, experts: real models stay far below

# Inclusive upper bound of each integer field of ModelMetadata (the lower bound is 0). Generous:
# real models are orders of magnitude below, but products of these stay cheap Python ints.
FIELD_LIMITS: dict[str, int] = {
    "parameters": SQLITE_INT_MAX,
    "file_type": U32_MAX,
    "context_length": U32_MAX,
    "n_layers": _SMALL,
    "n_heads": _SMALL,
    "n_kv_heads": _SMALL,
    "embedding_size": 1 << 24,
    "head_dim": _SMALL,
    "vocab_size": U32_MAX,
    "tensor_bytes": SQLITE_INT_MAX,
    "split_count": 99_999,  # shard names have five digits
}
# Integers kept in ``extra`` by the readers, with their bounds (others: the SQLite range).
EXTRA_LIMITS: dict[str, int] = {
    "expert_count": _SMALL,
    "expert_used_count": _SMALL,
    "split_no": 99_999,
}
IGNORED_KEY = "ignored_values"
TEXT_FIELDS = ("architecture", "name", "quantization", "chat_template", "dtype", "kind")
_MAX_DEPTH = 8  # nesting walked in ``extra``; deeper values are dropped


class BigNumber:
    """A JSON integer too long to convert (``json`` hook); never a valid count."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"a {self.digits}-digit number"


def json_int(text: str) -> int | BigNumber:
    """``parse_int`` for :func:`json.loads`: integers of more than 40 digits are not converted
    (Python refuses over 4300 digits anyway, and nothing ModelDeck reads needs 2**128)."""
    digits = len(text) - text.startswith("-")
    return BigNumber(digits) if digits > 40 else int(text)


def json_float(text: str) -> float | None:
    """``parse_float`` for :func:`json.loads`: ``1e400`` (infinite) becomes ``None``."""
    value = float(text)
    return value if math.isfinite(value) else None


def json_constant(_name: str) -> None:
    """``parse_constant`` for :func:`json.loads`: ``NaN`` and ``Infinity`` become ``None``."""
    return None


JSON_HOOKS: dict[str, Any] = {
    "parse_int": json_int,
    "parse_float": json_float,
    "parse_constant": json_constant,
}


def bounded_int(value: Any, lo: int = 0, hi: int = SQLITE_INT_MAX) -> int | None:
    """``value`` if it is an int (not a bool) within ``[lo, hi]``, else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
        return value
    return None


def describe(value: Any, limit: int | None = None) -> str:
    """A short text for a rejected value (a huge number is summarised, not printed)."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value) if value.bit_length() <= 128 else (
            f"a {int(value.bit_length() * 0.30103) + 1}-digit number"
        )
        return text if limit is None else f"{text} (outside 0..{limit})"
    if isinstance(value, float | BigNumber):
        return repr(value)
    return f"a {type(value).__name__}"


def limit_of(name: str) -> int:
    """The upper bound of a metadata field or known ``extra`` key (else the SQLite maximum)."""
    return FIELD_LIMITS.get(name) or EXTRA_LIMITS.get(name) or SQLITE_INT_MAX


def bounded_field(name: str, value: Any, dropped: dict[str, str]) -> int | None:
    """``value`` within field ``name``'s bounds, else ``None`` -- noting a present but
    invalid value in ``dropped`` (which goes to ``extra["ignored_values"]``)."""
    limit = limit_of(name)
    n = bounded_int(value, 0, limit)
    if n is None and value is not None:
        dropped[name] = describe(value, limit)
    return n


def utf8_text(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates) replaced by ``?``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def bounded_json(value: Any, depth: int = 0) -> Any:
    """``value`` (JSON-like) with ints outside the SQLite range, non-finite floats, non-JSON
    objects and nesting deeper than 8 levels replaced by ``None``, strings made UTF-8 clean."""
    if isinstance(value, str):
        return utf8_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return bounded_int(value, SQLITE_INT_MIN, SQLITE_INT_MAX)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {utf8_text(str(k)): bounded_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [bounded_json(v, depth + 1) for v in value]
    return None


@dataclass(slots=True)
class ModelMetadata:
    """What ModelDeck knows about one model (a GGUF file or set, or a safetensors folder).

    Fields a reader cannot determine stay ``None``. ``extra`` holds reader-specific details
    that are worth keeping (e.g. ``rope_freq_base``) but have no column of their own.
    """

    format: str  # "gguf", "safetensors", "mlx", "onnx", "tflite", "coreml" or "pytorch"
    architecture: str | None = None  # e.g. "llama", "qwen2"; for safetensors the HF model_type
    name: str | None = None  # general.name / _name_or_path, if present
    parameters: int | None = None  # total parameter count
    quantization: str | None = None  # "Q4_K_M", "F16", "BF16" ... (safetensors: dtype name)
    file_type: int | None = None  # raw GGUF general.file_type
    context_length: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    embedding_size: int | None = None
    head_dim: int | None = None
    vocab_size: int | None = None
    has_chat_template: bool = False
    chat_template: str | None = None  # untrusted text: never render outside a sandbox
    dtype: str | None = None  # safetensors: dominant tensor dtype ("BF16", "F16", ...)
    tensor_bytes: int | None = None  # bytes of weights (sum of tensor sizes)
    split_count: int | None = None  # GGUF split sets: number of shards
    kind: str | None = None  # one of tui.kinds.KINDS, from the file's contents
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def sanitize(meta: ModelMetadata) -> ModelMetadata:
    """Bound every number of ``meta`` in place (see the module docstring); returns ``meta``."""
    dropped: dict[str, str] = {}
    for name in FIELD_LIMITS:
        value = getattr(meta, name)
        if value is not None:
            setattr(meta, name, bounded_field(name, value, dropped))
    for name in TEXT_FIELDS:
        value = getattr(meta, name)
        if value is not None:
            setattr(meta, name, utf8_text(value) if isinstance(value, str) else None)
    if meta.kind is not None:
        meta.kind = normalise_kind(meta.kind)
    extra = meta.extra if isinstance(meta.extra, dict) else {}
    for name in EXTRA_LIMITS:
        if extra.get(name) is not None and bounded_field(name, extra[name], dropped) is None:
            del extra[name]
    meta.extra = bounded_json(extra)
    if dropped:
        notes = meta.extra.get(IGNORED_KEY)
        meta.extra[IGNORED_KEY] = {**(notes if isinstance(notes, dict) else {}), **dropped}
    return meta
