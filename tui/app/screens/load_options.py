"""The "Load with…" modal: context length, GPU layers, threads and parallel answers."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from tui.chat.options import (
    MAX_CONTEXT,
    MIN_CONTEXT,
    OptionError,
    field_values,
    parse_load_options,
)
from tui.runtime.types import LoadOptions
from tui.terminal_text import clean_line


def _fields(parallel_default: int | None) -> tuple[tuple[str, str, str], ...]:
    """(field, label, hint): the modal's rows, in Tab order."""
    parallel = f"blank = {parallel_default}" if parallel_default else "blank = setting"
    return (
        ("context_length", "Context", f"{MIN_CONTEXT} to {MAX_CONTEXT:,}, blank = model"),
        ("gpu_layers", "GPU layers", "auto, all or N (0 = CPU)"),
        ("threads", "Threads", "blank = physical cores"),
        ("parallel", "Parallel", parallel),
    )


class LoadOptionsScreen(ModalScreen[LoadOptions | None]):
    """Edit how a model is loaded; dismisses with the :class:`LoadOptions` (Enter in any field
    or ctrl+s) or None (Esc). A bad value is named in a one-line error and the modal stays
    open. The App remembers the options for that model and loads it with them."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "save", "Save and load"),
        Binding("ctrl+r", "defaults", "Defaults"),
        Binding("tab", "app.focus_next", "Next field", show=False, priority=True),
        Binding("shift+tab", "app.focus_previous", "Previous field", show=False,
                priority=True),
    ]
    AUTO_FOCUS = "#load-context-length"

    def __init__(self, name: str, options: LoadOptions | None = None,
                 parallel_default: int | None = None) -> None:
        super().__init__()
        self.model_name = name
        self.options = options
        self.fields = _fields(parallel_default)

    def compose(self) -> ComposeResult:
        values = field_values(self.options)
        with Vertical(id="load-dialog", classes="dialog"):
            yield Static(f"Load {clean_line(self.model_name)} with", id="load-title",
                         markup=False)
            for name, label, hint in self.fields:
                with Horizontal(classes="params-row"):
                    yield Label(label, classes="params-label")
                    yield Input(values[name], id=f"load-{name.replace('_', '-')}",
                                classes="params-input load-input", compact=True)
                    yield Label(hint, classes="load-hint")
            yield Static("", id="load-error", markup=False)
            yield Static(
                "Tab: next field | Enter or ctrl+s: save and load | Esc: cancel\n"
                "ctrl+r: defaults | remembered for this model",
                classes="dialog-hint", markup=False,
            )

    def field(self, name: str) -> Input:
        """The input of option ``name`` (``context_length``, ``gpu_layers`` …)."""
        return self.query_one(f"#load-{name.replace('_', '-')}", Input)

    def values(self) -> dict[str, str]:
        """The fields' current text."""
        return {name: self.field(name).value for name, _, _ in self.fields}

    def show_error(self, text: str) -> None:
        """One line under the fields (blank clears it)."""
        self.query_one("#load-error", Static).update(text)

    @on(Input.Submitted, ".load-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    @on(Input.Changed, ".load-input")
    def _changed(self) -> None:
        self.show_error("")

    def action_save(self) -> None:
        """Validate and dismiss with the options; on a bad value, say what is allowed."""
        try:
            options = parse_load_options(self.values())
        except OptionError as exc:
            self.show_error(str(exc))
            self.field(exc.field).focus()
            return
        self.dismiss(options)

    def action_defaults(self) -> None:
        """Fill every field with the defaults (saved only with Enter / ctrl+s)."""
        for name, value in field_values(None).items():
            self.field(name).value = value
