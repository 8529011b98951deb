"""The prompt console: model label, append-only output log, metrics line, prompt input."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Self

from rich.cells import get_character_cell_size
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Log, Static

from tui.app.views import MetricsView, metrics_text
from tui.terminal_text import clean, clean_line


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


class AnswerLog(Log):
    """A ``Log`` that word-wraps text as it arrives, so it never scrolls sideways.

    A write re-wraps only the last line (a streamed token costs the same however long the
    answer is); the whole log is re-wrapped when the width changes. Room for the vertical
    scrollbar is kept free, so lines need no re-wrap when it appears.
    """

    DEFAULT_CSS = """
    AnswerLog {
        overflow-x: hidden;
    }
    """

    def __init__(
        self,
        *,
        max_lines: int | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(max_lines=max_lines, id=id, classes=classes)
        # The text as written, to re-wrap: finished lines, and the pieces of the last one.
        self._source: list[str] = []
        self._partial: list[str] = []
        self._wrap_width = 0  # 0: not laid out yet, written unwrapped until the first resize

    @property
    def wrap_width(self) -> int:
        """The width lines are wrapped at (0 before the first layout)."""
        return self._wrap_width

    def write(self, data: str, scroll_end: bool | None = None) -> Self:
        """Append text; only the last line is redrawn. Model text is untrusted: controls and
        escape sequences are shown escaped (per character, so a sequence split across writes
        is caught too)."""
        if not data:
            return super().write(data, scroll_end)
        data = clean(data.replace("\r\n", "\n").replace("\r", "\n").expandtabs())
        self._remember(data)
        if self._wrap_width < 1:
            return super().write(data, scroll_end)
        tail = self._lines[-1] if self._lines else ""
        if self._lines:
            self._lines[-1] = ""  # re-written below, wrapped together with the new text
        wrapped = "\n".join(
            "\n".join(wrap_line(line, self._wrap_width)) for line in (tail + data).split("\n")
        )
        return super().write(wrapped, scroll_end)

    def write_lines(self, lines: Iterable[str], scroll_end: bool | None = None) -> Self:
        """Write each string on a line of its own."""
        text = "".join(f"{line}\n" for line in lines)
        if self._lines and self._lines[-1]:
            text = "\n" + text
        return self.write(text, scroll_end)

    def clear(self) -> Self:
        """Clear the log."""
        self._source, self._partial = [], []
        return super().clear()

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
        super().clear()
        super().write("\n".join("\n".join(wrap_line(line, width)) for line in lines))


class PromptInput(Input):
    """An ``Input`` with history on up/down."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "history(-1)", "Older prompt", show=False),
        Binding("down", "history(1)", "Newer prompt", show=False),
    ]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.history: list[str] = []
        self._cursor = 0

    def remember(self, text: str) -> None:
        """Add a submitted prompt to the history (no consecutive duplicates)."""
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self._cursor = len(self.history)

    def action_history(self, delta: int) -> None:
        """Step through earlier prompts; past the newest is an empty line."""
        if not self.history:
            return
        self._cursor = max(0, min(len(self.history), self._cursor + delta))
        self.value = self.history[self._cursor] if self._cursor < len(self.history) else ""
        self.cursor_position = len(self.value)


class PromptConsole(Vertical):
    """Type a prompt, watch the answer stream in.

    The App feeds it with :meth:`start_answer`, :meth:`append_tokens` and
    :meth:`finish_answer`; it posts :class:`Submitted`, :class:`CancelRequested` and
    :class:`SystemPromptRequested`. F3 opens the App's generation-parameters modal.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel answer / back to table"),
        Binding("f2", "edit_system_prompt", "System prompt"),
        Binding("f3", "app.edit_gen_params", "Parameters"),
    ]

    class _ConsoleMessage(Message):
        def __init__(self, console: PromptConsole) -> None:
            super().__init__()
            self.console = console

        @property
        def control(self) -> PromptConsole:
            """The console that sent the message."""
            return self.console

    class Submitted(_ConsoleMessage):
        """A prompt to answer with the selected model."""

        def __init__(
            self, console: PromptConsole, prompt: str, system_prompt: str, model: str | None
        ) -> None:
            super().__init__(console)
            self.prompt = prompt
            self.system_prompt = system_prompt
            self.model = model

    class CancelRequested(_ConsoleMessage):
        """Esc while an answer streams."""

    class LeaveRequested(_ConsoleMessage):
        """Esc while idle: the App moves the focus back to the table."""

    class SystemPromptRequested(_ConsoleMessage):
        """The user wants to edit the system prompt (the App opens a modal)."""

        def __init__(self, console: PromptConsole, current: str) -> None:
            super().__init__(console)
            self.current = current

    def __init__(
        self,
        *,
        cursor_blink: bool = True,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.model_name: str | None = None
        self.params_text = ""  # the sampling parameters on the model line (blank: defaults)
        self.system_prompt = ""
        self.streaming = False
        self.border_title = "Console"
        self._model = Static("Model: none loaded (ctrl+o)", id="console-model", markup=False)
        self._output = AnswerLog(id="console-output", max_lines=5000)
        self._metrics = Static("", id="console-metrics", markup=False)
        self._input = PromptInput(placeholder="Prompt (Enter to send)", id="console-input")
        self._input.cursor_blink = cursor_blink

    def compose(self) -> ComposeResult:
        yield self._model
        yield self._output
        yield self._metrics
        yield self._input

    @property
    def output(self) -> AnswerLog:
        """The answer log (word-wrapped)."""
        return self._output

    @property
    def prompt_input(self) -> PromptInput:
        """The prompt line."""
        return self._input

    @property
    def metrics_line(self) -> Static:
        """The metrics line widget."""
        return self._metrics

    def set_model(self, name: str | None) -> None:
        """Show which model answers."""
        self.model_name = name
        self._show_model_line()

    def set_params_text(self, text: str) -> None:
        """Show the sampling parameters after the model (blank: nothing, runtime defaults)."""
        self.params_text = text
        self._show_model_line()

    def _show_model_line(self) -> None:
        name = self.model_name
        line = f"Model: {clean_line(name)}" if name else "Model: none loaded (ctrl+o)"
        self._model.update(f"{line} | {self.params_text}" if self.params_text else line)

    def set_system_prompt(self, text: str) -> None:
        """Replace the system prompt."""
        self.system_prompt = text

    # -- feed ------------------------------------------------------------------------------

    def start_answer(self, prompt: str | None = None) -> None:
        """Begin a new answer (echoes the prompt)."""
        self.streaming = True
        self.set_class(True, "-streaming")
        self._metrics.update("")
        if self._output.line_count and self._output.lines[-1] != "":
            self._output.write("\n")
        if prompt is not None:
            self._output.write(f"> {prompt}\n")

    def append_tokens(self, text: str) -> None:
        """Append generated text (only the last line is redrawn)."""
        self._output.write(text)

    def finish_answer(self, metrics: MetricsView, error: str | None = None) -> None:
        """End the answer and show its metrics (or the error)."""
        self.streaming = False
        self.set_class(False, "-streaming")
        self._output.write("\n")
        text = metrics_text(metrics)
        self._metrics.update(f"error: {clean_line(error)}" if error else text)

    # -- events ----------------------------------------------------------------------------

    @on(Input.Submitted, "#console-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        prompt = event.value.strip()
        if not prompt or self.streaming:
            return
        self._input.remember(prompt)
        self._input.value = ""
        self.post_message(self.Submitted(self, prompt, self.system_prompt, self.model_name))

    def action_cancel(self) -> None:
        """Ask the App to cancel the answer being streamed (or, idle, to leave the console)."""
        if self.streaming:
            self.post_message(self.CancelRequested(self))
        else:
            self.post_message(self.LeaveRequested(self))

    def action_edit_system_prompt(self) -> None:
        """Ask the App to open the system-prompt editor."""
        self.post_message(self.SystemPromptRequested(self, self.system_prompt))
