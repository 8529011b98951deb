"""A fast, defensive GGUF (v2/v3) header reader.

The header is parsed with :mod:`struct` over a growing prefix buffer of the file; tensor data is
never read. Big arrays nobody displays (``tokenizer.ggml.tokens``, ``scores``, ``token_type``,
``merges``) are skipped rather than decoded: fixed-size arrays by arithmetic, string arrays by
walking their length prefixes with a precompiled regular expression that hops over 1024 short
strings per call in C (falling back to a plain loop for long strings).

Every declared count and length is checked against the bytes left in the file before anything is
read or allocated, so hostile or truncated files fail fast with :class:`MetadataError`.

Jumping past big string arrays
------------------------------
Walking the ~300k strings of a 152k-token vocabulary (tokens + merges) dominated the read, so a
string array of more than ``_JUMP_MIN_STRINGS`` elements that is not the last key/value pair is
*jumped* instead. Its end is where the next key starts, so the reader walks its first
``_JUMP_SAMPLE`` strings (a spot check), then searches with C-speed ``bytearray.find`` from the
smallest possible end (8 bytes per remaining string) for a length-prefixed key with a usual GGUF
prefix: ``tokenizer.`` first (over at most ``_JUMP_MAX_AVG`` bytes per string), then, just before
that hit or, failing one, anywhere in the window, ``general.``, ``split.``, ``quantize.``,
``<arch>.`` and the namespaces of keys seen so far. A hit is a candidate only if its key is
plain dotted ASCII (under 256 bytes), new, followed by a valid value type and a value that fits
in the file, and then (when cheap to tell) by another such key, a tensor info, or the end of a
tensor-less file.

The jump is then *verified* by the rest of the header: every later key must be plain ASCII, all
remaining key/value pairs and all tensor infos must parse, and the tensors' data must be
aligned, non-overlapping and end within one alignment step of the end of the file (a tensor-less
header: only zero padding may follow). If anything fails, the header is parsed again with the
exact walk, reusing the bytes already read. If no candidate turns up, or after
``_JUMP_MAX_ARRAYS`` jumps, the array (and every later one) is walked. So an odd or crafted file
costs at worst one bounded, fruitless search plus about two parses -- roughly 2-3x the exact walk,
never a crash, a hang or an unbounded allocation: every bound of the exact walk holds on the jump
path. The vocabulary size is the declared element count either way.

Caveats (no safety impact, every bound holds): a jumped array's inner string lengths are not
checked one by one, so a file whose array interior is corrupt may be read where the exact walk
would fail; and a crafted file can hide a fake, consistent "next key" inside a string of the
array, in which case the metadata shown may differ from what llama.cpp reads. The file's author
controls both variants anyway, and real vocabularies never contain a length-prefixed dotted GGUF
key followed by a valid value type and a consistent rest of the header.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import replace
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any, NoReturn

from tui.errors import MetadataError
from tui.metadata.files import open_regular
from tui.metadata.quant import (
    GGML_TYPES,
    file_type_name,
    guess_quant_from_filename,
)
from tui.metadata.types import (
    IGNORED_KEY,
    ModelMetadata,
    bounded_field,
    bounded_int,
    limit_of,
    sanitize,
)

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
_KIND_SAMPLE = 32  # tensors whose names and shapes are kept to tell the file's kind

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

# Jumping past big string arrays (see the module docstring).
_JUMP_MIN_STRINGS = 4096  # only arrays with more elements are jumped
_JUMP_SAMPLE = 64  # strings walked from the start of a jumped array (spot check + tighter bound)
_JUMP_MAX_AVG = 24  # search up to N * this bytes past the smallest end, then walk instead
_JUMP_CHUNK = 1 << 20  # search step for keys without the usual ``tokenizer.`` prefix
_JUMP_READ_AHEAD = 40  # bytes per element read at once when jumping
_JUMP_BACKCHECK = 64 << 10  # bytes before a ``tokenizer.`` hit searched for other prefixes
_JUMP_MAX_CANDIDATES = 256  # rejected hits per array before giving up (crafted files)
_JUMP_MAX_ARRAYS = 16  # jumps per header (real ones have 1-3 big string arrays)
_JUMP_MAX_TAIL = 64 << 10  # zero padding allowed after a tensor-less header that was jumped
_JUMP_PEEK_MAX = 1 << 20  # read at most this far past the buffer to check the key after a hit
_JUMP_PRIMARY = b"tokenizer."
_JUMP_PREFIXES = (b"general.", b"split.", b"quantize.")
_JUMP_MAX_PREFIXES = 8
_KEY_RE = re.compile(rb"[A-Za-z0-9_.\-]+")
_ARRAY_HEADER = struct.Struct("<IQ").unpack_from

# Counters for tests and benchmarks: accepted jumps, and parses redone with the exact walk.
_JUMP_STATS = {"jumps": 0, "rejected": 0}


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


class _JumpRejected(MetadataError):
    """A jump past a big string array was not confirmed by the rest of the header."""


class _Skipped:
    """Marker for a value that was skipped rather than stored."""

    __slots__ = ()


_SKIPPED = _Skipped()


class _HeaderParser:
    """Parses one GGUF header from ``fp`` (positioned at 0), holding a prefix of the file."""

    def __init__(self, fp: io.RawIOBase, size: int, label: str, allow_jump: bool = True) -> None:
        self.fp = fp
        self.size = size
        self.label = label
        self.buf = bytearray()
        self.pos = 0
        self.array_lengths: dict[str, int] = {}
        self.allow_jump = allow_jump
        self.jumped = 0  # big string arrays jumped so far (0: everything was walked exactly)
        self.kv: dict[str, Any] = {}  # key/value pairs read so far
        self.kv_left = 0  # key/value pairs after the one being read
        self.n_tensors = 0
        self.data_end: int | None = 0  # end of the tensor data (None: unknown tensor types)
        self._budget = 0  # candidate hits left to check for the array being jumped
        self._grow(min(size, _FIRST_READ))

    def restart_exact(self) -> None:
        """Start over at offset 0 with the exact walk, keeping the bytes already read."""
        self.pos = 0
        self.array_lengths = {}
        self.allow_jump = False
        self.jumped = 0
        self.kv = {}
        self.kv_left = 0

    def parse(self) -> tuple[int, int, int, dict[str, Any], int, _TensorSummary]:
        """(version, n_tensors, n_kv, key/values, alignment, tensor summary)."""
        version, n_tensors, n_kv = self.header()
        kv = self.key_values(n_kv)
        alignment = kv.get("general.alignment", DEFAULT_ALIGNMENT)
        if _int(alignment) is None or alignment == 0 or alignment & (alignment - 1):
            self.fail(f"general.alignment {alignment!r} is not a power of two")
        summary = self.tensor_infos(n_tensors, alignment)
        if self.jumped and self.data_end is not None:
            # Real files end with the tensor data (or the header), give or take padding.
            tail = self.size - self.data_end
            if tail >= alignment or (not n_tensors and tail > _JUMP_MAX_TAIL):
                self.reject(f"{tail} bytes after the tensor data after a jumped array")
            if not n_tensors:
                self.need(self.size)
                if self.buf.count(0, self.data_end, self.size) != tail:
                    self.reject("non-zero bytes after the header after a jumped array")
        return version, n_tensors, n_kv, kv, alignment, summary

    # -- plumbing -----------------------------------------------------------------------------

    def fail(self, what: str) -> NoReturn:
        raise MetadataError(f"{self.label}: {what}")

    def reject(self, what: str) -> NoReturn:
        raise _JumpRejected(f"{self.label}: {what}")

    def truncated(self, end: int) -> NoReturn:
        raise MetadataError(
            f"{self.label}: truncated GGUF file (needs {end} bytes, file has {self.size})"
        )

    def need(self, end: int) -> None:
        """Make the buffer hold the file up to ``end``, or fail if the file is shorter."""
        if end > len(self.buf):
            self._grow(end)

    def _grow(self, end: int, double: bool = True) -> None:
        """Read the file up to ``end`` (at least doubling the buffer, unless ``double=False``:
        the caller then grows it geometrically itself)."""
        if end > self.size:
            self.truncated(end)
        if end > MAX_HEADER_BYTES:
            self.fail(f"GGUF header is larger than {MAX_HEADER_BYTES >> 20} MiB")
        have = len(self.buf)
        target = min(self.size, MAX_HEADER_BYTES, max(end, 2 * have if double else end))
        # A new zeroed buffer, one copy of the old bytes, then read straight into the tail:
        # several times cheaper than growing in place with ``extend(bytes(n))``, which
        # touches a temporary zero buffer and the new memory too (page faults dominate).
        buf = bytearray(target)
        buf[:have] = self.buf
        with memoryview(buf) as view:
            while have < target:
                got = self.fp.readinto(view[have:target])
                if not got:
                    self.fail("file changed while being read")
                have += got
        self.buf = buf

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
            if not (
                depth == 1
                and n > _JUMP_MIN_STRINGS
                and self.kv_left
                and self.allow_jump
                and self.jump_strings(n)
            ):
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

    # -- jumping past big string arrays -------------------------------------------------------

    def jump_strings(self, n: int) -> bool:
        """Move past ``n`` strings (a big array, not the last key/value) by finding the next
        key; ``False`` (position unchanged) if no good candidate turns up."""
        start = self.pos
        try:
            end = self.find_array_end(n)
        except MetadataError:  # e.g. truncated: let the exact walk report it
            end = -1
        if end < 0:
            # Walk this array, and the later ones too: one fruitless search per header at
            # most, so an odd (or crafted) file costs little more than the exact walk.
            self.allow_jump = False
            self.pos = start
            return False
        self.pos = end
        self.jumped += 1
        if self.jumped >= _JUMP_MAX_ARRAYS:
            self.allow_jump = False
        return True

    def find_array_end(self, n: int) -> int:
        """Where the next key after ``n`` strings from ``self.pos`` most likely starts, or -1."""
        start = self.pos
        size = self.size
        first = min(n, _JUMP_SAMPLE)
        # Spot check: the first strings must be well-formed; the rest take >= 8 bytes each.
        lo = self.walk_strings(start, first) + 8 * (n - first)
        limit = min(size, MAX_HEADER_BYTES, lo + n * _JUMP_MAX_AVG)
        if lo + 13 > limit:  # no room for a key after the array within the search window
            return -1
        # Read ahead once for a typical BPE header: tokens (~16 bytes per string), token types
        # and merges (~20 bytes each) take ~40 bytes per token; growing the buffer in steps
        # costs more (a copy and fresh pages each time) than reading a little too much.
        self.need(min(limit, max(lo + 4096, start + _JUMP_READ_AHEAD * n)))
        self._budget = _JUMP_MAX_CANDIDATES
        end = self.find_key(_JUMP_PRIMARY, lo, limit)
        prefixes = self.jump_prefixes()
        if end >= 0:
            # A key with another prefix may come first (other keys between the array and
            # the "tokenizer." hit): look just before the hit.
            hi = end
            for prefix in prefixes:
                found = self.find_key(prefix, max(lo, end - _JUMP_BACKCHECK), hi)
                if found >= 0:
                    end = hi = found
        else:
            # The earliest key with another prefix, chunk by chunk (stop at the first hit).
            chunk_lo = lo
            while end < 0 and chunk_lo < limit and self._budget > 0:
                hi = chunk_hi = min(limit, chunk_lo + _JUMP_CHUNK)
                for prefix in prefixes:
                    found = self.find_key(prefix, chunk_lo, hi)
                    if found >= 0:
                        end = hi = found
                chunk_lo = chunk_hi
        return end if self._budget > 0 else -1

    def jump_prefixes(self) -> list[bytes]:
        """Key prefixes (besides ``tokenizer.``) that may follow a big array."""
        prefixes = list(_JUMP_PREFIXES)
        arch = self.kv.get("general.architecture")
        names = [arch] if isinstance(arch, str) else []
        names += [key.partition(".")[0] for key in islice(self.kv, 64)]
        for name in names:
            if len(prefixes) >= _JUMP_MAX_PREFIXES:
                break
            prefix = name.encode("utf-8", errors="replace") + b"."
            if prefix != _JUMP_PRIMARY and prefix not in prefixes and len(prefix) > 1:
                prefixes.append(prefix)
        return prefixes

    def find_key(self, prefix: bytes, lo: int, hi: int) -> int:
        """The first candidate key (position of its length field) in ``[lo, hi)`` whose text
        starts with ``prefix``, or -1. Grows the buffer as needed (up to ``hi``).

        The needle includes the 7 high (zero) bytes of the key's length, which makes
        ``find`` faster; keys of 256 bytes or more are not found (the array is walked)."""
        needle = b"\0" * 7 + prefix
        size = len(needle)
        at = lo + 1  # the needle starts after the length's low byte
        stop = hi + size  # a hit must end by here
        cap = min(self.size, MAX_HEADER_BYTES)
        while True:
            buf = self.buf
            end = min(len(buf), stop)
            hit = buf.find(needle, at, end) if at < end else -1
            if hit < 0:
                if end >= stop or len(buf) >= cap:
                    return -1
                at = max(at, end - size + 1)
                self._grow(min(stop, cap, 2 * len(buf)), double=False)
                continue
            if self.is_key_at(hit - 1):
                return hit - 1
            self._budget -= 1
            if self._budget <= 0:
                return -1
            at = hit + 1

    def is_key_at(self, pos: int) -> bool:
        """Whether a plausible next key/value pair starts at ``pos`` (``pos + 8`` is in the
        buffer)."""
        size = self.size
        length = _U64(self.buf, pos)[0]
        if not 0 < length <= MAX_KEY_BYTES:
            return False
        key_end = pos + 8 + length
        if key_end + 4 > size:
            return False
        self.need(min(size, key_end + 16))  # key, type, and an array's type and count
        buf = self.buf
        if _KEY_RE.fullmatch(buf, pos + 8, key_end) is None:
            return False
        if buf[pos + 8 : key_end].decode("ascii") in self.kv:
            return False
        end = self.value_end(key_end + 4, _U32(buf, key_end)[0])
        if end < 0:
            return False
        if end == 0:
            return True  # an array of strings (or arrays): no cheap end to check after
        if self.kv_left < 2 and not self.n_tensors:
            # The last key/value of a file without tensors: only padding may follow.
            alignment = self.kv.get("general.alignment")
            if _int(alignment) is None or alignment < DEFAULT_ALIGNMENT:
                alignment = DEFAULT_ALIGNMENT
            return size - end < alignment
        if end > len(self.buf) + _JUMP_PEEK_MAX:
            return True  # do not read far ahead just to check
        # Another key (or, after the last key/value, a tensor info) must follow.
        if end + 12 > size:
            return False
        self.need(end + 8)
        length = _U64(self.buf, end)[0]
        name_end = end + 8 + length
        if length > MAX_KEY_BYTES or name_end + 4 > size:
            return False
        self.need(name_end + 4)
        buf = self.buf
        if self.kv_left < 2:
            return _U32(buf, name_end)[0] <= MAX_DIMS
        return (
            length > 0
            and _KEY_RE.fullmatch(buf, end + 8, name_end) is not None
            and _U32(buf, name_end)[0] <= 12
        )

    def value_end(self, pos: int, vtype: int) -> int:
        """End of a value of type ``vtype`` at ``pos`` if it fits in the file (0: not cheap to
        tell, an array of strings or arrays), -1 if it cannot be valid. The buffer holds
        ``pos + 12`` bytes (or the whole file)."""
        size = self.size
        scalar = _SCALARS.get(vtype)
        if scalar is not None:
            end = pos + scalar[1]
            return end if end <= size else -1
        if vtype == _T_STRING:
            if pos + 8 > size:
                return -1
            n = _U64(self.buf, pos)[0]
            return pos + 8 + n if n <= size - pos - 8 else -1
        if vtype == _T_ARRAY:
            if pos + 12 > size:
                return -1
            itype, n = _ARRAY_HEADER(self.buf, pos)
            min_size = _MIN_ELEMENT_SIZE.get(itype)
            if min_size is None or n * min_size > size - pos - 12:
                return -1
            scalar = _SCALARS.get(itype)
            return pos + 12 + n * scalar[1] if scalar is not None else 0
        return -1

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
        self.n_tensors = n_tensors
        return version, n_tensors, n_kv

    def key_values(self, n_kv: int) -> dict[str, Any]:
        """All key/value pairs; big arrays skipped (their lengths go to ``array_lengths``)."""
        kv: dict[str, Any] = {}
        self.kv = kv
        scalars = _SCALAR_STRUCTS
        size = self.size
        for i in range(n_kv):
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
            if self.jumped and _KEY_RE.fullmatch(buf, pos + 8, end - 4) is None:
                self.reject("a key after a jumped array is not a plain GGUF key")
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
                self.kv_left = n_kv - 1 - i
                kv[key] = self.value(key, vtype)
        return kv

    def tensor_infos(self, n_tensors: int, alignment: int) -> _TensorSummary:
        """Walk the tensor infos: parameter count, bytes per type, end of the data section."""
        summary = _TensorSummary()
        sample = summary.sample
        params = 0
        max_end = 0
        elements_by_type: dict[int, int] = {}
        bytes_by_type: dict[int, int] = {}
        matrix_elements_by_type: dict[int, int] = {}
        limit = 1 << 63
        # After a jump, tensors must not overlap either: (offset, end) of each known tensor.
        spans: list[tuple[int, int]] | None = [] if self.jumped else None
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
            if i < _KIND_SAMPLE:  # the first names and shapes tell a file's kind
                if pos + 8 + name_len > len(buf):
                    self._grow(pos + 8 + name_len)
                    buf = self.buf
                name = buf[pos + 8 : pos + 8 + name_len].decode("utf-8", errors="replace")
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
            if i < _KIND_SAMPLE:
                sample.append((name, dims))
            elements = prod(dims)
            if elements >= limit:
                self.fail(f"tensor #{i} has {elements} elements, too many")
            params += elements
            if params >= limit:
                self.fail(f"tensors declare more than 2**63 elements in total (at tensor #{i})")
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
            if spans is not None:
                spans.append((offset, offset + nbytes))
        self.pos = pos
        data_start = -(-pos // alignment) * alignment if n_tensors else pos
        if data_start + max_end > size:
            self.fail(
                f"truncated GGUF file (tensor data needs {data_start + max_end} bytes, "
                f"file has {size})"
            )
        if spans:
            spans.sort()
            previous_end = 0
            for offset, end in spans:
                if offset < previous_end:
                    self.reject("tensor data overlaps after a jumped array")
                previous_end = end
        self.data_end = None if summary.unknown_types else data_start + max_end
        summary.parameters = params
        summary.elements_by_type = elements_by_type
        summary.bytes_by_type = bytes_by_type
        summary.matrix_elements_by_type = matrix_elements_by_type
        return summary


class _TensorSummary:
    __slots__ = (
        "bytes_by_type",
        "elements_by_type",
        "kv",
        "matrix_elements_by_type",
        "n_tensors",
        "parameters",
        "sample",
        "unknown_types",
    )

    def __init__(self) -> None:
        self.kv: dict[str, Any] = {}
        self.n_tensors = 0
        self.sample: list[tuple[str, tuple[int, ...]]] = []  # first tensors: (name, dims)
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


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | int | None:
    """A finite number (GGUF floats can be NaN or infinite)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def _read(
    path: str | os.PathLike[str], allow_jump: bool = True
) -> tuple[ModelMetadata, _TensorSummary]:
    """Parse one header. ``allow_jump=False`` forces the exact walk over big string arrays."""
    label = os.fspath(path)
    try:
        with open_regular(path) as fp:
            size = os.fstat(fp.fileno()).st_size
            parser = _HeaderParser(fp, size, label, allow_jump)
            try:
                version, n_tensors, n_kv, kv, alignment, summary = parser.parse()
            except MetadataError:
                if not parser.jumped:
                    raise
                # A jump was not confirmed: parse again, walking every string.
                _JUMP_STATS["rejected"] += 1
                parser.restart_exact()
                version, n_tensors, n_kv, kv, alignment, summary = parser.parse()
            else:
                _JUMP_STATS["jumps"] += parser.jumped
    except OSError as exc:
        raise MetadataError(f"{label}: cannot read GGUF file ({exc.strerror or exc})") from exc
    meta = _build(kv, summary, parser.array_lengths, Path(label))
    meta.extra.update(gguf_version=version, n_tensors=n_tensors, n_kv=n_kv, alignment=alignment)
    summary.kv = kv
    summary.n_tensors = n_tensors
    _set_kind(meta, kv, n_tensors, summary.sample)
    return sanitize(meta), summary


def _set_kind(
    meta: ModelMetadata, kv: dict[str, Any], n_tensors: int,
    sample: list[tuple[str, tuple[int, ...]]],
) -> None:
    """``meta.kind`` (and its details in ``extra``) from the header."""
    from tui.metadata.kinds import gguf_kind

    meta.kind, details = gguf_kind(kv, n_tensors, sample)
    meta.extra.update(details)
    general_type = kv.get("general.type")
    if isinstance(general_type, str) and general_type:
        meta.extra["general_type"] = general_type[:40]


def _build(
    kv: dict[str, Any], summary: _TensorSummary, array_lengths: dict[str, int], path: Path
) -> ModelMetadata:
    arch = _str(kv.get("general.architecture")) or None

    def arch_value(suffix: str) -> Any:
        return kv.get(f"{arch}.{suffix}") if arch else None

    # Every number goes through its field's bounds before any arithmetic; a u64 of 2**64-1 or
    # a negative i64 becomes unknown, noted in extra["ignored_values"].
    dropped: dict[str, str] = {}

    def count(name: str, value: Any) -> int | None:
        if isinstance(value, list):  # per-layer values: the largest valid one
            ints = [n for n in (bounded_int(v, 0, limit_of(name)) for v in value) if n is not None]
            if ints:
                return max(ints)
        return bounded_field(name, value, dropped)

    n_heads = count("n_heads", arch_value("attention.head_count"))
    n_kv_heads = count("n_kv_heads", arch_value("attention.head_count_kv"))
    if n_kv_heads is None:
        n_kv_heads = n_heads  # llama.cpp's default: no GQA
    embedding = count("embedding_size", arch_value("embedding_length"))
    head_dim = count("head_dim", arch_value("attention.key_length"))
    if head_dim is None and embedding and n_heads:
        head_dim = embedding // n_heads
    vocab = array_lengths.get(_TOKENS_KEY)
    if vocab is None:
        vocab = arch_value("vocab_size")
    vocab = count("vocab_size", vocab)

    template = _str(kv.get(_TEMPLATE_KEY))
    named_templates = sorted(
        k[len(_TEMPLATE_KEY) + 1 :]
        for k, v in kv.items()
        if k.startswith(_TEMPLATE_KEY + ".") and isinstance(v, str)
    )

    file_type = count("file_type", kv.get("general.file_type"))
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
    quant_version = kv.get("general.quantization_version")
    for extra_key, value in (
        ("rope_freq_base", _number(arch_value("rope.freq_base"))),
        ("expert_count", count("expert_count", arch_value("expert_count"))),
        ("expert_used_count", count("expert_used_count", arch_value("expert_used_count"))),
        ("size_label", _str(kv.get("general.size_label"))),
        ("quantization_version", count("quantization_version", quant_version)),
        ("tokenizer_model", _str(kv.get("tokenizer.ggml.model"))),
        ("merges_count", array_lengths.get(_MERGES_KEY)),
        ("split_no", count("split_no", kv.get("split.no"))),
        ("split_tensors_count", count("split_tensors_count", kv.get("split.tensors.count"))),
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
    context_length = count("context_length", arch_value("context_length"))
    n_layers = count("n_layers", arch_value("block_count"))
    split_count = count("split_count", kv.get("split.count"))
    if dropped:
        extra[IGNORED_KEY] = dropped

    return ModelMetadata(
        format="gguf",
        architecture=arch,
        name=_str(kv.get("general.name")),
        parameters=summary.parameters,
        quantization=quant,
        file_type=file_type,
        context_length=context_length,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        embedding_size=embedding,
        head_dim=head_dim,
        vocab_size=vocab,
        has_chat_template=template is not None or bool(named_templates),
        chat_template=template,
        tensor_bytes=summary.tensor_bytes,
        split_count=split_count,
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
    merged = replace(
        first,
        parameters=total.parameters,
        tensor_bytes=total.tensor_bytes,
        quantization=quant,
        split_count=count,
        extra=extra,
    )
    # The kind of the whole set (its first shard may hold metadata only).
    sample = next((s.sample for s in summaries if s.sample), [])
    _set_kind(merged, summaries[0].kv, extra["n_tensors"], sample)
    return sanitize(merged)


def read_gguf_model(path: str | os.PathLike[str]) -> ModelMetadata:
    """Read a GGUF model given any of its files: a whole split set if ``path`` is a shard."""
    shards = gguf_shard_paths(path)
    return read_gguf(path) if len(shards) == 1 else read_gguf_set(shards)
