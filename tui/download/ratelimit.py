"""A token bucket shared by every connection of a job or of the whole service."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    """Token bucket: ``await consume(n)`` (event loop) or ``consume_blocking(n)`` (worker
    thread) returns once ``n`` bytes may be received; both draw on the same tokens.

    ``rate`` is bytes per second (0 = unlimited). The burst is a quarter second of traffic
    (at least 64 KiB) so a capped transfer stays smooth. ``clock``, ``sleep`` and
    ``async_sleep`` are injectable so the arithmetic can be checked without waiting.
    """

    def __init__(
        self,
        rate: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        async_sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.rate = max(0, int(rate))
        self.capacity = max(65536.0, self.rate / 4)
        self._clock = clock
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._tokens = self.capacity
        self._stamp = clock()
        self._lock = asyncio.Lock()  # FIFO among coroutines
        self._state = threading.Lock()  # guards the counters
        self._turn = threading.Lock()  # one waiting thread at a time

    def set_rate(self, rate: int) -> None:
        """Change the rate (0 = unlimited) for the next calls."""
        with self._state:
            self.rate = max(0, int(rate))
            self.capacity = max(65536.0, self.rate / 4)
            self._tokens = min(self._tokens, self.capacity)

    def _take(self, amount: int) -> float:
        """Take ``amount`` tokens and return 0, or return the seconds to wait first."""
        with self._state:
            rate = self.rate
            if rate <= 0:
                return 0.0
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * rate)
            self._stamp = now
            need = min(amount, self.capacity)
            if self._tokens >= need:
                self._tokens -= amount  # may go negative for chunks above the burst
                return 0.0
            return (need - self._tokens) / rate

    async def consume(self, amount: int) -> None:
        """Wait until ``amount`` bytes are allowed."""
        if self.rate <= 0 or amount <= 0:
            return
        async with self._lock:
            while (delay := self._take(amount)) > 0:
                await self._async_sleep(delay)

    def consume_blocking(self, amount: int, stop: Callable[[], bool] = lambda: False) -> None:
        """Like :meth:`consume`, sleeping in the calling thread (in steps of at most 0.1 s,
        returning early once ``stop()`` is true)."""
        if self.rate <= 0 or amount <= 0:
            return
        with self._turn:
            while (delay := self._take(amount)) > 0:
                if stop():
                    return
                self._sleep(min(delay, 0.1))
