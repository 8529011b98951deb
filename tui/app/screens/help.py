"""The help screen: every binding, generated from the widgets' ``BINDINGS``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingsMap, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static


def binding_rows(
    app: App[object], sections: Sequence[tuple[str, Iterable[BindingType]]]
) -> list[tuple[str, str, str]]:
    """``(where, key, description)`` for every binding of every section (system ones skipped)."""
    rows: list[tuple[str, str, str]] = []
    for where, bindings in sections:
        seen: set[str] = set()
        for _key, binding in BindingsMap(bindings):
            if binding.system or binding.action in seen:
                continue
            seen.add(binding.action)
            keys = [b for b in BindingsMap(bindings) if b[1].action == binding.action]
            display = ", ".join(app.get_key_display(Binding(k, b.action)) for k, b in keys)
            rows.append((where, display, binding.description or binding.action))
    return rows


class HelpScreen(ModalScreen[None]):
    """A table of all bindings; Esc, q or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, rows: Sequence[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog", classes="dialog"):
            yield Static("ModelDeck keys", id="help-title")
            table: DataTable[str] = DataTable(id="help-table", cursor_type="row")
            table.add_columns("Where", "Key", "Action")
            table.add_rows(self.rows)
            yield table
            yield Static("Esc to close | ctrl+p for all commands", classes="dialog-hint")
