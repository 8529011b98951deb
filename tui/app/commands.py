"""Command palette provider: load/download models, toggle panels, switch theme."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.markup import escape

from tui.terminal_text import clean_line

if TYPE_CHECKING:
    from collections.abc import Callable

    from tui.app.app import ModelDeckApp

MAX_HITS = 200


def literal(text: str) -> str:
    """``text`` (a model name, a path) for a place that parses Textual markup, such as a
    command-palette label: one line, controls escaped, ``[bold]`` shown as typed."""
    return escape(clean_line(text))


class ModelDeckCommands(Provider):
    """Every dashboard command; built once per palette opening from the App's state."""

    async def startup(self) -> None:
        """Collect the commands (rows are read on the event loop; no I/O)."""
        app = cast("ModelDeckApp", self.app)
        self._commands: list[tuple[str, Callable[[], object], str]] = app.palette_commands()

    async def discover(self) -> Hits:
        """The panel and theme commands (not the per-model ones) when nothing is typed."""
        for text, callback, help_text in self._commands:
            if not text.startswith(("Load ", "Download ")):
                yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        """Fuzzy-match every command."""
        matcher = self.matcher(query)
        count = 0
        for text, callback, help_text in self._commands:
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(callback), help=help_text)
                count += 1
                if count >= MAX_HITS:
                    return
