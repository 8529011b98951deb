"""The prompt console: model label, append-only output log, metrics line, prompt input.

The console runs the chat itself: an async worker streams each answer from the runtime
straight into the log (batched per frame), a :class:`~tui.chat.ChatSession` per model holds the
conversation, trimmed to the model's context before each prompt, and a
:class:`~tui.chat.ChatStore` saves it as it goes. The App only says which model is loaded.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from rich.cells import cell_len, get_character_cell_size
from rich.segment import Segment
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Static

from tui.app.views import MetricsView, metrics_text
from tui.chat.session import ChatSession, answer_reserve
from tui.chat.session import Message as ChatMessage
from tui.errors import ModelDeckError
from tui.terminal_text import clean, clean_line

TOKEN_FLUSH_S = 1 / 30  # streamed text reaches the log at most this often


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


class AnswerLog(ScrollView, can_focus=True):
    """An append-only log that word-wraps text as it arrives, so it never scrolls sideways.

    Its own line store drawn by :meth:`render_line` (Textual's public ``ScrollView`` API). A
    write re-wraps only the last line (a streamed token costs the same however long the
    answer is); the whole log is re-wrapped when the width changes. Room for the vertical
    scrollbar is kept free, so lines need no re-wrap when it appears. :attr:`lines` are the
    display lines, the last one ``""`` after a line break (as ``textual.widgets.Log``).
    """

    DEFAULT_CSS = """
    AnswerLog {
        background: $surface;
        color: $text;
        overflow-x: hidden;
        overflow-y: scroll;
        &:focus {
            background-tint: $foreground 5%;
        }
    }
    """

    def __init__(
        self,
        *,
        max_lines: int | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.max_lines = max_lines
        self.auto_scroll = True
        self._rows: list[str] = []  # display lines
        # The text as written, to re-wrap: finished lines, and the pieces of the last one.
        self._source: list[str] = []
        self._partial: list[str] = []
        self._wrap_width = 0  # 0: not laid out yet, written unwrapped until the first resize

    @property
    def wrap_width(self) -> int:
        """The width lines are wrapped at (0 before the first layout)."""
        return self._wrap_width

    @property
    def lines(self) -> Sequence[str]:
        """The display lines (read only)."""
        return self._rows

    @property
    def line_count(self) -> int:
        """Lines with text (a trailing empty line after a break is not counted)."""
        rows = self._rows
        return len(rows) - (1 if rows and rows[-1] == "" else 0)

    def write(self, data: str, scroll_end: bool | None = None) -> Self:
        """Append text; only the last line is redrawn. Model text is untrusted: controls and
        escape sequences are shown escaped (per character, so a sequence split across writes
        is caught too)."""
        if not data:
            return self
        data = clean(data.replace("\r\n", "\n").replace("\r", "\n").expandtabs())
        self._remember(data)
        rows = self._rows
        start = max(0, len(rows) - 1)
        tail = rows.pop() if rows else ""
        for line in (tail + data).split("\n"):
            rows.extend(wrap_line(line, self._wrap_width))
        pruned = self._prune()
        self._changed(0 if pruned else start, scroll_end)
        return self

    def write_lines(self, lines: Iterable[str], scroll_end: bool | None = None) -> Self:
        """Write each string on a line of its own."""
        text = "".join(f"{line}\n" for line in lines)
        if self._rows and self._rows[-1]:
            text = "\n" + text
        return self.write(text, scroll_end)

    def clear(self) -> Self:
        """Clear the log."""
        self._rows, self._source, self._partial = [], [], []
        self._changed(0, None)
        return self

    def render_line(self, y: int) -> Strip:
        """One screen line: the display line under it, cropped to the view."""
        scroll_x, scroll_y = self.scroll_offset
        style = self.rich_style
        width = self.size.width
        index = scroll_y + y
        if index >= len(self._rows):
            return Strip.blank(width, style)
        text = self._rows[index]
        strip = Strip([Segment(text, style)], cell_len(text))
        return strip.crop_extend(scroll_x, scroll_x + width, style)

    def _prune(self) -> bool:
        if self.max_lines is None or len(self._rows) <= self.max_lines:
            return False
        del self._rows[: len(self._rows) - self.max_lines]
        return True

    def _changed(self, start: int, scroll_end: bool | None) -> None:
        """Lines from ``start`` on changed: size, repaint, follow the end."""
        width = self._wrap_width or max((cell_len(r) for r in self._rows), default=0)
        self.virtual_size = Size(width, len(self._rows))
        if start == 0:
            self.refresh()
        else:
            self.refresh_lines(start, len(self._rows) - start)
        if scroll_end or (scroll_end is None and self.auto_scroll):
            self.scroll_end(animate=False, immediate=True, x_axis=False)

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
        if lines == [""]:
            lines = []  # nothing written yet: no lines at all (as ``Log``)
        self._rows = [piece for line in lines for piece in wrap_line(line, width)]
        self._prune()
        self._changed(0, None)


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


@dataclass(eq=False)
class _Answer:
    """One answer being streamed: its conversation, prompt, runtime request id and text."""

    session: ChatSession
    prompt: str
    request_id: str = field(default_factory=lambda: f"console-{uuid.uuid4().hex}")
    parts: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # not in the log yet
    ended: bool = False


class PromptConsole(Vertical):
    """Type a prompt, watch the answer stream in; ``ctrl+n`` new chat, ``ctrl+l`` clear.

    ``runtime`` returns the :class:`~tui.runtime.service.RuntimeService`, ``chats`` the
    :class:`~tui.chat.ChatStore` (None: nothing saved), ``params`` the generation parameters
    for the next answer (None: defaults); all three are asked when needed. The App calls
    :meth:`use_model` when a model is loaded or unloaded. :meth:`start_answer`,
    :meth:`append_tokens` and :meth:`finish_answer` draw into the log. Posts
    :class:`AnswerDone`, :class:`LeaveRequested` and :class:`SystemPromptRequested`; F3 opens
    the App's generation-parameters modal.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel answer / leave"),
        Binding("ctrl+n", "new_chat", "New chat"),
        Binding("ctrl+l", "clear_chat", "Clear chat", show=False),
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

    class AnswerDone(_ConsoleMessage):
        """An answer finished with its metrics (the App shows the speed in the table)."""

        def __init__(self, console: PromptConsole, model_id: str, metrics: Any) -> None:
            super().__init__(console)
            self.model_id = model_id
            self.metrics = metrics

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
        runtime: Callable[[], Any] | None = None,
        chats: Callable[[], Any] | None = None,
        params: Callable[[], Any] | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.model_name: str | None = None
        self.model_id: str | None = None  # the loaded model that answers (None: none)
        self.load_text = ""  # the load options on the model line (blank: defaults)
        self.params_text = ""  # the sampling parameters on the model line (blank: defaults)
        self.system_prompt = ""
        self.streaming = False
        self.border_title = "Console"
        self._runtime = runtime
        self._chats = chats
        self._params = params or (lambda: None)
        self._sessions: dict[str, ChatSession] = {}  # the open conversation of each model
        self._answer: _Answer | None = None
        self._flush_timer: Any = None
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

    @property
    def session(self) -> ChatSession | None:
        """The conversation with the loaded model (None: no model, or no prompt yet)."""
        return self._sessions.get(self.model_id) if self.model_id else None

    def set_model(self, name: str | None) -> None:
        """Show ``name`` on the model line (None: no model loaded, nothing answers)."""
        self.model_name = name
        if name is None:
            self.model_id = None
            self.load_text = ""
        self._show_model_line()

    def use_model(self, model_id: str | None, name: str | None, load_text: str = "") -> None:
        """The model that answers from now on (None: none), its name and load options.
        Each model keeps its own conversation while the dashboard runs."""
        self.model_id = model_id
        self.model_name = name
        self.load_text = load_text if model_id else ""
        session = self.session
        if session is not None:
            self.system_prompt = session.system
        self._show_model_line()

    def set_params_text(self, text: str) -> None:
        """Show the sampling parameters after the model (blank: nothing, runtime defaults)."""
        self.params_text = text
        self._show_model_line()

    def _show_model_line(self) -> None:
        name = self.model_name
        parts = [f"Model: {clean_line(name)}" if name else "Model: none loaded (ctrl+o)"]
        parts += [text for text in (self.load_text, self.params_text) if text]
        self._model.update(" | ".join(parts))

    def set_system_prompt(self, text: str) -> None:
        """Replace the system prompt (of the open conversation too, saved with it)."""
        self.system_prompt = text
        session = self.session
        if session is not None and session.system != text:
            session.system = text
            if session.turns:
                self._save(lambda store: store.set_system(session))

    # -- drawing ---------------------------------------------------------------------------

    def start_answer(self, prompt: str | None = None) -> None:
        """Begin a new answer (echoes the prompt)."""
        self.streaming = True
        self.set_class(True, "-streaming")
        self._show_metrics("")
        if self._output.line_count and self._output.lines[-1] != "":
            self._output.write("\n")
        if prompt is not None:
            self._output.write(f"> {prompt}\n")

    def append_tokens(self, text: str) -> None:
        """Append generated text (only the last line is redrawn)."""
        self._output.write(text)

    def finish_answer(self, metrics: MetricsView, error: str | None = None) -> None:
        """End the answer and show its metrics, or the error (wrapped, never cut off)."""
        self.streaming = False
        self.set_class(False, "-streaming")
        self._output.write("\n")
        self._show_metrics(f"error: {clean_line(error)}" if error else metrics_text(metrics),
                           error=bool(error))

    def _show_metrics(self, text: str, error: bool = False) -> None:
        self._metrics.set_class(error, "-error")
        self._metrics.update(text)

    def note(self, text: str) -> None:
        """A line of the console's own in the log, in brackets."""
        if self._output.line_count and self._output.lines[-1] != "":
            self._output.write("\n")
        self._output.write(f"[{text}]\n")

    def show_session(self, session: ChatSession | None) -> None:
        """Clear the log and draw ``session``'s turns (None: just clear)."""
        self._output.clear()
        self._show_metrics("")
        if session is None:
            return
        for message in session.turns:
            if message["role"] == "user":
                self.start_answer(message["content"])
            else:
                self.append_tokens(message["content"])
                self.finish_answer(MetricsView())
        if self.streaming:  # a prompt that nothing answered
            self.finish_answer(MetricsView())
        self._show_metrics("")

    # -- chat ------------------------------------------------------------------------------

    def ask(self, prompt: str) -> None:
        """Send ``prompt`` to the loaded model in the open conversation (one is started when
        none is open); the answer streams into the log."""
        self.start_answer(prompt)
        model_id = self.model_id
        if model_id is None or self._runtime is None:
            self._give_back(prompt, "no model loaded (enter or ctrl+o)")
            return
        session = self._sessions.get(model_id)
        if session is None:
            session = self._sessions[model_id] = ChatSession(model_id, self.system_prompt)
        session.add_user(prompt)
        answer = self._answer = _Answer(session, prompt)
        self._stream(answer)

    @work(group="answer", exit_on_error=False)
    async def _stream(self, answer: _Answer) -> None:
        """Fit the conversation into the context, then stream the answer into the log.
        Esc cancels this worker (the stream is closed: the runtime stops this request)."""
        runtime = self._runtime() if self._runtime is not None else None
        session = answer.session
        metrics = None
        try:
            from tui.runtime.types import GenParams

            params = self._params() or GenParams()
            messages = await self._fit(runtime, session, params)
            stream = runtime.generate(session.model_id, messages, params,
                                      request_id=answer.request_id)
            async with contextlib.aclosing(stream) as items:
                async for item in items:
                    if answer.ended:
                        break
                    if isinstance(item, str):
                        self._queue(answer, item)
                    else:
                        metrics = item
        except ModelDeckError as exc:
            self._end(answer, error=str(exc))
            return
        except Exception as exc:  # a bug still ends the answer with one line
            self._end(answer, error=f"{type(exc).__name__}: {exc}")
            return
        self._end(answer, metrics=metrics)

    async def _fit(self, runtime: Any, session: ChatSession, params: Any) -> list[ChatMessage]:
        """The conversation trimmed to the model's context (oldest turns left out first,
        with a note in the log); raises ContextFullError when the newest prompt alone does
        not fit."""
        from tui.chat.session import ContextFullError

        model_id = session.model_id
        info = next((m for m in runtime.loaded() if m.id == model_id), None)
        context = info.context_length if info is not None else 0
        if context <= 0:  # an endpoint: its server knows its context
            return session.messages()

        async def count(messages: Any) -> int:
            tokens = await runtime.count_tokens(model_id, messages)
            return 0 if tokens is None else tokens

        try:
            trimmed = await session.amessages_for(
                context, count, answer_reserve(context, params.max_tokens))
        except ContextFullError as exc:
            raise ContextFullError(
                exc.tokens, exc.budget, exc.context,
                hint="shorten the prompt or the system prompt (f2), lower max tokens (f3), or "
                "load the model with a larger context (L: load with…)",
            ) from None
        note = trimmed.note()
        if note:
            self.note(note)
        return trimmed.messages

    def _queue(self, answer: _Answer, text: str) -> None:
        """Collect streamed text; it reaches the log at the next frame."""
        answer.parts.append(text)
        answer.pending.append(text)
        if self._flush_timer is None:
            self._flush_timer = self.set_timer(TOKEN_FLUSH_S, self._flush)

    def _flush(self) -> None:
        """Write the collected text into the log (directly: no message round trip)."""
        if self._flush_timer is not None:
            self._flush_timer.stop()
        self._flush_timer = None
        answer = self._answer
        if answer is not None and answer.pending:
            text = "".join(answer.pending)
            answer.pending.clear()
            self.append_tokens(text)

    def _end(self, answer: _Answer, *, metrics: Any = None, error: str | None = None,
             cancelled: bool = False) -> None:
        """Finish ``answer`` once: a failed one (or one cancelled before any text) leaves the
        conversation as it was and its prompt back in the input; the others are saved."""
        if answer.ended:
            return
        self._flush()
        answer.ended = True
        if self._answer is answer:
            self._answer = None
        text = "".join(answer.parts)
        session = answer.session
        if error is not None or (cancelled and not text):
            session.discard_last_user()
            if error is not None:
                self._give_back(answer.prompt, error)
            else:
                self.finish_answer(MetricsView(cancelled=True))
                self._give_back(answer.prompt)
            return
        session.add_assistant(text)
        self._save(lambda store: store.append(session, session.turns[-2:]))
        if metrics is None:
            self.finish_answer(MetricsView(cancelled=cancelled))
            return
        self.finish_answer(MetricsView(
            ttft_ms=metrics.ttft_ms, tokens_per_s=metrics.tokens_per_s,
            tokens=metrics.completion_tokens,
            cancelled=cancelled or metrics.finish_reason == "cancelled",
            estimated=metrics.usage == "estimated",
        ))
        self.post_message(self.AnswerDone(self, session.model_id, metrics))

    def _give_back(self, prompt: str, error: str | None = None) -> None:
        """End a prompt that got no answer: the error (if any), and the prompt back in the
        input to edit or send again (unless something was typed meanwhile)."""
        if error is not None:
            self.finish_answer(MetricsView(), error)
        if not self._input.value:
            self._input.value = prompt
            self._input.cursor_position = len(prompt)

    def _save(self, write: Callable[[Any], object]) -> None:
        """Write to the chat store (a short SQLite write, in order); a failure is told, the
        chat goes on."""
        store = self._chats() if self._chats is not None else None
        if store is None:
            return
        try:
            write(store)
        except ModelDeckError as exc:
            self.notify(f"the chat was not saved: {exc}", severity="warning", markup=False)

    def cancel_answer(self) -> bool:
        """Stop the answer being streamed (only this console's request); what came is kept.
        False when nothing streams."""
        answer = self._answer
        if answer is None:
            if not self.streaming:
                return False
            self.finish_answer(MetricsView(cancelled=True))
            return True
        runtime = self._runtime() if self._runtime is not None else None
        if runtime is not None:
            runtime.cancel(answer.request_id)
        self.workers.cancel_group(self, "answer")
        self._end(answer, cancelled=True)
        return True

    def new_chat(self) -> None:
        """Start a new conversation (the current one stays saved, to reopen)."""
        self.cancel_answer()
        if self.model_id is not None:
            self._sessions.pop(self.model_id, None)
        self.show_session(None)
        self.note("new chat")

    def clear_chat(self) -> None:
        """Empty the open conversation: its turns are forgotten (also where it is saved),
        its system prompt stays."""
        self.cancel_answer()
        session = self.session
        if session is not None:
            session.clear()
            self._save(lambda store: store.clear(session.id))
        self.show_session(None)
        self.note("chat cleared")

    def open_session(self, session: ChatSession) -> None:
        """Continue a saved conversation of the loaded model: its turns are drawn in the log."""
        self.cancel_answer()
        self._sessions[session.model_id] = session
        self.system_prompt = session.system
        self.show_session(session)
        self.note(f"reopened: {session.title or 'untitled'}, {len(session.turns)} messages")

    # -- events ----------------------------------------------------------------------------

    @on(Input.Submitted, "#console-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        prompt = event.value.strip()
        if not prompt or self.streaming:
            return
        self._input.remember(prompt)
        self._input.value = ""
        self.ask(prompt)

    def action_cancel(self) -> None:
        """Cancel the answer being streamed (or, idle, ask the App to leave the console)."""
        if not self.cancel_answer():
            self.post_message(self.LeaveRequested(self))

    def action_new_chat(self) -> None:
        """A new conversation."""
        self.new_chat()

    def action_clear_chat(self) -> None:
        """Empty the conversation."""
        self.clear_chat()

    def action_edit_system_prompt(self) -> None:
        """Ask the App to open the system-prompt editor."""
        self.post_message(self.SystemPromptRequested(self, self.system_prompt))
