"""A fast, defensive GGUF (v2/v3) header reader.

The header is parsed with :mod:`struct` over a growing prefix buffer of the file; tensor data is
never read. Big arrays nobody displays (``tokenizer.ggml.tokens``, ``scores``, ``token_type``,
``merges``) are skipped rather than decoded: fixed-size arrays by arithmetic, string arrays by
walking their length prefixes with a precompiled regular expression that hops over 1024 short
strings per call in C (falling back to a plain loop for long strings).

Every declared count and length is checked against the bytes left in the file before anything is
read or allocated, so hostile or truncated files fail fast with :class:`MetadataError`.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import struct
from collections.abc import Iterable
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

from tui.errors import MetadataError
from tui.metadata.quant import (
    GGML_TYPES,
    file_type_name,
    guess_quant_from_filename,
)
from tui.metadata.types import ModelMetadata

__all__ = [
    "gguf_shard_paths",
    "read_gguf",
    "read_gguf_model",
    "read_gguf_set",
    "split_gguf_info",
]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# Limits. Real headers are far below all of them (a 256k-token vocab header is ~10 MiB).
MAX_KV = 1_000_000
MAX_TENSORS = 1_000_000
MAX_KEY_BYTES = 64 * 1024  # keys and tensor names
MAX_KEPT_STRING = 64 * 1024  # longer string values are skipped, not stored
MAX_TEMPLATE_BYTES = 1 << 20  # tokenizer.chat_template*
MAX_DIMS = 8
MAX_ARRAY_DEPTH = 2  # arrays of arrays of scalars, no deeper
MAX_NESTED_ARRAY = 65_536  # elements of an array whose elements are arrays
MAX_KEPT_ARRAY = 4096  # numeric arrays up to this length are kept (per-layer values)
MAX_HEADER_BYTES = 256 << 20
_FIRST_READ = 256 << 10

# GGUF value types.
_T_STRING = 8
_T_ARRAY = 9
# type id -> (struct code, size)
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("B", 1),
    1: ("b", 1),
    2: ("H", 2),
    3: ("h", 2),
    4: ("I", 4),
    5: ("i", 4),
    6: ("f", 4),
    7: ("?", 1),
    10: ("Q", 8),
    11: ("q", 8),
    12: ("d", 8),
}
_MIN_ELEMENT_SIZE = {**{t: size for t, (_, size) in _SCALARS.items()}, _T_STRING: 8, _T_ARRAY: 12}
_SCALAR_STRUCTS = {t: struct.Struct("<" + code) for t, (code, _) in _SCALARS.items()}

_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_TYPE_AND_OFFSET = struct.Struct("<IQ").unpack_from
_HEADER = struct.Struct("<4sIQQ")
_DIMS = [struct.Struct(f"<{n}Q").unpack_from for n in range(MAX_DIMS + 1)]

_TEMPLATE_KEY = "tokenizer.chat_template"
_TOKENS_KEY = "tokenizer.ggml.tokens"
_MERGES_KEY = "tokenizer.ggml.merges"

_SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)

# String arrays are skipped in chunks of _BIG (then _SMALL) elements per regex call.
_BIG = 1024
_SMALL = 32
_SAMPLE = 64
_MAX_FAST_LEN = 255


@cache
def _string_run(count: int, center: int = 0) -> re.Pattern[bytes]:
    """A pattern matching exactly ``count`` GGUF strings of at most 255 bytes each.

    Each alternative is ``<len byte> 00*7 .{len}``; the first byte picks the only branch that
    can match, and the possessive repeat never backtracks, so matching is linear. Failed
    branches cost a little each, so the likeliest lengths go first: ascending for short
    strings (``center=0``), else nearest to ``center`` (merges are "tokenA tokenB").
    """
    lengths = [*range(1, _MAX_FAST_LEN + 1), 0]
    if center:
        lengths.sort(key=lambda n: (abs(n - center) * (1 if n >= center else 1.5), n))
    alternatives = [
        # Spelled-out dots match faster than a counted repeat for short strings.
        re.escape(bytes([n])) + b"\\x00" * 7 + (b"." * n if n <= 32 else b".{%d}" % n)
        for n in lengths
    ]
    return re.compile(b"(?:" + b"|".join(alternatives) + b"){%d}+" % count, re.DOTALL)


def _center_for(lengths: list[int]) -> int:
    """Pattern family for a sample of string lengths (few families: each is compiled once)."""
    median = sorted(lengths)[len(lengths) // 2]
    return 0 if median <= 7 else 10 if median <= 11 else 13


class _Skipped:
    """Marker for a value that was skipped rather than stored."""

    __slots__ = ()


_SKIPPED = _Skipped()


class _HeaderParser:
    """Parses one GGUF header from ``fp`` (positioned at 0), holding a prefix of the file."""

    def __init__(self, fp: io.RawIOBase, size: int, label: str) -> None:
        self.fp = fp
        self.size = size
        self.label = label
        self.buf = bytearray()
        self.pos = 0
        self.array_lengths: dict[str, int] = {}
        self._grow(min(size, _FIRST_READ))

    # -- plumbing -----------------------------------------------------------------------------

    def fail(self, what: str) -> NoReturn:
        raise MetadataError(f"{self.label}: {what}")

    def truncated(self, end: int) -> NoReturn:
        raise MetadataError(
            f"{self.label}: truncated GGUF file (needs {end} bytes, file has {self.size})"
        )

    def need(self, end: int) -> None:
        """Make the buffer hold the file up to ``end``, or fail if the file is shorter."""
        if end > len(self.buf):
            self._grow(end)

    def _grow(self, end: int) -> None:
        if end > self.size:
            self.truncated(end)
        if end > MAX_HEADER_BYTES:
            self.fail(f"GGUF header is larger than {MAX_HEADER_BYTES >> 20} MiB")
        have = len(self.buf)
        target = min(self.size, MAX_HEADER_BYTES, max(end, 2 * have))
        # Zero-extend in place, then read straight into the new tail (no temporary copies).
        self.buf.extend(bytes(target - have))
        with memoryview(self.buf) as view:
            while have < target:
                got = self.fp.readinto(view[have:target])
                if not got:
                    self.fail("file changed while being read")
                have += got

    def remaining(self) -> int:
        return self.size - self.pos

    def u32(self) -> int:
        pos = self.pos
        self.need(pos + 4)
        self.pos = pos + 4
        return _U32(self.buf, pos)[0]

    def u64(self) -> int:
        pos = self.pos
        self.need(pos + 8)
        self.pos = pos + 8
        return _U64(self.buf, pos)[0]

    def string(self, cap: int, what: str) -> str:
        """Read a string of at most ``cap`` bytes (longer: MetadataError)."""
        n = self.string_length()
        if n > cap:
            self.fail(f"{what} is {n} bytes long (limit {cap})")
        return self.string_body(n)

    def string_length(self) -> int:
        n = self.u64()
        if n > self.remaining():
            self.truncated(self.pos + n)
        return n

    def string_body(self, n: int) -> str:
        start = self.pos
        self.need(start + n)
        self.pos = start + n
        return self.buf[start : start + n].decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        end = self.pos + n
        self.need(end)
        self.pos = end

    # -- values -------------------------------------------------------------------------------

    def value(self, key: str, vtype: int) -> Any:
        scalar = _SCALAR_STRUCTS.get(vtype)
        if scalar is not None:
            pos = self.pos
            self.need(pos + scalar.size)
            self.pos = pos + scalar.size
            return scalar.unpack_from(self.buf, pos)[0]
        if vtype == _T_STRING:
            if key.startswith(_TEMPLATE_KEY):
                return self.string(MAX_TEMPLATE_BYTES, f"chat template {key!r}")
            n = self.string_length()
            if n > MAX_KEPT_STRING:
                self.skip(n)
                return _SKIPPED
            return self.string_body(n)
        if vtype == _T_ARRAY:
            return self.array(key, depth=1)
        return self.fail(f"key {key!r} has unknown GGUF value type {vtype}")

    def array(self, key: str, depth: int) -> Any:
        itype = self.u32()
        n = self.u64()
        min_size = _MIN_ELEMENT_SIZE.get(itype)
        if min_size is None:
            self.fail(f"array {key!r} has unknown element type {itype}")
        if n * min_size > self.remaining():
            self.fail(
                f"array {key!r} declares {n} elements, more than the "
                f"{self.remaining()} bytes left in the file can hold"
            )
        if depth == 1:
            self.array_lengths[key] = n
        scalar = _SCALARS.get(itype)
        if scalar is not None:
            code, size = scalar
            if depth == 1 and n <= MAX_KEPT_ARRAY and not key.startswith("tokenizer."):
                start = self.pos
                self.skip(n * size)
                return list(struct.unpack_from(f"<{n}{code}", self.buf, start))
            self.skip(n * size)
        elif itype == _T_STRING:
            self.skip_strings(n)
        else:  # arrays of arrays: skipped, never stored
            if depth >= MAX_ARRAY_DEPTH:
                self.fail(f"array {key!r} nests arrays deeper than {MAX_ARRAY_DEPTH} levels")
            if n > MAX_NESTED_ARRAY:
                self.fail(f"array {key!r} holds {n} nested arrays (limit {MAX_NESTED_ARRAY})")
            for _ in range(n):
                self.array(key, depth + 1)
        return _SKIPPED

    def skip_strings(self, n: int) -> None:
        """Skip ``n`` length-prefixed strings (already checked: ``8 * n`` bytes remain)."""
        pos = self.pos
        size = self.size
        # Read ahead for a typical vocabulary (~16 bytes per string) to grow the buffer once.
        self.need(max(pos + 8 * n, min(size, MAX_HEADER_BYTES, pos + 24 * n)))
        center = 0
        if n >= 4 * _BIG:  # big array: sample its first strings to order the pattern
            sample: list[int] = []
            pos = self.walk_strings(pos, _SAMPLE, sample)
            n -= _SAMPLE
            center = _center_for(sample)
        big = _string_run(_BIG, center).match
        while n:
            buf = self.buf
            if n >= _BIG:
                if (m := big(buf, pos)) is not None:
                    pos = m.end()
                    n -= _BIG
                    continue
                # Maybe only the buffer ended: grow it and retry once it is long enough.
                want = min(size, MAX_HEADER_BYTES, pos + _BIG * (8 + _MAX_FAST_LEN))
                if want > len(buf):
                    self._grow(want)
                    continue
            # Long strings nearby (or few left): go in small steps for up to _BIG elements.
            small = _string_run(_SMALL).match
            budget = min(n, _BIG)
            while budget:
                if budget >= _SMALL and (m := small(self.buf, pos)) is not None:
                    pos = m.end()
                    step = _SMALL
                else:
                    step = min(budget, _SMALL)
                    pos = self.walk_strings(pos, step)
                n -= step
                budget -= step
        self.need(pos)
        self.pos = pos

    def walk_strings(self, pos: int, count: int, lengths: list[int] | None = None) -> int:
        """Walk ``count`` strings from ``pos`` one by one (optionally recording their lengths);
        returns the position after them. The last string's data may lie beyond the buffer."""
        size = self.size
        buf = self.buf
        for _ in range(count):
            if pos + 8 > len(buf):
                self._grow(pos + 8)
                buf = self.buf
            length = _U64(buf, pos)[0]
            pos += 8 + length
            if pos > size:
                self.truncated(pos)
            if lengths is not None:
                lengths.append(length)
        return pos

    # -- sections -----------------------------------------------------------------------------

    def header(self) -> tuple[int, int, int]:
        if self.size == 0:
            self.fail("empty file, not a GGUF model")
        if self.size < _HEADER.size:
            if self.buf[:4] != GGUF_MAGIC[: len(self.buf)]:
                self.fail("not a GGUF file (bad magic)")
            self.truncated(_HEADER.size)
        magic, version, n_tensors, n_kv = _HEADER.unpack_from(self.buf, 0)
        if magic != GGUF_MAGIC:
            self.fail(f"not a GGUF file (magic {bytes(magic)!r})")
        if version not in SUPPORTED_VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            if swapped in SUPPORTED_VERSIONS:
                self.fail("big-endian GGUF files are not supported")
            self.fail(f"unsupported GGUF version {version} (supported: 2, 3)")
        if n_kv > MAX_KV:
            self.fail(f"declares {n_kv} metadata keys (limit {MAX_KV})")
        if n_tensors > MAX_TENSORS:
            self.fail(f"declares {n_tensors} tensors (limit {MAX_TENSORS})")
        # Each key/value takes >= 13 bytes and each tensor info >= 24.
        if n_kv * 13 + n_tensors * 24 > self.size - _HEADER.size:
            self.fail(f"declares {n_kv} keys and {n_tensors} tensors, more than the file can hold")
        self.pos = _HEADER.size
        return version, n_tensors, n_kv

    def key_values(self, n_kv: int) -> dict[str, Any]:
        """All key/value pairs; big arrays skipped (their lengths go to ``array_lengths``)."""
        kv: dict[str, Any] = {}
        scalars = _SCALAR_STRUCTS
        size = self.size
        for _ in range(n_kv):
            # Inlined fast path for the key and scalar values (most pairs); the rest goes
            # through value(), which does the same checks the slow way.
            pos = self.pos
            if pos + 8 > len(self.buf):
                self._grow(pos + 8)
            n = _U64(self.buf, pos)[0]
            if n > size - pos - 12:
                self.truncated(pos + 12 + n)
            if n > MAX_KEY_BYTES:
                self.fail(f"a metadata key is {n} bytes long (limit {MAX_KEY_BYTES})")
            end = pos + 12 + n
            if end > len(self.buf):
                self._grow(end)
            buf = self.buf
            key = buf[pos + 8 : end - 4].decode("utf-8", errors="replace")
            vtype = _U32(buf, end - 4)[0]
            self.pos = end
            if key in kv:
                self.fail(f"duplicate metadata key {key!r}")
            scalar = scalars.get(vtype)
            if scalar is not None and end + scalar.size <= len(buf):
                kv[key] = scalar.unpack_from(buf, end)[0]
                self.pos = end + scalar.size
            else:
                kv[key] = self.value(key, vtype)
        return kv

    def tensor_infos(self, n_tensors: int, alignment: int) -> _TensorSummary:
        """Walk the tensor infos: parameter count, bytes per type, end of the data section."""
        summary = _TensorSummary()
        params = 0
        max_end = 0
        elements_by_type: dict[int, int] = {}
        bytes_by_type: dict[int, int] = {}
        matrix_elements_by_type: dict[int, int] = {}
        limit = 1 << 63
        pos = self.pos
        size = self.size
        prod = math.prod
        for i in range(n_tensors):
            buf = self.buf
            if pos + 12 > len(buf):
                self._grow(pos + 12)
                buf = self.buf
            name_len = _U64(buf, pos)[0]
            if name_len > MAX_KEY_BYTES:
                if pos + 8 + name_len > size:
                    self.truncated(pos + 8 + name_len)
                self.fail(f"tensor #{i} name is {name_len} bytes long (limit {MAX_KEY_BYTES})")
            pos += 8 + name_len
            if pos + 4 > len(buf):
                self._grow(pos + 4)
                buf = self.buf
            n_dims = _U32(buf, pos)[0]
            if n_dims > MAX_DIMS:
                self.fail(f"tensor #{i} has {n_dims} dimensions (limit {MAX_DIMS})")
            pos += 4
            end = pos + 8 * n_dims + 12
            if end > len(buf):
                self._grow(end)
                buf = self.buf
            dims = _DIMS[n_dims](buf, pos)
            ggml_type, offset = _TYPE_AND_OFFSET(buf, pos + 8 * n_dims)
            pos = end
            elements = prod(dims)
            if elements >= limit:
                self.fail(f"tensor #{i} has {elements} elements, too many")
            params += elements
            elements_by_type[ggml_type] = elements_by_type.get(ggml_type, 0) + elements
            if n_dims >= 2:
                matrix_elements_by_type[ggml_type] = (
                    matrix_elements_by_type.get(ggml_type, 0) + elements
                )
            if offset % alignment:
                self.fail(f"tensor #{i} offset {offset} is not a multiple of {alignment}")
            type_info = GGML_TYPES.get(ggml_type)
            if type_info is None:
                summary.unknown_types.add(ggml_type)
                continue
            _, block, type_size = type_info
            row = dims[0] if n_dims else 1
            if row % block:
                self.fail(
                    f"tensor #{i} row of {row} elements is not a multiple of the "
                    f"{type_info[0]} block size {block}"
                )
            nbytes = elements // block * type_size
            bytes_by_type[ggml_type] = bytes_by_type.get(ggml_type, 0) + nbytes
            max_end = max(max_end, offset + nbytes)
        self.pos = pos
        data_start = -(-pos // alignment) * alignment if n_tensors else pos
        if data_start + max_end > size:
            self.fail(
                f"truncated GGUF file (tensor data needs {data_start + max_end} bytes, "
                f"file has {size})"
            )
        summary.parameters = params
        summary.elements_by_type = elements_by_type
        summary.bytes_by_type = bytes_by_type
        summary.matrix_elements_by_type = matrix_elements_by_type
        return summary


class _TensorSummary:
    __slots__ = (
        "bytes_by_type",
        "elements_by_type",
        "matrix_elements_by_type",
        "parameters",
        "unknown_types",
    )

    def __init__(self) -> None:
        self.parameters = 0
        self.elements_by_type: dict[int, int] = {}
        self.bytes_by_type: dict[int, int] = {}
        self.matrix_elements_by_type: dict[int, int] = {}
        self.unknown_types: set[int] = set()

    @property
    def tensor_bytes(self) -> int | None:
        return None if self.unknown_types else sum(self.bytes_by_type.values())

    def dominant_type(self) -> int | None:
        """The ggml type holding the most elements, matrices (2-D+) first."""
        counts = self.matrix_elements_by_type or self.elements_by_type
        return max(counts, key=counts.__getitem__) if counts else None


def _int(value: Any) -> int | None:
    """``value`` if it is a non-negative int (not bool), else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _int_or_max(value: Any) -> int | None:
    """An int, or the max of a per-layer list of ints."""
    if isinstance(value, list):
        ints = [v for v in map(_int, value) if v is not None]
        return max(ints) if ints else None
    return _int(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | int | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def _open_regular(path: str | os.PathLike[str]) -> io.FileIO:
    """Open a regular file for reading without blocking (a FIFO named like a model would
    otherwise hang the caller); anything else raises :class:`MetadataError`."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise MetadataError(f"{os.fspath(path)}: not a regular file")
        return io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def _read(path: str | os.PathLike[str]) -> tuple[ModelMetadata, _TensorSummary]:
    label = os.fspath(path)
    try:
        with _open_regular(path) as fp:
            size = os.fstat(fp.fileno()).st_size
            parser = _HeaderParser(fp, size, label)
            version, n_tensors, n_kv = parser.header()
            kv = parser.key_values(n_kv)
            alignment = kv.get("general.alignment", DEFAULT_ALIGNMENT)
            if _int(alignment) is None or alignment == 0 or alignment & (alignment - 1):
                parser.fail(f"general.alignment {alignment!r} is not a power of two")
            summary = parser.tensor_infos(n_tensors, alignment)
    except OSError as exc:
        raise MetadataError(f"{label}: cannot read GGUF file ({exc.strerror or exc})") from exc
    meta = _build(kv, summary, parser.array_lengths, Path(label))
    meta.extra.update(gguf_version=version, n_tensors=n_tensors, n_kv=n_kv, alignment=alignment)
    return meta, summary


def _build(
    kv: dict[str, Any], summary: _TensorSummary, array_lengths: dict[str, int], path: Path
) -> ModelMetadata:
    arch = _str(kv.get("general.architecture")) or None

    def arch_value(suffix: str) -> Any:
        return kv.get(f"{arch}.{suffix}") if arch else None

    n_heads = _int_or_max(arch_value("attention.head_count"))
    n_kv_heads = _int_or_max(arch_value("attention.head_count_kv"))
    if n_kv_heads is None:
        n_kv_heads = n_heads  # llama.cpp's default: no GQA
    embedding = _int(arch_value("embedding_length"))
    head_dim = _int(arch_value("attention.key_length"))
    if head_dim is None and embedding and n_heads:
        head_dim = embedding // n_heads
    vocab = array_lengths.get(_TOKENS_KEY)
    if vocab is None:
        vocab = _int(arch_value("vocab_size"))

    template = _str(kv.get(_TEMPLATE_KEY))
    named_templates = sorted(
        k[len(_TEMPLATE_KEY) + 1 :]
        for k, v in kv.items()
        if k.startswith(_TEMPLATE_KEY + ".") and isinstance(v, str)
    )

    file_type = _int(kv.get("general.file_type"))
    quant = file_type_name(file_type)
    source = "file_type"
    if quant is None:
        dominant = summary.dominant_type()
        quant = GGML_TYPES[dominant][0] if dominant in GGML_TYPES else None
        source = "tensors"
    if quant is None:
        quant = guess_quant_from_filename(path)
        source = "filename"

    extra: dict[str, Any] = {}
    if quant is not None:
        extra["quantization_source"] = source
    for extra_key, value in (
        ("rope_freq_base", _number(arch_value("rope.freq_base"))),
        ("expert_count", _int(arch_value("expert_count"))),
        ("expert_used_count", _int(arch_value("expert_used_count"))),
        ("size_label", _str(kv.get("general.size_label"))),
        ("quantization_version", _int(kv.get("general.quantization_version"))),
        ("tokenizer_model", _str(kv.get("tokenizer.ggml.model"))),
        ("merges_count", array_lengths.get(_MERGES_KEY)),
        ("split_no", _int(kv.get("split.no"))),
        ("split_tensors_count", _int(kv.get("split.tensors.count"))),
    ):
        if value is not None:
            extra[extra_key] = value
    if named_templates:
        extra["chat_template_names"] = named_templates
    if summary.unknown_types:
        extra["unknown_tensor_types"] = sorted(summary.unknown_types)
    extra["tensor_types"] = {
        (GGML_TYPES[t][0] if t in GGML_TYPES else str(t)): n
        for t, n in sorted(summary.elements_by_type.items(), key=lambda item: -item[1])
    }

    return ModelMetadata(
        format="gguf",
        architecture=arch,
        name=_str(kv.get("general.name")),
        parameters=summary.parameters,
        quantization=quant,
        file_type=file_type,
        context_length=_int(arch_value("context_length")),
        n_layers=_int(arch_value("block_count")),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        embedding_size=embedding,
        head_dim=head_dim,
        vocab_size=vocab,
        has_chat_template=template is not None or bool(named_templates),
        chat_template=template,
        tensor_bytes=summary.tensor_bytes,
        split_count=_int(kv.get("split.count")),
        extra=extra,
    )


def read_gguf(path: str | os.PathLike[str]) -> ModelMetadata:
    """Read one GGUF file's header (one shard, for split models).

    Raises :class:`MetadataError` for anything that is not a sound GGUF v2/v3 file: bad magic,
    unsupported version, truncation (of the header or the tensor data it declares), absurd
    counts or lengths, unknown value types.
    """
    return _read(path)[0]


def split_gguf_info(filename: str | os.PathLike[str]) -> tuple[str, int, int] | None:
    """``(stem, index, count)`` for a split-GGUF shard name like ``m-00001-of-00003.gguf``.

    ``index`` is 1-based as in the name; returns ``None`` for other names (or an index
    outside ``1..count``).
    """
    match = _SPLIT_RE.match(Path(os.fspath(filename)).name)
    if match is None:
        return None
    index, count = int(match["index"]), int(match["count"])
    if not 1 <= index <= count:
        return None
    return match["stem"], index, count


def gguf_shard_paths(path: str | os.PathLike[str]) -> list[Path]:
    """All shard paths of the split set ``path`` belongs to (``[path]`` if not a shard)."""
    path = Path(path)
    info = split_gguf_info(path)
    if info is None:
        return [path]
    stem, _, count = info
    return [path.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def read_gguf_set(paths: Iterable[str | os.PathLike[str]]) -> ModelMetadata:
    """Read a split GGUF set (``*-0000i-of-0000N.gguf``, all N shards, any order).

    Metadata comes from the first shard; ``parameters`` and ``tensor_bytes`` are summed over
    all shards. A single non-shard path is read like :func:`read_gguf`.
    """
    shard_list = [Path(p) for p in paths]
    if not shard_list:
        raise MetadataError("no GGUF files given")
    parsed = [(split_gguf_info(p), p) for p in shard_list]
    if len(parsed) == 1 and parsed[0][0] is None:
        return read_gguf(shard_list[0])
    shards = [(info, p) for info, p in parsed if info is not None]
    if len(shards) != len(parsed) or len({(i[0].lower(), i[2]) for i, _ in shards}) != 1:
        names = ", ".join(p.name for p in shard_list[:4]) + (" …" if len(shard_list) > 4 else "")
        raise MetadataError(f"not one split GGUF set: {names}")
    count = shards[0][0][2]
    by_index: dict[int, Path] = {}
    for (_, index, _), p in shards:
        if index in by_index:
            raise MetadataError(f"{p}: shard {index} of {count} given twice")
        by_index[index] = p
    missing = [i for i in range(1, count + 1) if i not in by_index]
    if missing:
        listed = ", ".join(str(i) for i in missing[:5]) + (" …" if len(missing) > 5 else "")
        raise MetadataError(
            f"{by_index[min(by_index)]}: split GGUF set is missing shard(s) {listed} of {count}"
        )

    results = [_read(by_index[i]) for i in range(1, count + 1)]
    for i, (meta, _) in enumerate(results, start=1):
        if meta.split_count not in (None, count):
            raise MetadataError(
                f"{by_index[i]}: header says split.count={meta.split_count}, name says {count}"
            )
        split_no = meta.extra.get("split_no")
        if split_no is not None and split_no != i - 1:
            raise MetadataError(f"{by_index[i]}: header says split.no={split_no}, expected {i - 1}")

    first = results[0][0]
    summaries = [summary for _, summary in results]
    total = _TensorSummary()
    for summary in summaries:
        total.parameters += summary.parameters
        total.unknown_types |= summary.unknown_types
        for attr in ("elements_by_type", "bytes_by_type", "matrix_elements_by_type"):
            merged = getattr(total, attr)
            for t, n in getattr(summary, attr).items():
                merged[t] = merged.get(t, 0) + n
    extra = dict(first.extra)
    extra["n_tensors"] = sum(meta.extra.get("n_tensors", 0) for meta, _ in results)
    extra["shard_files"] = [by_index[i].name for i in range(1, count + 1)]
    extra["tensor_types"] = {
        (GGML_TYPES[t][0] if t in GGML_TYPES else str(t)): n
        for t, n in sorted(total.elements_by_type.items(), key=lambda item: -item[1])
    }
    quant = first.quantization
    if extra.get("quantization_source") != "file_type":
        dominant = total.dominant_type()
        if dominant in GGML_TYPES:
            quant = GGML_TYPES[dominant][0]
            extra["quantization_source"] = "tensors"
    if total.unknown_types:
        extra["unknown_tensor_types"] = sorted(total.unknown_types)
    return replace(
        first,
        parameters=total.parameters,
        tensor_bytes=total.tensor_bytes,
        quantization=quant,
        split_count=count,
        extra=extra,
    )


def read_gguf_model(path: str | os.PathLike[str]) -> ModelMetadata:
    """Read a GGUF model given any of its files: a whole split set if ``path`` is a shard."""
    shards = gguf_shard_paths(path)
    return read_gguf(path) if len(shards) == 1 else read_gguf_set(shards)
