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
    A ``destructive`` question (it deletes data) is never answered yes by a letter: a word
    typed on the table ("deploy") must not delete a model with its ``y``. Yes then takes a
    deliberate move to the button (←/→ or Tab) and Enter, or a click; ``n``/Esc still say no.
    The question is shown literally (no markup; controls escaped, newlines kept): put names
    and paths in it through :func:`tui.terminal_text.clean_line` so each stays on one line.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
        Binding("left,right", "switch", "Other button", show=False),
    ]

    def __init__(
        self,
        question: str,
        *,
        yes: str = "Yes",
        no: str = "No",
        details: list[str] | None = None,
        destructive: bool = False,
    ) -> None:
        super().__init__()
        self.question = question
        self.destructive = destructive
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
            if self.destructive:
                arrows = "Left/Right" if self.app.has_class("-ascii") else "←/→"
                yield Static(f"{arrows} then Enter: {self.yes_label} · n or Esc: {self.no_label}",
                             id="confirm-hint", markup=False)

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    @on(Button.Pressed, "#confirm-yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#confirm-no")
    def _no(self) -> None:
        self.dismiss(False)

    def action_answer(self, answer: bool) -> None:
        """Dismiss with ``answer`` (a destructive question ignores a typed yes)."""
        if answer and self.destructive:
            return
        self.dismiss(answer)

    def action_switch(self) -> None:
        """Move the focus to the other button."""
        yes, no = self.query_one("#confirm-yes", Button), self.query_one("#confirm-no", Button)
        (no if yes.has_focus else yes).focus()
