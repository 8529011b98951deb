"""Bounded readers for the binary containers of ONNX, Core ML and TFLite files.

:class:`ProtoReader` walks a protobuf message sequentially, reading the fields a caller wants
and seeking past the rest (an initializer's ``raw_data`` is never read). :class:`FlatBuffer`
reads a FlatBuffer's tables by offset. Both read the file through a small window or page
cache, never whole, check every length and offset against the file before using it, count the
fields they walk and stop at a fixed budget, and nest only as deep as the caller's schema
(never as deep as the file says). Anything wrong raises :class:`MetadataError` with one line.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator

from tui.errors import MetadataError

MAX_FIELDS = 20_000_000  # protobuf fields walked per file (big graphs: ~10 per node)
MAX_KEPT_BYTES = 64 << 10  # a string or small message read into memory
_WINDOW = 64 << 10

_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5


class ProtoReader:
    """Sequential, bounded reads of a protobuf-encoded file."""

    def __init__(self, fp: io.RawIOBase, size: int, label: str, what: str) -> None:
        self.fp = fp
        self.size = size
        self.label = label
        self.what = what  # "ONNX model", "Core ML model": named in errors
        self.pos = 0
        self.fields = 0
        self._buf = b""
        self._buf_start = 0

    def fail(self, why: str) -> MetadataError:
        return MetadataError(f"{self.label}: {why}")

    def _byte_window(self, n: int) -> tuple[bytes, int]:
        """A buffer holding at least ``n`` bytes from ``pos`` (fewer at the end of the file),
        and the offset of ``pos`` in it."""
        start = self._buf_start
        offset = self.pos - start
        if offset >= 0 and offset + n <= len(self._buf):
            return self._buf, offset
        self.fp.seek(self.pos)
        want = max(n, _WINDOW)
        chunks = []
        got = 0
        while got < want:
            chunk = self.fp.read(want - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        self._buf = b"".join(chunks)
        self._buf_start = self.pos
        return self._buf, 0

    def varint(self, end: int) -> int:
        """A base-128 varint (at most 10 bytes, before ``end``)."""
        buf, at = self._byte_window(10)
        value = shift = 0
        for i in range(10):
            if at + i >= len(buf) or self.pos + i >= end:
                raise self.fail(f"truncated {self.what} (a number runs past byte {end})")
            byte = buf[at + i]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                self.pos += i + 1
                return value
            shift += 7
        raise self.fail(f"not a valid {self.what} (a number longer than 10 bytes at byte "
                        f"{self.pos})")

    def read(self, n: int, end: int) -> bytes:
        """``n`` bytes (at most :data:`MAX_KEPT_BYTES`) before ``end``."""
        if n > MAX_KEPT_BYTES:
            raise self.fail(f"a field of {n} bytes where a short one belongs")
        if self.pos + n > end:
            raise self.fail(f"truncated {self.what} (a field runs past byte {end})")
        buf, at = self._byte_window(n)
        if at + n > len(buf):
            raise self.fail(f"truncated {self.what} (file ends at byte {self.size})")
        self.pos += n
        return buf[at : at + n]

    def skip(self, n: int, end: int) -> None:
        if self.pos + n > end:
            raise self.fail(f"truncated {self.what} (a field of {n} bytes runs past byte {end})")
        self.pos += n

    def length(self, end: int) -> int:
        """A length prefix; the bytes it covers must fit before ``end``."""
        n = self.varint(end)
        if n > end - self.pos:
            raise self.fail(f"truncated {self.what} (a field of {n} bytes at byte {self.pos} "
                            f"runs past byte {end})")
        return n

    def walk(self, end: int) -> Iterator[tuple[int, int]]:
        """The (field number, wire type) of each field until ``end``; the caller reads the value
        with :meth:`value_*` or :meth:`skip_value`, or the walk skips it."""
        while self.pos < end:
            self.fields += 1
            if self.fields > MAX_FIELDS:
                raise self.fail(f"{self.what} has more than {MAX_FIELDS:,} fields; not read")
            key = self.varint(end)
            field, wire = key >> 3, key & 7
            if field == 0 or wire not in (_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32):
                raise self.fail(f"not a valid {self.what} (field {field}, wire type {wire} at "
                                f"byte {self.pos})")
            before = self.pos
            yield field, wire
            if self.pos == before:  # not consumed by the caller
                self.skip_value(wire, end)
        if self.pos != end:
            raise self.fail(f"not a valid {self.what} (a message overruns byte {end})")

    def skip_value(self, wire: int, end: int) -> None:
        if wire == _WIRE_VARINT:
            self.varint(end)
        elif wire == _WIRE_I64:
            self.skip(8, end)
        elif wire == _WIRE_I32:
            self.skip(4, end)
        else:
            self.skip(self.length(end), end)

    def value_int(self, wire: int, end: int) -> int | None:
        """A varint field's value (``None`` for another wire type, which is skipped)."""
        if wire != _WIRE_VARINT:
            self.skip_value(wire, end)
            return None
        return self.varint(end)

    def value_str(self, wire: int, end: int, cap: int = 1024) -> str | None:
        """A string field (``None`` if longer than ``cap`` bytes or of another wire type)."""
        if wire != _WIRE_LEN:
            self.skip_value(wire, end)
            return None
        n = self.length(end)
        if n > cap:
            self.skip(n, end)
            return None
        return self.read(n, end).decode("utf-8", errors="replace")

    def message(self, wire: int, end: int) -> int | None:
        """The end of an embedded message starting here (``None`` for another wire type)."""
        if wire != _WIRE_LEN:
            self.skip_value(wire, end)
            return None
        n = self.length(end)
        return self.pos + n

    def ints(self, wire: int, end: int, into: list[int], cap: int) -> None:
        """A repeated integer field, packed or not, appended to ``into`` (at most ``cap``)."""
        if wire == _WIRE_VARINT:
            value = self.varint(end)
            if len(into) >= cap:
                raise self.fail(f"a shape with more than {cap} dimensions")
            into.append(value)
        elif wire == _WIRE_LEN:
            stop = self.pos + self.length(end)
            while self.pos < stop:
                if len(into) >= cap:
                    raise self.fail(f"a shape with more than {cap} dimensions")
                into.append(self.varint(stop))
        else:
            self.skip_value(wire, end)


def signed64(value: int) -> int:
    """A varint read as int64 (two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


# -- FlatBuffers -------------------------------------------------------------------------------

_PAGE = 64 << 10
MAX_PAGES = 4096  # 256 MiB of a file read for one model's tables at most


class FlatBuffer:
    """Bounded random access to a FlatBuffer file (tables, vectors, strings, scalars)."""

    def __init__(self, fp: io.RawIOBase, size: int, label: str, what: str) -> None:
        self.fp = fp
        self.size = size
        self.label = label
        self.what = what
        self._pages: dict[int, bytes] = {}

    def fail(self, why: str) -> MetadataError:
        return MetadataError(f"{self.label}: {why}")

    def bytes_at(self, pos: int, n: int) -> bytes:
        if pos < 0 or n < 0 or pos + n > self.size:
            raise self.fail(f"not a valid {self.what} (an offset points past the end, byte "
                            f"{pos + n} of {self.size})")
        first, last = pos // _PAGE, (pos + n - 1) // _PAGE if n else pos // _PAGE
        parts = []
        for page in range(first, last + 1):
            data = self._pages.get(page)
            if data is None:
                if len(self._pages) >= MAX_PAGES:
                    raise self.fail(f"{self.what} tables spread over more than "
                                    f"{MAX_PAGES * _PAGE >> 20} MiB; not read")
                data = self._pages[page] = os.pread(self.fp.fileno(), _PAGE, page * _PAGE)
            parts.append(data)
        blob = parts[0] if len(parts) == 1 else b"".join(parts)
        start = pos - first * _PAGE
        out = blob[start : start + n]
        if len(out) != n:
            raise self.fail("file changed while being read")
        return out

    def u8(self, pos: int) -> int:
        return self.bytes_at(pos, 1)[0]

    def u16(self, pos: int) -> int:
        return struct.unpack("<H", self.bytes_at(pos, 2))[0]

    def u32(self, pos: int) -> int:
        return struct.unpack("<I", self.bytes_at(pos, 4))[0]

    def i32(self, pos: int) -> int:
        return struct.unpack("<i", self.bytes_at(pos, 4))[0]

    def u64(self, pos: int) -> int:
        return struct.unpack("<Q", self.bytes_at(pos, 8))[0]

    def i64(self, pos: int) -> int:
        return struct.unpack("<q", self.bytes_at(pos, 8))[0]

    def root(self) -> int:
        """The root table's position."""
        return self.u32(0)

    def table(self, pos: int) -> tuple[int, int, int]:
        """(table, vtable, vtable length) for the table at ``pos``, checked."""
        vtable = pos - self.i32(pos)
        vt_len = self.u16(vtable)
        obj_len = self.u16(vtable + 2)
        if vt_len < 4 or vt_len % 2 or vtable + vt_len > self.size or pos + obj_len > self.size:
            raise self.fail(f"not a valid {self.what} (a table at byte {pos} is malformed)")
        return pos, vtable, vt_len

    def field(self, table: tuple[int, int, int], index: int) -> int:
        """The position of field ``index`` of ``table`` (0 if absent)."""
        pos, vtable, vt_len = table
        slot = 4 + 2 * index
        if slot + 2 > vt_len:
            return 0
        offset = self.u16(vtable + slot)
        return pos + offset if offset else 0

    def ref(self, table: tuple[int, int, int], index: int) -> int:
        """Where field ``index`` (an offset to a table, vector or string) points (0: absent)."""
        at = self.field(table, index)
        if not at:
            return 0
        target = at + self.u32(at)
        if target >= self.size:
            raise self.fail(f"not a valid {self.what} (an offset at byte {at} points past the "
                            "end)")
        return target

    def vector(self, table: tuple[int, int, int], index: int, elem: int, cap: int
               ) -> tuple[int, int]:
        """(first element, count) of a vector field (``(0, 0)`` if absent); at most ``cap``."""
        at = self.ref(table, index)
        if not at:
            return 0, 0
        count = self.u32(at)
        if count > cap:
            raise self.fail(f"{self.what} declares {count:,} entries where at most {cap:,} "
                            "are read")
        if at + 4 + count * elem > self.size:
            raise self.fail(f"not a valid {self.what} (a vector of {count:,} entries runs past "
                            "the end)")
        return at + 4, count

    def vector_table(self, start: int, i: int) -> tuple[int, int, int]:
        """Element ``i`` of a vector of tables."""
        at = start + 4 * i
        return self.table(at + self.u32(at))

    def string(self, table: tuple[int, int, int], index: int, cap: int = 1024) -> str | None:
        """A string field (``None`` if absent or longer than ``cap`` bytes)."""
        at = self.ref(table, index)
        return self.string_at(at, cap) if at else None

    def string_at(self, at: int, cap: int = 1024) -> str | None:
        n = self.u32(at)
        if n > cap:
            return None
        return self.bytes_at(at + 4, n).decode("utf-8", errors="replace")
