"""A yes/no modal."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from tui.terminal_text import clean


class ConfirmScreen(ModalScreen[bool]):
    """Ask a question; dismisses with True (yes) or False (no / Esc).

    ``details`` (e.g. the files a delete removes) are shown below it, scrollable when long.
    The question is shown literally (no markup; controls escaped, newlines kept): put names
    and paths in it through :func:`tui.terminal_text.clean_line` so each stays on one line.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(
        self, question: str, *, yes: str = "Yes", no: str = "No", details: list[str] | None = None
    ) -> None:
        super().__init__()
        self.question = question
        self.yes_label = yes
        self.no_label = no
        self.details = list(details or [])

    def compose(self) -> ComposeResult:
        classes = "dialog -with-details" if self.details else "dialog"
        with Vertical(id="confirm-dialog", classes=classes):
            yield Static(clean(self.question), id="confirm-question", markup=False)
            if self.details:
                with VerticalScroll(id="confirm-details"):
                    yield Static("\n".join(self.details), markup=False)
            with Horizontal(id="confirm-buttons"):
                yield Button(self.yes_label, id="confirm-yes", variant="error")
                yield Button(self.no_label, id="confirm-no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    @on(Button.Pressed, "#confirm-yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#confirm-no")
    def _no(self) -> None:
        self.dismiss(False)

    def action_answer(self, answer: bool) -> None:
        """Dismiss with ``answer``."""
        self.dismiss(answer)
