"""A manual clock for code that takes ``clock`` / ``sleep`` / ``async_sleep`` callables."""

from __future__ import annotations

import asyncio
import math
import threading


class FakeClock:
    """Time that only moves when something sleeps on it (from any thread or coroutine).

    Call it for the time; ``sleep``/``async_sleep`` advance it by the asked seconds at once
    and record them in ``sleeps``. Like a real sleep, each one lets some time pass: at least
    to the next float, so a shortfall below the clock's resolution still closes.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.start = start
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    @property
    def elapsed(self) -> float:
        """Seconds slept since the start."""
        with self._lock:
            return self.now - self.start

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass without anyone sleeping (idle time)."""
        with self._lock:
            self.now += seconds

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now = max(self.now + seconds, math.nextafter(self.now, math.inf))

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)  # still a suspension point, as a real sleep is
