"""The prompt console: model label, append-only output log, metrics line, prompt input."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Log, Static

from tui.app.views import MetricsView, metrics_text


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
    :class:`SystemPromptRequested`.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel answer / back to table"),
        Binding("f2", "edit_system_prompt", "System prompt"),
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
        self.system_prompt = ""
        self.streaming = False
        self.border_title = "Console"
        self._model = Static("Model: none loaded (ctrl+o)", id="console-model", markup=False)
        self._output = Log(id="console-output", max_lines=5000)
        self._metrics = Static("", id="console-metrics", markup=False)
        self._input = PromptInput(placeholder="Prompt (Enter to send)", id="console-input")
        self._input.cursor_blink = cursor_blink

    def compose(self) -> ComposeResult:
        yield self._model
        yield self._output
        yield self._metrics
        yield self._input

    @property
    def output(self) -> Log:
        """The answer log."""
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
        self._model.update(f"Model: {name}" if name else "Model: none loaded (ctrl+o)")

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
        self._metrics.update(f"error: {error}" if error else text)

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
