"""The prompt console: model label, append-only output log, metrics line, prompt input.

The console runs the chat itself: an async worker streams each answer from the runtime
straight into the log (batched per frame), a :class:`~tui.chat.ChatSession` per model holds the
conversation, trimmed to the model's context before each prompt, and a
:class:`~tui.chat.ChatStore` saves it as it goes. The App only says which model is loaded.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Static

from tui.app.views import MetricsView, metrics_text
from tui.app.widgets.answer_log import AnswerLog
from tui.chat.session import ChatSession
from tui.chat.session import Message as ChatMessage
from tui.errors import ModelDeckError
from tui.terminal_text import clean_line

TOKEN_FLUSH_S = 1 / 30  # streamed text reaches the log at most this often


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
    :meth:`append_tokens` and :meth:`finish_answer` draw into the log. The console edits its
    system prompt (F2) and lists and reopens the saved chats (:meth:`show_saved_chats`) itself;
    F3 opens the App's generation-parameters modal. Posts :class:`AnswerDone` and
    :class:`LeaveRequested`.
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

    def __init__(
        self,
        *,
        cursor_blink: bool = True,
        runtime: Callable[[], Any] | None = None,
        chats: Callable[[], Any] | None = None,
        params: Callable[[], Any] | None = None,
        now: Callable[[], float] | None = None,
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
        self._now = now
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
        model_id = session.model_id
        info = next((m for m in runtime.loaded() if m.id == model_id), None)
        context = info.context_length if info is not None else 0
        if context <= 0:  # an endpoint: its server knows its context
            return session.messages()

        trimmed = await session.fit_for(
            runtime, context, params.max_tokens,
            hint="shorten the prompt or the system prompt (f2), lower max tokens (f3), or "
            "load the model with a larger context (L: load with…)")
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
        """Edit the system prompt in a modal (it applies to the open conversation)."""
        from tui.app.screens import TextPromptScreen

        def done(text: str | None) -> None:
            if text is not None:
                self.set_system_prompt(text)
                self.notify("System prompt updated")

        self.app.push_screen(
            TextPromptScreen("System prompt", self.system_prompt, "You are a helpful assistant."),
            done,
        )

    # -- saved chats -----------------------------------------------------------------------

    def show_saved_chats(self) -> None:
        """The saved conversations with the loaded model, newest first; one reopens."""
        if self.model_id is None:
            self.notify("Load a model first: its saved chats are listed", severity="warning")
        elif self._chats is not None:
            self._list_chats(self.model_id)

    @work(thread=True, group="chats", exit_on_error=False)
    def _list_chats(self, model_id: str) -> None:
        assert self._chats is not None
        chats = self._chats().list(model_id)
        self.app.call_from_thread(self._show_chats, model_id, chats)

    def _show_chats(self, model_id: str, chats: list[Any]) -> None:
        if not self.is_attached:
            return
        if not chats:
            self.notify("No saved chats with this model yet")
            return
        from tui.app.screens import ChatListScreen

        def picked(conversation_id: str | None) -> None:
            if conversation_id:
                self._open_chat(conversation_id)

        assert self._chats is not None
        screen = ChatListScreen(self.model_name or model_id, chats, self._chats, now=self._now)
        self.app.push_screen(screen, picked)

    @work(thread=True, group="chats", exit_on_error=False)
    def _open_chat(self, conversation_id: str) -> None:
        assert self._chats is not None
        session = self._chats().open(conversation_id)
        self.app.call_from_thread(self._chat_opened, session)

    def _chat_opened(self, session: ChatSession | None) -> None:
        if session is None:
            self.notify("That chat was deleted meanwhile", severity="warning")
        elif session.model_id != self.model_id:
            self.notify("That chat belongs to a model no longer loaded", severity="warning")
        else:
            self.open_session(session)
