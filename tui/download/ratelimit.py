"""A token bucket shared by every connection of a job or of the whole service."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Async token bucket: ``await consume(n)`` returns once ``n`` bytes may be sent.

    ``rate`` is bytes per second (0 = unlimited). The burst is a quarter second of traffic
    (at least 64 KiB) so a capped transfer stays smooth.
    """

    def __init__(self, rate: int) -> None:
        self.rate = max(0, int(rate))
        self.capacity = max(65536.0, self.rate / 4)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def set_rate(self, rate: int) -> None:
        """Change the rate (0 = unlimited) for the next calls."""
        self.rate = max(0, int(rate))
        self.capacity = max(65536.0, self.rate / 4)
        self._tokens = min(self._tokens, self.capacity)

    async def consume(self, amount: int) -> None:
        """Wait until ``amount`` bytes are allowed."""
        if self.rate <= 0 or amount <= 0:
            return
        async with self._lock:  # FIFO among waiters
            while True:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= min(amount, self.capacity):
                    self._tokens -= amount  # may go negative for chunks above the burst
                    return
                await asyncio.sleep((min(amount, self.capacity) - self._tokens) / self.rate)
