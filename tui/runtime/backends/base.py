"""The contract every backend implements (all methods are blocking; the service calls them
from worker threads)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tui.runtime.types import GenParams, Message

Emit = Callable[[str], None]


@dataclass(slots=True)
class BackendStats:
    """Token counts of one answer as the backend saw them."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop", "length", "cancelled"
    usage: str = "counted"  # "counted" here, "reported" by a server, "estimated" from chunks


class Backend(Protocol):
    """One loaded model.

    A backend that decodes several answers together sets ``batched = True``: then
    ``generate`` is called from several threads at once (up to its ``parallel``), ``emit``
    never blocks, and ``generate`` takes a ``ready`` callable (False: the reader lags, pause
    this answer); ``interrupt`` also wakes it when a reader catches up. Others answer one
    request at a time.
    """

    def load(self) -> None:
        """Load weights (blocking; raises ModelDeckError subclasses)."""

    def generate(
        self,
        messages: Sequence[Message],
        params: GenParams,
        emit: Emit,
        cancel: threading.Event,
    ) -> BackendStats:
        """Stream text deltas to ``emit`` until done, ``max_tokens`` or ``cancel`` is set.

        ``emit("")`` marks the first generated token when it brings no text (an end token, or
        text held back), so TTFT is measured at that token. End tokens are not counted in
        ``completion_tokens``.
        """

    def interrupt(self) -> None:
        """Unblock a generation stuck in I/O, or have it look at ``cancel`` now (called from
        another thread)."""

    def close(self) -> None:
        """Drop every reference to the model and free its memory."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
