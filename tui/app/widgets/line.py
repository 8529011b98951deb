"""A one-line text widget that redraws only when its text changes."""

from __future__ import annotations

from textual.widgets import Static

from tui.terminal_text import clean_line


class Line(Static):
    """One line of plain text (no markup, control characters and newlines shown escaped) at a
    fixed height of 1.

    :meth:`set` skips unchanged text and never asks for a layout pass, so a panel updated
    every second (or on every progress tick) repaints just the lines that changed.
    """

    DEFAULT_CSS = """
    Line {
        height: 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, text: str = "", *, id: str | None = None, classes: str | None = None):
        super().__init__(clean_line(text), id=id, classes=classes, markup=False)
        self._text = text

    @property
    def text(self) -> str:
        """The text shown."""
        return self._text

    def set(self, text: str) -> None:
        """Show ``text`` (no-op when unchanged; no layout pass)."""
        if text != self._text:
            self._text = text
            self.update(clean_line(text), layout=False)
