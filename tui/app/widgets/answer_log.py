"""The answer log: an append-only, word-wrapped text view on Textual's ``ScrollView`` (lines
wrapped to the width and re-wrapped on resize; the oldest dropped beyond ``max_lines``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Self

from rich.cells import cell_len, get_character_cell_size
from rich.segment import Segment
from textual import events
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.terminal_text import clean


def wrap_line(line: str, width: int) -> list[str]:
    """Split one line (no line breaks) into pieces of at most ``width`` cells.

    Breaks at the last space that fits (the space is dropped), else mid-word. A line that
    fits, and any line when ``width`` < 1, is returned whole.
    """
    if width < 1:
        return [line]
    pieces: list[str] = []
    while True:
        fit = _fitting_prefix(line, width)
        if fit == len(line):
            pieces.append(line)
            return pieces
        space = line.rfind(" ", 0, fit + 1)
        if space > 0:
            pieces.append(line[:space])
            line = line[space + 1 :]
        else:
            cut = max(fit, 1)  # a character wider than the line still moves on
            pieces.append(line[:cut])
            line = line[cut:]
            if not line:
                return pieces


def _fitting_prefix(line: str, width: int) -> int:
    """How many characters of ``line`` fit in ``width`` cells."""
    if line.isascii():
        return min(len(line), width)
    cells = 0
    for index, char in enumerate(line):
        cells += get_character_cell_size(char)
        if cells > width:
            return index
    return len(line)


class AnswerLog(ScrollView, can_focus=True):
    """An append-only log that word-wraps text as it arrives, so it never scrolls sideways.

    Its own line store drawn by :meth:`render_line` (Textual's public ``ScrollView`` API). A
    write re-wraps only the last line (a streamed token costs the same however long the
    answer is); the whole log is re-wrapped when the width changes. Room for the vertical
    scrollbar is kept free, so lines need no re-wrap when it appears. :attr:`lines` are the
    display lines, the last one ``""`` after a line break (as ``textual.widgets.Log``).
    """

    DEFAULT_CSS = """
    AnswerLog {
        background: $surface;
        color: $text;
        overflow-x: hidden;
        overflow-y: scroll;
        &:focus {
            background-tint: $foreground 5%;
        }
    }
    """

    def __init__(
        self,
        *,
        max_lines: int | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.max_lines = max_lines
        self.auto_scroll = True
        self._rows: list[str] = []  # display lines
        # The text as written, to re-wrap: finished lines, and the pieces of the last one.
        self._source: list[str] = []
        self._partial: list[str] = []
        self._wrap_width = 0  # 0: not laid out yet, written unwrapped until the first resize

    @property
    def wrap_width(self) -> int:
        """The width lines are wrapped at (0 before the first layout)."""
        return self._wrap_width

    @property
    def lines(self) -> Sequence[str]:
        """The display lines (read only)."""
        return self._rows

    @property
    def line_count(self) -> int:
        """Lines with text (a trailing empty line after a break is not counted)."""
        rows = self._rows
        return len(rows) - (1 if rows and rows[-1] == "" else 0)

    def write(self, data: str, scroll_end: bool | None = None) -> Self:
        """Append text; only the last line is redrawn. Model text is untrusted: controls and
        escape sequences are shown escaped (per character, so a sequence split across writes
        is caught too)."""
        if not data:
            return self
        data = clean(data.replace("\r\n", "\n").replace("\r", "\n").expandtabs())
        self._remember(data)
        rows = self._rows
        start = max(0, len(rows) - 1)
        tail = rows.pop() if rows else ""
        for line in (tail + data).split("\n"):
            rows.extend(wrap_line(line, self._wrap_width))
        pruned = self._prune()
        self._changed(0 if pruned else start, scroll_end)
        return self

    def write_lines(self, lines: Iterable[str], scroll_end: bool | None = None) -> Self:
        """Write each string on a line of its own."""
        text = "".join(f"{line}\n" for line in lines)
        if self._rows and self._rows[-1]:
            text = "\n" + text
        return self.write(text, scroll_end)

    def clear(self) -> Self:
        """Clear the log."""
        self._rows, self._source, self._partial = [], [], []
        self._changed(0, None)
        return self

    def render_line(self, y: int) -> Strip:
        """One screen line: the display line under it, cropped to the view."""
        scroll_x, scroll_y = self.scroll_offset
        style = self.rich_style
        width = self.size.width
        index = scroll_y + y
        if index >= len(self._rows):
            return Strip.blank(width, style)
        text = self._rows[index]
        strip = Strip([Segment(text, style)], cell_len(text))
        return strip.crop_extend(scroll_x, scroll_x + width, style)

    def _prune(self) -> bool:
        if self.max_lines is None or len(self._rows) <= self.max_lines:
            return False
        del self._rows[: len(self._rows) - self.max_lines]
        return True

    def _changed(self, start: int, scroll_end: bool | None) -> None:
        """Lines from ``start`` on changed: size, repaint, follow the end."""
        width = self._wrap_width or max((cell_len(r) for r in self._rows), default=0)
        self.virtual_size = Size(width, len(self._rows))
        if start == 0:
            self.refresh()
        else:
            self.refresh_lines(start, len(self._rows) - start)
        if scroll_end or (scroll_end is None and self.auto_scroll):
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def _remember(self, data: str) -> None:
        first, *rest = data.split("\n")
        self._partial.append(first)
        if rest:
            self._source.append("".join(self._partial))
            self._source.extend(rest[:-1])
            self._partial = [rest[-1]]
            if self.max_lines is not None and len(self._source) >= self.max_lines:
                del self._source[: len(self._source) - self.max_lines + 1]

    def on_resize(self, event: events.Resize) -> None:
        """Re-wrap everything at the new width."""
        width = self.content_size.width - self.styles.scrollbar_size_vertical
        if width < 1 or width == self._wrap_width:
            return
        self._wrap_width = width
        lines = [*self._source, "".join(self._partial)]
        self._partial = lines[-1:]
        if lines == [""]:
            lines = []  # nothing written yet: no lines at all (as ``Log``)
        self._rows = [piece for line in lines for piece in wrap_line(line, width)]
        self._prune()
        self._changed(0, None)
