"""Human-readable numbers shared by the CLI and the dashboard (no Textual here)."""

from __future__ import annotations

import time

import humanize

from tui.terminal_text import clean_line


def size(n: int | None) -> str:
    """``4.4 GiB`` style sizes; ``-`` for unknown."""
    if n is None:
        return "-"
    return humanize.naturalsize(n, binary=True, format="%.1f")


def params(n: int | None) -> str:
    """``7.6B`` / ``135M`` style parameter counts."""
    if not n:
        return "-"
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div * 0.9995:  # 999.9M shows as 1.0B, not 1000M
            value = n / div
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)


def ago(ts: float | None, now: float | None = None) -> str:
    """``3 minutes ago`` style times; ``never`` when unset."""
    if not ts:
        return "never"
    return humanize.naturaltime((now if now is not None else time.time()) - ts)


def rate(bytes_per_s: float | None) -> str:
    """``35.2 MiB/s`` style transfer rates."""
    if not bytes_per_s:
        return "-"
    return humanize.naturalsize(bytes_per_s, binary=True, format="%.1f") + "/s"


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
