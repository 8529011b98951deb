"""The response check both body paths share: an accepted answer maps exactly onto the asked
bytes, whatever the headers say (Hypothesis), and the lies seen in the wild are refused."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tui.download.validate import (
    Accepted,
    BadResponse,
    RangeIgnored,
    body_too_long,
    check_response,
    parse_content_range,
    parse_length,
)

from tests.support.checks import assert_no_control_chars

MiB = 1 << 20


def wire(headers) -> httpx.Headers:
    """Headers as they come off the wire (bytes; latin-1 is how the raw path decodes)."""
    pairs = headers.items() if isinstance(headers, dict) else headers
    return httpx.Headers([(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs])

# -- strategies -----------------------------------------------------------------------------

sizes = st.one_of(st.none(), st.integers(1, 1 << 40), st.integers(1, 4096))


@st.composite
def asks(draw: st.DrawFn, size: int | None) -> tuple[int, int | None] | None:
    kind = draw(st.sampled_from(["none", "closed", "open"]))
    if kind == "none":
        return None
    top = (size - 1) if size is not None else (1 << 40)
    first = draw(st.integers(0, top))
    if kind == "open":
        return (first, None)
    return (first, draw(st.integers(first, top)))


def _honest_range(asked: tuple[int, int | None], size: int | None) -> tuple[int, int]:
    first, last = asked
    if last is None:
        last = (size - 1) if size is not None else first + 1000
    return first, last


NUMBERS = st.one_of(
    st.integers(0, 1 << 41).map(str),
    st.sampled_from(["", " ", "-1", "+5", "0x10", "1e3", "²", "\xb9", "1 2", "5, 5", "9" * 30,
                     "18446744073709551616", "1_000", "\x1b[31m1"]),
)


@st.composite
def random_responses(draw: st.DrawFn) -> tuple:
    """Anything: random status, ranges, lengths, encodings and garbage."""
    size = draw(sizes)
    asked = draw(asks(size))
    status = draw(st.one_of(st.sampled_from([200, 206, 206, 206, 416, 204]),
                            st.integers(100, 599)))
    headers: list[tuple[str, str]] = []
    honest_first, honest_last = _honest_range(asked, size) if asked else (0, (size or 1) - 1)
    honest_len = honest_last - honest_first + 1
    cr = draw(st.one_of(
        st.none(),
        st.just((honest_first, honest_last, size)),
        st.tuples(st.integers(-2, 2), st.integers(-2, 2), st.integers(-2, 2)).map(
            lambda d: (honest_first + d[0], honest_last + d[1],
                       None if size is None else size + d[2])),
        st.tuples(NUMBERS, NUMBERS, NUMBERS),
        st.text(st.characters(max_codepoint=0xFF), max_size=30),
    ))
    if isinstance(cr, tuple):
        a, b, t = cr
        headers.append(("Content-Range", f"bytes {a}-{b}/{'*' if t is None else t}"))
    elif isinstance(cr, str):
        headers.append(("Content-Range", cr))
    cl = draw(st.one_of(st.none(), st.just(honest_len), st.just(size or 0),
                        st.integers(-5, 5).map(lambda d: honest_len + d), NUMBERS))
    if cl is not None:
        headers.append(("Content-Length", str(cl)))
        if draw(st.booleans()) and draw(st.booleans()):
            headers.append(("content-length", draw(NUMBERS)))  # a second, maybe different
    if draw(st.booleans()):
        headers.append(("Content-Encoding", draw(st.sampled_from(
            ["identity", "gzip", "br", "identity, gzip", "", "GZIP", "x"]))))
    if draw(st.booleans()) and draw(st.booleans()):
        headers.append(("Transfer-Encoding", draw(st.sampled_from(
            ["chunked", "gzip, chunked", "identity", "chunked, chunked", "Chunked"]))))
    if draw(st.booleans()) and draw(st.booleans()):
        headers.append(("Content-Type", draw(st.sampled_from(
            ["multipart/byteranges; boundary=x", "application/octet-stream",
             "MULTIPART/BYTERANGES"]))))
    return asked, size, status, headers, draw(st.booleans())


MUTATIONS = ["start+1", "start-1", "end+1", "end-1", "total+1", "total-1", "total*",
             "no-range", "range-garbage", "length+1", "length-1", "length+4096",
             "length-garbage", "length-twice", "length-twice-differs", "no-length", "gzip",
             "identity", "chunked", "chunked-gzip", "multipart", "status-200", "status-206",
             "status-416", "whole-ok"]


@st.composite
def near_honest_responses(draw: st.DrawFn) -> tuple:
    """An honest answer with up to two things changed: the lies that look almost right."""
    size = draw(st.one_of(st.none(), st.integers(1, 1 << 40)))
    asked = draw(asks(size))
    status = 206 if asked is not None else 200
    first, last = _honest_range(asked, size) if asked else (0, (size or 1000) - 1)
    total: int | str | None = size
    length: int | str | None = last - first + 1
    extra: list[tuple[str, str]] = []
    has_range = status == 206
    whole_ok = False
    for m in draw(st.lists(st.sampled_from(MUTATIONS), max_size=2)):
        if m.startswith("start"):
            first += 1 if m.endswith("+1") else -1
        elif m.startswith("end"):
            last += 1 if m.endswith("+1") else -1
        elif m == "total*":
            total = None
        elif m.startswith("total") and isinstance(total, int):
            total += 1 if m.endswith("+1") else -1
        elif m == "no-range":
            has_range = False
        elif m == "range-garbage":
            total = "x"
        elif m in ("length+1", "length-1", "length+4096"):
            if isinstance(length, int):
                length += int(m[6:])
        elif m == "length-garbage":
            length = "1 0"
        elif m == "length-twice":
            extra.append(("Content-Length", str(length)))
        elif m == "length-twice-differs":
            extra.append(("Content-Length", "0"))
        elif m == "no-length":
            length = None
        elif m in ("gzip", "identity"):
            extra.append(("Content-Encoding", m))
        elif m == "chunked":
            extra.append(("Transfer-Encoding", "chunked"))
        elif m == "chunked-gzip":
            extra.append(("Transfer-Encoding", "gzip, chunked"))
        elif m == "multipart":
            extra.append(("Content-Type", "multipart/byteranges; boundary=b"))
        elif m.startswith("status-"):
            status = int(m[7:])
            has_range = has_range or status == 206
        elif m == "whole-ok":
            whole_ok = True
    headers: list[tuple[str, str]] = []
    if has_range:
        shown_total = "*" if total is None else total
        headers.append(("Content-Range", f"bytes {first}-{last}/{shown_total}"))
    if length is not None:
        headers.append(("Content-Length", str(length)))
    headers += extra
    return asked, size, status, headers, whole_ok


def responses() -> st.SearchStrategy[tuple]:
    return st.one_of(random_responses(), near_honest_responses())


# -- the property ---------------------------------------------------------------------------


def _assert_maps_onto_ask(acc: Accepted, asked, size, status, headers, whole_ok) -> None:
    """``acc`` places the body exactly onto the asked bytes (or, for a usable 200, onto the
    whole file), and the headers that framed it say the same."""
    folded: dict[str, list[str]] = {}
    for k, v in headers:
        folded.setdefault(k.lower(), []).append(v)
    assert status in (200, 206)
    if status == 206:
        assert asked is not None and not acc.full
        first, last = asked
        assert acc.start == first
        if last is not None:
            assert acc.length == last - first + 1
        elif size is not None:
            assert acc.start + acc.length == size
        assert acc.length is not None and acc.length >= 1
    else:
        assert acc.full and acc.start == 0
        assert asked is None or whole_ok
        if size is not None:
            assert acc.length == size
    if acc.framed:
        assert len(folded["content-length"]) == 1
        assert folded["content-length"][0].strip() == str(acc.length)
    else:
        assert "content-length" not in folded
    for enc in folded.get("content-encoding", []):
        assert all(c.strip().lower() in ("", "identity") for c in enc.split(","))
    for te in folded.get("transfer-encoding", []):
        assert te.strip().lower() == "chunked" and "content-length" not in folded
    assert all("multipart" not in v.lower() for v in folded.get("content-type", []))
    if acc.total is not None and acc.length is not None:
        assert acc.start + acc.length <= acc.total
    if size is not None and acc.total is not None:
        assert acc.total == size


def _simulate_body(acc: Accepted, body: bytes, file_size: int) -> bytearray | None:
    """What a receiver following ``acc`` writes into a file of zeros: the body at
    ``acc.start``, refused (None) if longer than ``acc.length``."""
    if acc.length is not None and len(body) > acc.length:
        return None
    out = bytearray(file_size)
    end = acc.start + len(body)
    if end > file_size:
        return None
    out[acc.start:end] = body
    return out


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses())
@example(((4 * MiB, 8 * MiB - 1), 9 * MiB, 206,
          [("Content-Range", f"bytes {4 * MiB}-{8 * MiB - 1}/{9 * MiB}"),
           ("Content-Length", str(4 * MiB + 4096))], False))  # the reported case
def test_accepted_answers_map_exactly_onto_the_asked_bytes(case) -> None:
    asked, size, status, headers, whole_ok = case
    try:
        acc = check_response(asked, size, status, wire(headers), whole_ok=whole_ok)
    except BadResponse as exc:
        assert exc.reason and "\n" not in exc.reason
        assert_no_control_chars(exc.reason)
        assert len(exc.reason) < 400
        if isinstance(exc, RangeIgnored):
            assert status == 200 and asked is not None and not whole_ok
        return
    _assert_maps_onto_ask(acc, asked, size, status, headers, whole_ok)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_honest_answers_are_accepted_and_their_bytes_land_in_place(data) -> None:
    size = data.draw(st.integers(1, 4096))
    content = bytes(data.draw(st.binary(min_size=size, max_size=size)))
    asked = data.draw(asks(size))
    framed = data.draw(st.booleans())
    if asked is None:
        status, headers, body = 200, [], content
    else:
        first, last = _honest_range(asked, size)
        body = content[first:last + 1]
        status = 206
        headers = [("Content-Range", f"bytes {first}-{last}/{size}")]
    if framed:
        headers.append(("Content-Length", str(len(body))))
    else:
        headers.append(("Transfer-Encoding", "chunked"))
    acc = check_response(asked, size, status, headers)
    _assert_maps_onto_ask(acc, asked, size, status, headers, False)
    written = _simulate_body(acc, body, size)
    assert written is not None
    assert written[acc.start:acc.start + len(body)] == content[acc.start:acc.start + len(body)]
    # One byte more than asked is never let through.
    assert _simulate_body(acc, body + b"x", size + 1) is None


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1 << 40), st.integers(0, 1 << 40), st.integers(1, 1 << 41))
def test_content_range_parsing_is_consistent(first, last, total) -> None:
    parsed = parse_content_range(f"bytes {first}-{last}/{total}")
    if last < first or last >= total:
        assert parsed is None
    else:
        assert parsed == (first, last, total)


# -- the lies, one by one ------------------------------------------------------------------

ASK = (4 * MiB, 8 * MiB - 1)
SIZE = 9 * MiB
GOOD_CR = f"bytes {ASK[0]}-{ASK[1]}/{SIZE}"
N = ASK[1] - ASK[0] + 1


@pytest.mark.parametrize(("status", "headers", "needle"), [
    (206, {"Content-Range": GOOD_CR, "Content-Length": str(N + 4096)},
     "4096 bytes more than asked"),
    (206, {"Content-Range": GOOD_CR, "Content-Length": str(N - 1)}, "1 bytes fewer"),
    (206, {"Content-Range": f"bytes {ASK[0] + 1}-{ASK[1]}/{SIZE}"}, "Content-Range"),
    (206, {"Content-Range": f"bytes {ASK[0]}-{ASK[1] - 1}/{SIZE}"}, "Content-Range"),
    (206, {"Content-Range": f"bytes {ASK[0]}-{ASK[1]}/{SIZE + 1}"}, "total"),
    (206, {"Content-Range": f"bytes {ASK[0]}-{ASK[1]}/{ASK[1]}"}, "Content-Range"),
    (206, {}, "no Content-Range"),
    (206, {"Content-Range": "bytes ²-³/9"}, "Content-Range"),
    (206, {"Content-Range": "bytes 4194304-8388607/9437184, bytes 0-1/9437184"},
     "Content-Range"),
    (206, {"Content-Type": "multipart/byteranges; boundary=THIS"}, "multipart"),
    (206, {"Content-Range": GOOD_CR, "Content-Encoding": "gzip"}, "gzip"),
    (206, {"Content-Range": GOOD_CR, "Transfer-Encoding": "chunked",
           "Content-Length": str(N)}, "both"),
    (206, {"Content-Range": GOOD_CR, "Transfer-Encoding": "gzip, chunked"}, "Transfer"),
    (206, {"Content-Range": GOOD_CR, "Content-Length": "\x1b]0;pwned\x07"}, "Content-Length"),
    (200, {"Content-Length": str(N)}, "HTTP 200"),
    (416, {"Content-Range": f"bytes */{SIZE}"}, "416"),
    (204, {}, "HTTP 204"),
])
def test_each_lie_is_refused_with_a_clean_reason(status, headers, needle) -> None:
    with pytest.raises(BadResponse) as info:
        check_response(ASK, SIZE, status, wire(headers))
    reason = info.value.reason
    assert needle.lower() in reason.lower(), reason
    assert reason.endswith(f"for bytes {ASK[0]}-{ASK[1]}")
    assert_no_control_chars(reason)


def test_a_200_to_a_ranged_request_is_only_usable_for_a_whole_single_piece() -> None:
    full = {"Content-Length": str(SIZE)}
    with pytest.raises(RangeIgnored):
        check_response((0, MiB - 1), SIZE, 200, full)
    acc = check_response((0, None), SIZE, 200, full, whole_ok=True)
    assert (acc.start, acc.length, acc.full, acc.framed) == (0, SIZE, True, True)
    with pytest.raises(BadResponse):  # not even the whole file
        check_response((0, None), SIZE, 200, {"Content-Length": str(SIZE + 1)}, whole_ok=True)


def test_numbers_are_parsed_strictly() -> None:
    assert parse_length("123") == 123
    assert parse_length(" 7 ") == 7
    for bad in ("²", "٣", "+1", "-1", "1e3", "", "9" * 19, "5, 5", None):
        assert parse_length(bad) is None


def test_a_too_long_body_names_the_asked_range() -> None:
    acc = check_response(ASK, SIZE, 206, {"Content-Range": GOOD_CR})
    assert not acc.framed and acc.length == N
    assert str(body_too_long(acc)) == f"more than the {N} bytes asked for bytes {ASK[0]}-{ASK[1]}"
