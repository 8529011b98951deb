"""One vocabulary for numbers shown to people, shared by the CLI and the dashboard (no
Textual here).

Sizes are binary (1 GiB = 2**30 bytes, as ``free -h`` and ``nvidia-smi`` count RAM and VRAM)
and read the same everywhere: one decimal below 10, whole numbers from 10 to 999, then the
next unit (``512 B``, ``4.6 GiB``, ``182 MiB``). :func:`size` is the text form; the
dashboard's narrow cells use :func:`size_compact`, the same digits with ``free -h``'s unit
letters (``4.6Gi``, ``182Mi``). Rates are sizes per second, durations ``42s`` / ``5m20s`` /
``1h02m``, past times ``5m ago``.
"""

from __future__ import annotations

import math
import time

from tui.terminal_text import clean_line

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
COMPACT_UNITS = ("B", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
UNKNOWN = "-"


def _scaled(n: float) -> tuple[str, int] | None:
    """``n`` bytes as (digits, unit index); None when ``n`` is not a finite number."""
    try:
        value = float(n)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(value):
        return None
    sign, value = ("-" if value < 0 else ""), abs(value)
    unit = 0
    while value >= 999.5 and unit < len(UNITS) - 1:  # 999.5 would round to "1000"
        value /= 1024
        unit += 1
    digits = f"{value:.1f}" if unit and value < 9.95 else f"{value:.0f}"
    return sign + digits, unit


def size(n: float | None) -> str:
    """``512 B``, ``4.6 GiB``, ``182 MiB``; ``-`` when unknown."""
    scaled = _scaled(n) if n is not None else None
    if scaled is None:
        return UNKNOWN
    return f"{scaled[0]} {UNITS[scaled[1]]}"


def size_compact(n: float | None) -> str:
    """:func:`size` for narrow cells, at most 5 characters below 1000 EiB: ``512B``,
    ``4.6Gi``, ``182Mi`` (the unit letters ``free -h`` prints); ``-`` when unknown."""
    scaled = _scaled(n) if n is not None else None
    if scaled is None:
        return UNKNOWN
    return f"{scaled[0]}{COMPACT_UNITS[scaled[1]]}"


def rate(bytes_per_s: float | None) -> str:
    """``35 MiB/s``; ``-`` when unknown."""
    text = size(bytes_per_s)
    return text if text == UNKNOWN else f"{text}/s"


def rate_compact(bytes_per_s: float | None) -> str:
    """``35Mi/s``; ``-`` when unknown."""
    text = size_compact(bytes_per_s)
    return text if text == UNKNOWN else f"{text}/s"


def duration(seconds: float | None) -> str:
    """``42s``, ``5m20s``, ``1h02m`` (ETAs, waits); ``-`` when unknown or negative."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return UNKNOWN
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def ago(ts: float | None, now: float | None = None) -> str:
    """``now`` (under a minute), ``5m ago``, ``3h ago``, ``12d ago``; ``never`` when unset."""
    if not ts:
        return "never"
    delta = max(0.0, (now if now is not None else time.time()) - ts)
    if delta < 60:
        return "now"
    if delta < 3600:
        return f"{int(delta // 60)}m ago"
    if delta < 86400:
        return f"{int(delta // 3600)}h ago"
    return f"{int(delta // 86400)}d ago"


def params(n: int | None) -> str:
    """``7.6B`` / ``135M`` style parameter counts."""
    if not n:
        return "-"
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div * 0.9995:  # 999.9M shows as 1.0B, not 1000M
            value = n / div
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain aligned text table (pipe-friendly: no colours, no box drawing).

    Cells are untrusted (names and paths from files): each is shown as one line with control
    characters escaped (:func:`tui.terminal_text.clean_line`).
    """
    headers = [clean_line(h) for h in headers]
    rows = [[clean_line(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return "\n".join(lines)
