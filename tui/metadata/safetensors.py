"""Safetensors metadata: a Hugging Face model folder (``config.json`` plus ``*.safetensors``
headers) or a single ``.safetensors`` file.

Only the JSON headers are read (8-byte little-endian length, then JSON); tensor data is never
touched. Every size is checked against the file before it is trusted, and pickle-based weights
(``.bin``, ``.pt``, ...) are only listed, never opened.

Bounds: a header is refused by its declared size before it is read (and by its count of JSON
objects and arrays before it is parsed), a shape by its number of dimensions and by its element
count (multiplied with an early exit), JSON files by their size. JSON is parsed with hooks that
never convert integers of more than 40 digits and turn ``NaN``, ``Infinity`` and ``1e400`` into
``None``; config.json counts outside their field's bounds become unknown (see
:mod:`tui.metadata.types`).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tui.errors import MetadataError
from tui.metadata.files import open_regular
from tui.metadata.kinds import TensorLayout, adapter_kind, config_kind
from tui.metadata.types import (
    IGNORED_KEY,
    JSON_HOOKS,
    ModelMetadata,
    bounded_field,
    sanitize,
)

__all__ = ["read_safetensors", "read_safetensors_file", "read_safetensors_folder"]

# Real headers are a few MiB at most; the safetensors library itself stops at 100 MB. Python
# objects take several times the JSON's size, so ours stops lower.
MAX_HEADER_BYTES = 64 << 20
MAX_TENSORS = 1_000_000  # per file; bounds the JSON objects and arrays a header may hold
MAX_DIMS = 64  # numpy's and torch's limit
MAX_ELEMENTS = (1 << 63) - 1  # per tensor
MAX_DTYPE_CHARS = 32
MAX_JSON_BYTES = 32 << 20  # config.json, tokenizer_config.json, the shard index
MAX_TEMPLATE_BYTES = 1 << 20
MAX_CONFIG_STRING = 1024  # model_type, _name_or_path, ... longer ones are ignored

# dtype -> bits per element (safetensors 0.6+ dtypes, including the sub-byte float formats).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_SHARD_RE = re.compile(
    r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.safetensors$", re.IGNORECASE
)
_INDEX_SUFFIX = ".safetensors.index.json"


class _FileSummary:
    __slots__ = (
        "bytes", "elements_by_dtype", "layout", "metadata", "n_tensors", "packed", "parameters",
        "quant_extra",
    )

    def __init__(self) -> None:
        self.parameters = 0
        self.bytes = 0
        self.n_tensors = 0
        self.elements_by_dtype: dict[str, int] = {}
        self.metadata: dict[str, str] = {}
        self.layout = TensorLayout()
        self.packed = 0  # elements of U32 ``*.weight`` tensors (MLX packs quantized weights)
        self.quant_extra = 0  # elements of ``*.scales`` / ``*.biases`` tensors (MLX)

    def add(self, other: _FileSummary) -> None:
        self.parameters += other.parameters
        self.bytes += other.bytes
        self.n_tensors += other.n_tensors
        self.packed += other.packed
        self.quant_extra += other.quant_extra
        for dtype, n in other.elements_by_dtype.items():
            self.elements_by_dtype[dtype] = self.elements_by_dtype.get(dtype, 0) + n
        self.layout.merge(other.layout)
        if other.metadata and not self.metadata:
            self.metadata = other.metadata

    def dominant_dtype(self) -> str | None:
        counts = self.elements_by_dtype
        return max(counts, key=counts.__getitem__) if counts else None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _elements(shape: list[int]) -> int | None:
    """The product of ``shape`` (non-negative ints), or ``None`` once it passes the limit."""
    if 0 in shape:
        return 0
    n = 1
    for dim in shape:
        n *= dim
        if n > MAX_ELEMENTS:
            return None
    return n


def _read_exact(fp: io.FileIO, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at end of file), across short reads."""
    chunks: list[bytes] = []
    while n > 0:
        chunk = fp.read(n)
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_header(path: Path) -> _FileSummary:
    """Parse and validate one file's header."""
    try:
        with open_regular(path) as fp:
            size = os.fstat(fp.fileno()).st_size
            prefix = _read_exact(fp, 8)
            if len(prefix) < 8:
                raise MetadataError(f"{path}: truncated safetensors file ({size} bytes)")
            header_len = int.from_bytes(prefix, "little")
            if header_len > MAX_HEADER_BYTES:
                raise MetadataError(
                    f"{path}: safetensors header is {header_len} bytes "
                    f"(limit {MAX_HEADER_BYTES >> 20} MiB)"
                )
            if header_len > size - 8:
                raise MetadataError(
                    f"{path}: truncated safetensors file (header needs {header_len + 8} bytes, "
                    f"file has {size})"
                )
            raw = _read_exact(fp, header_len)
    except OSError as exc:
        raise MetadataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if len(raw) != header_len:
        raise MetadataError(f"{path}: file changed while being read")
    if not raw.lstrip(b" ").startswith(b"{"):
        raise MetadataError(f"{path}: not a safetensors file (header is not a JSON object)")
    # Each tensor takes one object and two arrays; more would only cost memory to parse.
    if raw.count(b"{") > MAX_TENSORS + 2 or raw.count(b"[") > 2 * MAX_TENSORS:
        raise MetadataError(
            f"{path}: safetensors header holds more than {MAX_TENSORS} tensors' worth of JSON"
        )
    try:
        header = json.loads(raw, **JSON_HOOKS)
    except (ValueError, RecursionError) as exc:
        raise MetadataError(f"{path}: safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise MetadataError(f"{path}: safetensors header is not a JSON object")
    return _summarize(path, header, size - 8 - header_len)


def _summarize(path: Path, header: dict[str, Any], data_len: int) -> _FileSummary:
    summary = _FileSummary()
    layout = summary.layout
    for name, info in header.items():
        if name == "__metadata__":
            if isinstance(info, dict):
                summary.metadata = {
                    str(k)[:200]: v[:1000] for k, v in info.items() if isinstance(v, str)
                }
            continue
        if not isinstance(info, dict):
            raise MetadataError(f"{path}: tensor {name[:100]!r} has no description")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if (
            not isinstance(dtype, str)
            or len(dtype) > MAX_DTYPE_CHARS
            or not isinstance(shape, list)
            or len(shape) > MAX_DIMS
            or not all(map(_is_count, shape))
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(map(_is_count, offsets))
            or offsets[0] > offsets[1]
        ):
            raise MetadataError(
                f"{path}: tensor {name[:100]!r} has an invalid dtype, shape or data_offsets"
            )
        begin, end = offsets
        if end > data_len:
            raise MetadataError(
                f"{path}: truncated safetensors file (tensor {name[:100]!r} ends at byte "
                f"{end} of a {data_len}-byte data section)"
            )
        elements = _elements(shape)
        if elements is None:
            raise MetadataError(
                f"{path}: tensor {name[:100]!r} has more than 2**63 elements (shape "
                f"{str(shape)[:100]})"
            )
        bits = DTYPE_BITS.get(dtype)
        if bits is not None and (elements * bits + 7) // 8 != end - begin:
            raise MetadataError(
                f"{path}: tensor {name[:100]!r} is {end - begin} bytes, but {dtype} "
                f"{shape} needs {(elements * bits + 7) // 8}"
            )
        summary.parameters += elements
        summary.bytes += end - begin
        summary.n_tensors += 1
        summary.elements_by_dtype[dtype] = summary.elements_by_dtype.get(dtype, 0) + elements
        layout.add(name, shape)
        if dtype == "U32" and name.endswith(".weight"):
            summary.packed += elements
        elif name.endswith((".scales", ".biases")):
            summary.quant_extra += elements
    return summary


def read_safetensors_file(path: str | os.PathLike[str]) -> ModelMetadata:
    """Metadata of a single ``.safetensors`` file from its header alone.

    Gives ``parameters``, ``dtype`` (the dtype holding the most elements, also used as
    ``quantization``), ``tensor_bytes`` and, in ``extra``, ``n_tensors`` and the header's
    ``__metadata__``. Raises :class:`MetadataError` for a missing, truncated or malformed file.
    """
    path = Path(path)
    summary = _read_header(path)
    dtype = summary.dominant_dtype()
    extra: dict[str, Any] = {"n_tensors": summary.n_tensors, "weight_files": [path.name]}
    if summary.metadata:
        extra["header_metadata"] = summary.metadata
    kind, details = summary.layout.decide(summary.metadata)
    extra.update(details)
    meta = ModelMetadata(
        format="safetensors",
        parameters=summary.parameters,
        quantization=dtype,
        dtype=dtype,
        tensor_bytes=summary.bytes,
        kind=kind,
        extra=extra,
    )
    return sanitize(meta)


def _read_json(path: Path) -> Any:
    try:
        with open_regular(path) as fp:
            size = os.fstat(fp.fileno()).st_size
            if size > MAX_JSON_BYTES:
                raise MetadataError(f"{path}: {size} bytes, too large (limit 32 MiB)")
            raw = _read_exact(fp, MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise MetadataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        return json.loads(raw, **JSON_HOOKS)
    except (ValueError, RecursionError) as exc:
        raise MetadataError(f"{path}: not valid JSON ({exc})") from exc


def _read_text(path: Path, limit: int) -> str:
    try:
        with open_regular(path) as fp:
            raw = _read_exact(fp, limit + 1)
    except OSError as exc:
        raise MetadataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if len(raw) > limit:
        raise MetadataError(f"{path}: larger than {limit >> 20} MiB")
    return raw.decode("utf-8", errors="replace")


def _plain_name(name: Any) -> bool:
    return (
        isinstance(name, str)
        and name.lower().endswith(".safetensors")
        and "/" not in name
        and "\\" not in name
        and not name.startswith(".")
        and "\0" not in name
    )


def _weight_files(folder: Path, names: set[str]) -> tuple[list[str], dict[str, Any]]:
    """Which ``.safetensors`` files make up the model, and notes about the choice."""
    notes: dict[str, Any] = {}
    indexes = sorted(n for n in names if n.lower().endswith(_INDEX_SUFFIX))
    if indexes:
        index_name = "model" + _INDEX_SUFFIX if "model" + _INDEX_SUFFIX in names else indexes[0]
        index = _read_json(folder / index_name)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise MetadataError(f"{folder / index_name}: no weight_map")
        bad = [f for f in weight_map.values() if not _plain_name(f)]
        if bad:
            raise MetadataError(
                f"{folder / index_name}: weight_map names a file outside the folder "
                f"or not a .safetensors file: {str(bad[0])[:100]!r}"
            )
        files = set(weight_map.values())
        missing = sorted(files - names)
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise MetadataError(f"{folder}: missing shard {missing[0]}{more} (from {index_name})")
        notes["index_file"] = index_name
        index_meta = index.get("metadata")
        if isinstance(index_meta, dict) and _is_count(index_meta.get("total_size")):
            notes["index_total_size"] = index_meta["total_size"]
        return sorted(files), notes

    groups: dict[tuple[str, int], dict[int, str]] = {}
    for name in names:
        match = _SHARD_RE.match(name)
        if match:
            key = (match["stem"], int(match["count"]))
            groups.setdefault(key, {})[int(match["index"])] = name
    if groups:
        key = max(groups, key=lambda k: (k[0] == "model", len(groups[k]), k))
        stem, count = key
        missing_idx = [i for i in range(1, count + 1) if i not in groups[key]]
        if missing_idx:
            raise MetadataError(
                f"{folder}: missing shard {stem}-{missing_idx[0]:05d}-of-{count:05d}.safetensors"
                + (f" and {len(missing_idx) - 1} more" if len(missing_idx) > 1 else "")
            )
        return [groups[key][i] for i in range(1, count + 1)], notes

    singles = sorted(n for n in names if n.lower().endswith(".safetensors"))
    if "model.safetensors" in names:
        singles = ["model.safetensors"]
    return singles, notes


def _first(
    sources: Iterable[dict[str, Any]], field: str, dropped: dict[str, str], *keys: str
) -> int | None:
    """The first of ``keys`` (in the first source holding one) within ``field``'s bounds; a
    present but invalid value is noted in ``dropped`` and the search goes on."""
    for source in sources:
        for key in keys:
            value = source.get(key)
            if value is not None and (n := bounded_field(field, value, dropped)) is not None:
                return n
    return None


def _text(value: Any) -> str | None:
    """A non-empty string of sane length from config.json, else ``None``."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_CONFIG_STRING else None


def _config_fields(config: dict[str, Any]) -> dict[str, Any]:
    """ModelMetadata fields (and extras) from a transformers ``config.json``."""
    sources = [config] + [
        sub
        for key in ("text_config", "llm_config", "language_config")
        if isinstance(sub := config.get(key), dict)
    ]
    dropped: dict[str, str] = {}
    heads = _first(
        sources, "n_heads", dropped, "num_attention_heads", "n_head", "num_heads", "n_heads"
    )
    kv_heads = _first(
        sources, "n_kv_heads", dropped,
        "num_key_value_heads", "n_head_kv", "num_kv_heads", "multi_query_group_num",
    )
    if kv_heads is None and heads is not None:
        kv_heads = 1 if any(s.get("multi_query") is True for s in sources) else heads
    hidden = _first(sources, "embedding_size", dropped, "hidden_size", "n_embd", "d_model")
    head_dim = _first(sources, "head_dim", dropped, "head_dim")
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads
    arch = next((t for s in sources if (t := _text(s.get("model_type")))), None)
    fields: dict[str, Any] = {
        "architecture": arch,
        "name": _text(config.get("_name_or_path")),
        "context_length": _first(
            sources, "context_length", dropped,
            "max_position_embeddings", "n_positions", "seq_length", "max_sequence_length",
        ),
        "n_layers": _first(
            sources, "n_layers", dropped, "num_hidden_layers", "n_layer", "num_layers", "n_layers"
        ),
        "n_heads": heads,
        "n_kv_heads": kv_heads,
        "embedding_size": hidden,
        "head_dim": head_dim,
        "vocab_size": _first(
            sources, "vocab_size", dropped, "vocab_size", "n_vocab", "padded_vocab_size"
        ),
    }
    extra: dict[str, Any] = {}
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and _text(architectures[0]):
        extra["hf_architecture"] = architectures[0]
    for extra_key, keys in (
        ("expert_count", ("num_local_experts", "num_experts", "n_routed_experts")),
        ("expert_used_count", ("num_experts_per_tok", "moe_topk")),
    ):
        value = _first(sources, extra_key, dropped, *keys)
        if value is not None:
            extra[extra_key] = value
    for source in sources:
        theta = source.get("rope_theta")  # the JSON hooks already turned 1e400/NaN into None
        if isinstance(theta, int | float) and not isinstance(theta, bool):
            extra["rope_freq_base"] = theta
            break
    for extra_key, key in (("torch_dtype", "torch_dtype"), ("torch_dtype", "dtype")):
        if _text(config.get(key)) and extra_key not in extra:
            extra[extra_key] = config[key]
    quant = config.get("quantization_config")
    if isinstance(quant, dict) and isinstance(quant.get("quant_method"), str):
        method = quant["quant_method"][:40]
        bits = quant.get("bits")
        if quant.get("load_in_4bit") is True:
            bits = 4
        elif quant.get("load_in_8bit") is True:
            bits = 8
        bits = bits if _is_count(bits) and bits <= 64 else None
        fields["quantization"] = method.upper() + (f"-{bits}bit" if bits else "")
        extra["quant_method"] = method
    if dropped:
        extra[IGNORED_KEY] = dropped
    fields["extra"] = extra
    return fields


def _chat_template(folder: Path, names: set[str]) -> str | None:
    """The chat template from chat_template.jinja, tokenizer_config.json or chat_template.json."""
    if "chat_template.jinja" in names:
        return _read_text(folder / "chat_template.jinja", MAX_TEMPLATE_BYTES)
    for file_name in ("tokenizer_config.json", "chat_template.json"):
        if file_name not in names:
            continue
        data = _read_json(folder / file_name)
        template = data.get("chat_template") if isinstance(data, dict) else None
        if isinstance(template, list):  # named templates: prefer "default"
            named = {
                t.get("name"): t.get("template")
                for t in template
                if isinstance(t, dict) and isinstance(t.get("template"), str)
            }
            template = named.get("default", next(iter(named.values()), None))
        if isinstance(template, str):
            if len(template.encode("utf-8", errors="replace")) > MAX_TEMPLATE_BYTES:
                raise MetadataError(f"{folder / file_name}: chat template larger than 1 MiB")
            return template
    return None


def read_safetensors_folder(path: str | os.PathLike[str]) -> ModelMetadata:
    """Metadata of a transformers model folder: ``config.json`` plus the safetensors headers.

    Sharded weights are found through ``*.safetensors.index.json`` or the
    ``model-0000i-of-0000N.safetensors`` names, and must be complete. ``extra`` lists the weight
    files, any pickle-based weights present (``pickle_weights``; never loaded) and a few config
    values. Raises :class:`MetadataError` if there are no safetensors weights, a shard is
    missing, or a header or JSON file is malformed.
    """
    folder = Path(path)
    try:
        names = {entry.name for entry in os.scandir(folder) if entry.is_file()}
    except OSError as exc:
        raise MetadataError(f"{folder}: cannot list folder ({exc.strerror or exc})") from exc
    files, notes = _weight_files(folder, names)
    if not files:
        raise MetadataError(f"no .safetensors weights in {folder}")

    total = _FileSummary()
    for name in files:
        total.add(_read_header(folder / name))

    fields: dict[str, Any] = {"extra": {}}
    config: dict[str, Any] = {}
    if "config.json" in names:
        config = _read_json(folder / "config.json")
        if not isinstance(config, dict):
            raise MetadataError(f"{folder / 'config.json'}: not a JSON object")
        fields = _config_fields(config)
    extra: dict[str, Any] = fields.pop("extra")
    extra.update(notes)
    extra["n_tensors"] = total.n_tensors
    extra["weight_files"] = files
    pickles = sorted(n for n in names if n.lower().endswith(PICKLE_SUFFIXES))
    if pickles:
        extra["pickle_weights"] = pickles
    template = _chat_template(folder, names)
    dtype = total.dominant_dtype()
    fields.setdefault("quantization", dtype)
    kind, details = folder_kind(folder, names, config, total.layout, total.metadata)
    extra.update(details)
    fmt, parameters = "safetensors", total.parameters
    mlx = _mlx_quantization(config)
    if mlx is not None:
        bits, group = mlx
        fmt = "mlx"
        fields["quantization"] = f"Q{bits} g{group}"
        extra["mlx_quantization"] = {"bits": bits, "group_size": group}
        # Quantized weights are packed 32 // bits to a U32; scales and biases are overhead.
        parameters = max(0, parameters - total.packed - total.quant_extra) + (
            total.packed * 32 // bits
        )
    meta = ModelMetadata(
        format=fmt,
        parameters=parameters,
        dtype=dtype,
        tensor_bytes=total.bytes,
        has_chat_template=template is not None,
        chat_template=template,
        kind=kind,
        extra=extra,
        **fields,
    )
    return sanitize(meta)


def folder_kind(
    folder: Path, names: set[str], config: dict[str, Any], layout: TensorLayout,
    header_meta: dict[str, str],
) -> tuple[str, dict[str, Any]]:
    """A model folder's kind: what its config.json or PEFT adapter_config.json declares, else
    what its tensor names say."""
    kind = config_kind(config, names) if config else None
    if kind is None and not config and "adapter_config.json" in names:
        adapter = _read_json(folder / "adapter_config.json")
        found = adapter_kind(adapter) if isinstance(adapter, dict) else None
        if found is not None:
            lora_kind, details = found
            if "lora_rank" not in details and layout.rank:
                details["lora_rank"] = layout.rank
            return lora_kind, details
    decided, details = layout.decide(header_meta)
    if kind is None or decided == "lora":
        return decided, details
    return kind, {k: v for k, v in details.items() if k == "base_family"}


def _mlx_quantization(config: dict[str, Any]) -> tuple[int, int] | None:
    """(bits, group_size) of an MLX folder (``"quantization": {"group_size": 64, "bits": 4}``
    in config.json), else ``None``."""
    quant = config.get("quantization")
    if not isinstance(quant, dict):
        return None
    bits, group = quant.get("bits"), quant.get("group_size")
    if _is_count(bits) and 1 <= bits <= 16 and _is_count(group) and 1 <= group <= 1 << 16:
        return bits, group
    return None


def read_safetensors(path: str | os.PathLike[str]) -> ModelMetadata:
    """:func:`read_safetensors_folder` for a folder, :func:`read_safetensors_file` for a file."""
    return read_safetensors_folder(path) if Path(path).is_dir() else read_safetensors_file(path)
