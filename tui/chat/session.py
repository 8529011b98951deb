"""One conversation with a model, and fitting it into the model's context.

No Textual, no I/O: :class:`ChatSession` holds the turns; :meth:`ChatSession.messages_for`
picks what is sent (the system prompt always, the newest turns that fit, the oldest dropped
first) given a token counter, which the caller runs off the event loop.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tui.errors import ModelDeckError

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}
TITLE_CHARS = 80  # a conversation's title: its first user line, cut to this


class ContextFullError(ModelDeckError):
    """Even the system prompt and the newest prompt do not fit the context (with room for the
    answer). ``tokens``: what they need; ``budget``: what the context leaves for them."""

    def __init__(self, tokens: int, budget: int, context: int, *, hint: str | None = None
                 ) -> None:
        super().__init__(
            f"the prompt needs {tokens:,} tokens, but the {context:,}-token context leaves "
            f"{max(budget, 0):,} for it once room is kept for the answer",
            hint=hint or "shorten the prompt or the system prompt, lower max tokens, or load "
            "the model with a larger context",
        )
        self.tokens = tokens
        self.budget = budget
        self.context = context


@dataclass(frozen=True, slots=True)
class Trimmed:
    """What :meth:`ChatSession.messages_for` chose: the ``messages`` to send, how many of the
    oldest turns were left out (``dropped``), and the prompt's token count."""

    messages: list[Message]
    dropped: int
    tokens: int
    context: int

    def note(self) -> str | None:
        """``3 earlier turns left out to fit the 4,096-token context`` (None: nothing was)."""
        if not self.dropped:
            return None
        turns = "turn" if self.dropped == 1 else "turns"
        return f"{self.dropped} earlier {turns} left out to fit the {self.context:,}-token context"


def answer_reserve(context: int, max_tokens: int) -> int:
    """Tokens kept free for the answer: ``max_tokens``, but at most half the context (a
    512-token answer limit must not leave a 256-token context no room for the prompt)."""
    return max(0, min(max_tokens, context // 2))


def title_of(text: str) -> str:
    """A conversation's title: the first non-blank line of its first prompt, cut short."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


@dataclass(slots=True)
class ChatSession:
    """One conversation: id, model, system prompt, turns (user/assistant messages in order),
    generation parameters. ``id`` is made at creation; the store writes the conversation on
    its first saved turn."""

    model_id: str
    system: str = ""
    turns: list[Message] = field(default_factory=list)
    params: Any = None  # GenParams (None: the runtime's defaults)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    title: str = ""

    def add_user(self, text: str) -> None:
        """Append a prompt (the title is its first line, for the first prompt)."""
        if not self.title:
            self.title = title_of(text)
        self.turns.append({"role": "user", "content": text})

    def add_assistant(self, text: str) -> None:
        """Append an answer."""
        self.turns.append({"role": "assistant", "content": text})

    def discard_last_user(self) -> str | None:
        """Remove the newest prompt if nothing answered it (it failed); returns its text."""
        if self.turns and self.turns[-1]["role"] == "user":
            text = self.turns.pop()["content"]
            if not any(m["role"] == "user" for m in self.turns):
                self.title = ""
            return text
        return None

    def clear(self) -> None:
        """Forget every turn (same conversation, same system prompt)."""
        self.turns.clear()
        self.title = ""

    def messages(self) -> list[Message]:
        """Everything: the system prompt (when set), then every turn."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [dict(m) for m in self.turns]

    def _starts(self) -> list[int]:
        """Index in ``turns`` where each turn (a prompt and what answered it) starts."""
        starts = [i for i, m in enumerate(self.turns) if m["role"] == "user"]
        if not starts or starts[0] != 0:  # leading answers (a reopened damaged chat): a turn
            starts.insert(0, 0)
        return starts

    def _without(self, dropped: int) -> list[Message]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        start = self._starts()[dropped] if self.turns else 0
        return head + [dict(m) for m in self.turns[start:]]

    def _search(self, budget: int, context: int
                ) -> Generator[list[Message], int, Trimmed]:
        """Send the token count of each list it yields; returns the choice. The fewest turns
        are dropped: first everything is tried, then a binary search over how many of the
        oldest turns to drop (the newest turn is always kept)."""
        whole = self._without(0)
        tokens = yield whole
        if tokens <= budget:
            return Trimmed(whole, 0, tokens, context)
        most = len(self._starts()) - 1 if self.turns else 0
        if most == 0:
            raise ContextFullError(tokens, budget, context)
        last = self._without(most)
        last_tokens = yield last
        if last_tokens > budget:
            raise ContextFullError(last_tokens, budget, context)
        low, high, best = 1, most - 1, (most, last, last_tokens)
        while low <= high:  # the fewest dropped turns that fit
            middle = (low + high) // 2
            candidate = self._without(middle)
            count = yield candidate
            if count <= budget:
                best, high = (middle, candidate, count), middle - 1
            else:
                low = middle + 1
        dropped, messages, tokens = best
        return Trimmed(messages, dropped, tokens, context)

    def messages_for(
        self, context_tokens: int, count_tokens: Callable[[Sequence[Message]], int],
        reserve: int = 0,
    ) -> Trimmed:
        """The messages to send so the prompt fits ``context_tokens - reserve``: the system
        prompt kept, the oldest turns dropped first. Raises :class:`ContextFullError` when
        the system prompt and the newest turn alone do not fit. Blocking as ``count_tokens``
        is."""
        search = self._search(context_tokens - reserve, context_tokens)
        try:
            candidate = next(search)
            while True:
                candidate = search.send(count_tokens(candidate))
        except StopIteration as stop:
            return stop.value

    async def amessages_for(
        self, context_tokens: int,
        count_tokens: Callable[[Sequence[Message]], Awaitable[int]], reserve: int = 0,
    ) -> Trimmed:
        """:meth:`messages_for` with an async counter (the runtime's, which counts in its
        threads)."""
        search = self._search(context_tokens - reserve, context_tokens)
        try:
            candidate = next(search)
            while True:
                candidate = search.send(await count_tokens(candidate))
        except StopIteration as stop:
            return stop.value

    async def fit_for(self, runtime: Any, context: int, max_tokens: int, *, hint: str) -> Trimmed:
        """The conversation trimmed to ``context`` tokens as ``runtime`` counts them, leaving
        room for an answer of ``max_tokens``; ContextFullError (with ``hint``: what the user
        can change) when the newest prompt alone does not fit."""

        async def count(messages: Sequence[Message]) -> int:
            tokens = await runtime.count_tokens(self.model_id, messages)
            return 0 if tokens is None else tokens

        try:
            return await self.amessages_for(context, count, answer_reserve(context, max_tokens))
        except ContextFullError as exc:
            raise ContextFullError(exc.tokens, exc.budget, exc.context, hint=hint) from None
