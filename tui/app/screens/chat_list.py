"""The saved conversations with a model, newest first: Enter reopens one, ``d`` deletes it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from tui import formatting
from tui.terminal_text import clean_line


def chat_label(chat: Any, now: float) -> Text:
    """``title  ·  12 messages, 3h ago`` as plain text (the title is the user's, escaped)."""
    title = clean_line(chat.title) or "(untitled)"
    count = f"{chat.messages} message" + ("s" if chat.messages != 1 else "")
    when = formatting.ago(chat.updated_at, now) if chat.updated_at else ""
    return Text(f"{title}  ({count}{', ' + when if when else ''})")


class ChatListScreen(ModalScreen[str | None]):
    """Pick a saved conversation; dismisses with its id, or None (Esc)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("d,delete", "delete", "Delete chat"),
    ]

    def __init__(self, model_name: str, chats: Sequence[Any],
                 store: Callable[[], Any] | None = None, now: Callable[[], float] | None = None
                 ) -> None:
        super().__init__()
        self.model_name = model_name
        self.chats = list(chats)
        self._store = store
        self._now = now

    def compose(self) -> ComposeResult:
        import time

        now = (self._now or time.time)()
        with Vertical(id="chats-dialog", classes="dialog"):
            yield Static(f"Chats with {clean_line(self.model_name)}", id="chats-title",
                         markup=False)
            yield OptionList(*(Option(chat_label(c, now), id=c.id) for c in self.chats),
                             id="chats-list")
            yield Static("Enter: open | d: delete | Esc: close", classes="dialog-hint",
                         markup=False)

    @property
    def option_list(self) -> OptionList:
        """The list of chats."""
        return self.query_one("#chats-list", OptionList)

    @on(OptionList.OptionSelected, "#chats-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_delete(self) -> None:
        """Delete the highlighted chat (asks first)."""
        from tui.app.screens.confirm import ConfirmScreen

        options = self.option_list
        index = options.highlighted
        if index is None or self._store is None:
            return
        chat_id = options.get_option_at_index(index).id
        chat = next((c for c in self.chats if c.id == chat_id), None)
        if chat is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(chat.id)

        title = clean_line(chat.title) or "(untitled)"
        self.app.push_screen(ConfirmScreen(f"Delete the chat {title}?", yes="Delete",
                                           no="Keep"), answered)

    @work(thread=True, exit_on_error=False)
    def _delete(self, chat_id: str) -> None:
        assert self._store is not None
        self._store().delete(chat_id)
        self.app.call_from_thread(self._deleted, chat_id)

    def _deleted(self, chat_id: str) -> None:
        self.chats = [c for c in self.chats if c.id != chat_id]
        options = self.option_list
        options.remove_option(chat_id)
        if not self.chats:
            self.dismiss(None)
