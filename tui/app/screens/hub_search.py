"""The Hub search modal: GGUF repos matching a query; picking one opens the add modal."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from tui.app import wiring
from tui.app.screens.add_model import one_line
from tui.terminal_text import clean_line


def format_count(n: int) -> str:
    """``1.2k``, ``3.4M``."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 1_000:
        return f"{n / 1_000:.1f}k"
    return str(n)


class HubSearchScreen(ModalScreen[str | None]):
    """Type a query, Enter searches (in a thread); Enter on a result dismisses with its repo."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    class Results(Message):
        """Search results arrived."""

        def __init__(self, query: str, results: list[Any]) -> None:
            super().__init__()
            self.query = query
            self.results = results

    class Failed(Message):
        """The search failed (one line)."""

        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    def compose(self) -> ComposeResult:
        with Vertical(id="hub-dialog", classes="dialog"):
            yield Static("Search the Hub for GGUF models", id="hub-title")
            yield Input(placeholder="e.g. qwen 7b (Enter searches)", id="hub-query")
            table: DataTable[str] = DataTable(id="hub-results", cursor_type="row")
            table.add_column("Repo", key="repo", width=44)
            table.add_column("Downloads", key="downloads", width=9)
            table.add_column("Likes", key="likes", width=6)
            yield table
            yield Static("", id="hub-status", markup=False)
            yield Static("Enter on a result to add it | Esc cancels", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#hub-query", Input).focus()

    @on(Input.Submitted, "#hub-query")
    def _search(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#hub-status", Static).update("Searching…")
        self.query_one("#hub-results", DataTable).loading = True
        self._run_search(event.value)

    @work(thread=True, exclusive=True, group="hub-search", exit_on_error=False)
    def _run_search(self, query: str) -> None:
        try:
            results = wiring.search_hub(query)
        except Exception as exc:  # shown inline
            self.post_message(self.Failed(one_line(exc)))
            return
        self.post_message(self.Results(query, results))

    @on(Results)
    def _results(self, message: Results) -> None:
        table = self.query_one("#hub-results", DataTable)
        table.loading = False
        table.clear()
        for r in message.results:
            # a str cell would be parsed as markup: names from the Hub go in as plain Text
            table.add_row(Text(clean_line(r.repo)), format_count(r.downloads),
                          format_count(r.likes), key=r.repo)
        n = len(message.results)
        self.query_one("#hub-status", Static).update(
            f"{n} repo{'s' if n != 1 else ''}" if n
            else f"nothing found for {clean_line(repr(message.query))}"
        )
        if n:
            table.focus()

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        self.query_one("#hub-results", DataTable).loading = False
        self.query_one("#hub-status", Static).update(clean_line(message.error))

    @on(DataTable.RowSelected, "#hub-results")
    def _picked(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.dismiss(str(event.row_key.value))
