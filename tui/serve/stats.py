"""What the dashboard's server panel shows, kept in plain Python next to the Prometheus
counters (no parsing of ``/metrics`` text, no FastAPI import: the panel reads it as is).

:class:`ServeStats` counts requests in flight (from arrival to the last byte of the answer),
requests and generated tokens in a rolling one-minute window (:class:`PerMinute`, on an
injectable clock), answered requests per model, and the last error a client was sent.
:meth:`ServeStats.snapshot` adds the runtime's queue depth.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tui.terminal_text import clean_line

WINDOW_S = 60.0
MAX_ERROR_CHARS = 300
MAX_MODELS = 1000  # per-model counts kept (ids come from the inventory; bound anyway)


class PerMinute:
    """Events and their amounts over the last ``window`` seconds of ``clock``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 window: float = WINDOW_S) -> None:
        self.clock = clock
        self.window = window
        self._events: deque[tuple[float, int]] = deque()
        self._total = 0

    def add(self, amount: int = 1) -> None:
        """Count ``amount`` now."""
        now = self.clock()
        self._drop(now)
        self._events.append((now, amount))
        self._total += amount

    def value(self) -> int:
        """The sum of the amounts counted in the last window."""
        self._drop(self.clock())
        return self._total

    def _drop(self, now: float) -> None:
        events = self._events
        while events and events[0][0] <= now - self.window:
            self._total -= events.popleft()[1]


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """The server's numbers at one moment."""

    in_flight: int
    queued: int
    requests_per_min: int
    tokens_per_min: int
    requests_total: int
    last_error: str | None
    per_model: dict[str, int] = field(default_factory=dict)


class ServeStats:
    """Live counters of one server (updated on its event loop)."""

    def __init__(self, services: Any = None, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.services = services
        self.in_flight = 0
        self.requests_total = 0
        self.per_model: dict[str, int] = {}
        self.last_error: str | None = None
        self._requests = PerMinute(clock)
        self._tokens = PerMinute(clock)

    def arrived(self) -> None:
        """A request to the API started."""
        self.in_flight += 1

    def left(self) -> None:
        """A request to the API ended (its answer written, or its client gone)."""
        self.in_flight = max(0, self.in_flight - 1)

    def answered(self, model: str, status: int, completion_tokens: int = 0) -> None:
        """A generation or embedding request ended with HTTP ``status``."""
        self.requests_total += 1
        self._requests.add()
        if completion_tokens > 0:
            self._tokens.add(completion_tokens)
        if status < 400 and (model in self.per_model or len(self.per_model) < MAX_MODELS):
            self.per_model[model] = self.per_model.get(model, 0) + 1

    def error(self, status: int, message: str) -> None:
        """The last error a client was sent (one clean line)."""
        self.last_error = clean_line(f"{status} {message}", MAX_ERROR_CHARS)

    def queued(self) -> int:
        """Requests waiting for a slot, over the loaded models."""
        if self.services is None:
            return 0
        return sum(m.queued for m in self.services.runtime.loaded())

    def snapshot(self) -> StatsSnapshot:
        return StatsSnapshot(
            in_flight=self.in_flight, queued=self.queued(),
            requests_per_min=self._requests.value(), tokens_per_min=self._tokens.value(),
            requests_total=self.requests_total, last_error=self.last_error,
            per_model=dict(self.per_model))
