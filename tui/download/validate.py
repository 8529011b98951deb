"""Does an HTTP answer carry exactly the bytes that were asked for?

:func:`check_response` is the one place both body paths (the threaded raw-socket one and
httpx) decide, from the status line and headers alone and before a byte is written, where a
body goes: status, ``Content-Range`` start, end and total, ``Content-Length`` and encodings
must agree with the request and the known file size. Numbers from the server are parsed
strictly (ASCII digits, bounded); header values quoted in a reason are escaped and shortened.
The receivers then count the body against :attr:`Accepted.length` (:func:`body_too_long`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_DIGITS = 18  # < 2**63: a length no file system holds, still a plain int
_NUMBER = rf"[0-9]{{1,{MAX_DIGITS}}}"
_LENGTH_RE = re.compile(_NUMBER)
_CONTENT_RANGE_RE = re.compile(rf"bytes ({_NUMBER})-({_NUMBER})/({_NUMBER}|\*)")
_UNSATISFIED_RE = re.compile(rf"bytes \*/({_NUMBER})")

Ask = tuple[int, int | None]  # (first byte, last byte or None for "to the end")


@dataclass(frozen=True, slots=True)
class Accepted:
    """Where an accepted body goes: ``length`` bytes written from file offset ``start``.

    ``length`` is None only for a body of unknown size, read until the connection closes.
    ``framed``: the length is the response's ``Content-Length`` (the HTTP layer ends the body
    there); otherwise the body ends at EOF or its last chunk, and the receiver must refuse it
    if it runs past ``length``. ``full``: a ``200`` carrying the whole file from offset 0,
    which replaces whatever progress the asked range stood on. ``total`` is the file size
    the answer states (or the known size), None if unknown.
    """

    start: int
    length: int | None
    total: int | None
    framed: bool
    full: bool = False

    @property
    def end(self) -> int | None:
        """One past the last byte, or None."""
        return None if self.length is None else self.start + self.length


class BadResponse(Exception):
    """An answer whose body cannot be mapped onto the asked bytes; none of it is written.

    ``reason`` reads after "the server answered …" and ends with what was asked
    ("… for bytes 0-99"), so a caller can append " of <file>".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RangeIgnored(BadResponse):
    """A ``200`` to a ranged request whose full body cannot be used here: the server ignored
    ``Range`` or, under ``If-Range``, the file changed. Not a lie; the caller restarts."""


def parse_length(value: str | None) -> int | None:
    """A ``Content-Length``-style number (ASCII digits only, at most 18), else None."""
    if value is None:
        return None
    value = value.strip()
    return int(value) if _LENGTH_RE.fullmatch(value) else None


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes S-E/T`` (``T`` may be ``*``) as ``(S, E, T or None)``; None if malformed or
    inconsistent (``E < S``, ``E >= T``)."""
    if value is None:
        return None
    m = _CONTENT_RANGE_RE.fullmatch(value.strip())
    if not m:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if last < first or (total is not None and last >= total):
        return None
    return first, last, total


def parse_unsatisfied_range(value: str | None) -> int | None:
    """The size in a ``416``'s ``Content-Range: bytes */N``, or None."""
    m = _UNSATISFIED_RE.fullmatch(value.strip()) if value is not None else None
    return int(m.group(1)) if m else None


def describe_ask(asked: Ask | None) -> str:
    """``bytes 0-99``, ``bytes 100-`` or ``the whole file``."""
    if asked is None:
        return "the whole file"
    first, last = asked
    return f"bytes {first}-" if last is None else f"bytes {first}-{last}"


def body_too_long(acc: Accepted) -> BadResponse:
    """The error for a body that runs past the accepted length (nothing past it is written)."""
    assert acc.length is not None
    ask = (acc.start, acc.start + acc.length - 1)
    return BadResponse(f"more than the {acc.length} bytes asked for {describe_ask(ask)}")


def shown(value: str, limit: int = 60) -> str:
    """A server-supplied string fit for a one-line message: escaped, quoted, shortened."""
    text = value if len(value) <= limit else value[:limit] + "…"
    return ascii(text)


def check_response(asked: Ask | None, known_size: int | None, status: int,
                   headers: Iterable[tuple[str, str]] | object, *,
                   whole_ok: bool = False) -> Accepted:
    """Accept an answer to a GET for ``asked`` (None: no ``Range``) of a file of
    ``known_size`` bytes (None: unknown), or raise :class:`BadResponse` before any body is
    written.

    ``headers`` is an ``httpx.Headers`` (or anything with ``items()``, or pairs); repeated
    fields are joined with ``", "`` and so never parse as one number. ``whole_ok``: the
    caller can take a ``200`` with the whole file in place of the range (a single piece that
    starts at offset 0); otherwise a ``200`` to a ranged request raises
    :class:`RangeIgnored`.

    Rules: only ``206`` (to a ranged request) and ``200``; no ``Content-Encoding`` but
    ``identity``, no ``Transfer-Encoding`` but ``chunked`` and never with
    ``Content-Length``, no ``multipart/byteranges``. A ``206`` needs ``Content-Range:
    bytes s-e/T`` with exactly the asked start and end (to the end of the file for an
    open-ended ask), ``T`` the known size when both are known, ``Content-Length`` (if
    present) ``e-s+1``. A ``200``'s ``Content-Length`` (if present) is the known size.
    """
    h = _fold(headers)
    what = describe_ask(asked)
    if status not in (200, 206):
        if status == 416:
            raise BadResponse(f"HTTP 416 (range not satisfiable) for {what}")
        raise BadResponse(f"HTTP {int(status)} for {what}")
    encoding = h.get("content-encoding")
    if encoding is not None and any(
            c.strip().lower() not in ("identity", "") for c in encoding.split(",")):
        raise BadResponse(f"a body with Content-Encoding {shown(encoding)} for {what}")
    if "multipart/byteranges" in h.get("content-type", "").lower():
        raise BadResponse(f"a multipart/byteranges body for {what}")
    raw_length = h.get("content-length")
    length = parse_length(raw_length)
    if raw_length is not None and length is None:
        raise BadResponse(f"an unreadable Content-Length {shown(raw_length)} for {what}")
    transfer = h.get("transfer-encoding")
    if transfer is not None:
        codings = [c.strip().lower() for c in transfer.split(",") if c.strip()]
        if codings != ["chunked"]:
            raise BadResponse(f"a body with Transfer-Encoding {shown(transfer)} for {what}")
        if raw_length is not None:
            raise BadResponse(f"both Transfer-Encoding and Content-Length for {what}")
    if status == 206:
        return _check_partial(asked, known_size, h, length, what)
    if length is not None and known_size is not None and length != known_size:
        diff = length - known_size  # not even the whole file
        raise BadResponse(f"{abs(diff)} bytes {'more' if diff > 0 else 'fewer'} than the "
                          f"file's {known_size} (HTTP 200, Content-Length {length}) for {what}")
    if asked is not None and not whole_ok:
        raise RangeIgnored(f"HTTP 200 (the whole file) for {what}")
    size = known_size if known_size is not None else length
    return Accepted(start=0, length=size, total=size, framed=length is not None, full=True)


def _check_partial(asked: Ask | None, known_size: int | None, h: dict[str, str],
                   length: int | None, what: str) -> Accepted:
    if asked is None:
        raise BadResponse(f"HTTP 206 (a part) for {what}")
    raw_range = h.get("content-range")
    parsed = parse_content_range(raw_range)
    if parsed is None:
        got = "no Content-Range" if raw_range is None else f"Content-Range {shown(raw_range)}"
        raise BadResponse(f"HTTP 206 with {got} for {what}")
    first, last, total = parsed
    if total is not None and known_size is not None and total != known_size:
        raise BadResponse(f"a total of {total} bytes in Content-Range for a file of "
                          f"{known_size} bytes for {what}")
    want_first, want_last = asked
    if want_last is None:  # open-ended: to the end of the file, where that is known
        end = known_size if known_size is not None else total
        want_last = end - 1 if end is not None else last
    if (first, last) != (want_first, want_last):
        raise BadResponse(f"bytes {first}-{last} (Content-Range {shown(str(raw_range))}) "
                          f"for {what}")
    expected = last - first + 1
    if length is not None and length != expected:
        diff = length - expected
        raise BadResponse(f"{abs(diff)} bytes {'more' if diff > 0 else 'fewer'} than asked "
                          f"(Content-Length {length}) for {what}")
    return Accepted(start=first, length=expected,
                    total=total if total is not None else known_size,
                    framed=length is not None)


def _fold(headers: object) -> dict[str, str]:
    """Lower-case names; repeated fields joined with ", " (as HTTP folds them)."""
    items = headers.items() if hasattr(headers, "items") else headers
    out: dict[str, str] = {}
    for name, value in items:  # type: ignore[union-attr]
        key = str(name).lower()
        out[key] = f"{out[key]}, {value}" if key in out else str(value)
    return out


__all__ = ["Accepted", "BadResponse", "RangeIgnored", "body_too_long", "check_response",
           "describe_ask", "parse_content_range", "parse_length", "parse_unsatisfied_range"]
