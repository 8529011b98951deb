"""The help screen: every binding, generated from the widgets' ``BINDINGS``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingsMap, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static


def help_sections(app: App[object]) -> list[tuple[str, Sequence[BindingType]]]:
    """The binding groups the help screen lists, read from the classes' ``BINDINGS``."""
    from tui.app.screens.chat_list import ChatListScreen
    from tui.app.screens.confirm import ConfirmScreen
    from tui.app.screens.gen_params import GenParamsScreen
    from tui.app.screens.job_detail import JobDetailScreen
    from tui.app.screens.load_options import LoadOptionsScreen
    from tui.app.widgets import DownloadsPanel, ModelTable, PromptConsole, PromptInput
    from tui.app.widgets.model_browser import FilterInput

    palette = Binding(app.COMMAND_PALETTE_BINDING, "command_palette", "Command palette")
    return [
        ("Global", [*type(app).BINDINGS, palette, *App.BINDINGS]),
        ("Model table", ModelTable.BINDINGS),
        ("Filter", FilterInput.BINDINGS),
        ("Downloads", DownloadsPanel.BINDINGS),
        ("Download details", JobDetailScreen.BINDINGS),
        ("Console", [*PromptConsole.BINDINGS, *PromptInput.BINDINGS]),
        ("Dialogs", ConfirmScreen.BINDINGS),
        ("Parameters", GenParamsScreen.BINDINGS),
        ("Load with", LoadOptionsScreen.BINDINGS),
        ("Saved chats", ChatListScreen.BINDINGS),
    ]


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


class HelpTable(DataTable[str]):
    """The bindings table: Home/End go to the first/last row (a row cursor has no columns to
    move along), PageUp/PageDown a page."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "scroll_top", "Top", show=False),
        Binding("end", "scroll_bottom", "Bottom", show=False),
    ]


class HelpScreen(ModalScreen[None]):
    """A table of all bindings; scrolls with the arrows, PageUp/PageDown and Home/End (and
    says so); Esc, q or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, rows: Sequence[tuple[str, str, str]], *, ascii: bool = False) -> None:
        super().__init__()
        self.rows = rows
        self.ascii = ascii

    @property
    def hint(self) -> str:
        """What the keys do here."""
        arrows, sep = ("up/down", "|") if self.ascii else ("↑↓", "·")
        return f"{arrows} PgUp PgDn Home End scroll {sep} Esc closes {sep} ctrl+p all commands"

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog", classes="dialog"):
            yield Static("ModelDeck keys", id="help-title")
            table: HelpTable = HelpTable(id="help-table", cursor_type="row")
            table.add_columns("Where", "Key", "Action")
            table.add_rows(self.rows)
            yield table
            yield Static(self.hint, id="help-hint", classes="dialog-hint", markup=False)
