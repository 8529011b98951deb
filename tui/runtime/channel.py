"""A bounded thread → asyncio channel that wakes the event loop only when the consumer waits.

The worker thread calls :meth:`Channel.put` (blocking while ``limit`` items are unread:
backpressure); the coroutine side awaits :meth:`Channel.get`. A token produced while the
consumer is still busy with the previous one costs no loop wake-up at all.

A producer that must never block (the llama.cpp engine thread, decoding many answers) uses
:meth:`Channel.push` and stops producing while :meth:`Channel.ready` is False; ``on_space`` is
called (from the consumer) when a full buffer has room again.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Any


class Channel:
    """Single producer (a thread), single consumer (a coroutine on ``loop``)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limit: int,
        on_space: Callable[[], None] | None = None,
    ) -> None:
        self.loop = loop
        self.limit = max(1, limit)
        self.on_space = on_space
        self.items: deque[Any] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.space = threading.Event()
        self.space.set()
        self.aborted = threading.Event()

    # -- producer (worker thread) ------------------------------------------------------------

    def put(self, item: Any) -> bool:
        """Append ``item``, waiting while the buffer is full. False if the channel was aborted."""
        while len(self.items) >= self.limit:
            if self.aborted.is_set():
                return False
            self.space.clear()
            if len(self.items) >= self.limit:
                self.space.wait(0.05)
        if self.aborted.is_set():
            return False
        self.items.append(item)
        if self.waiter is not None:
            self.loop.call_soon_threadsafe(self._wake)
        return True

    def push(self, item: Any) -> bool:
        """Append ``item`` without waiting (the producer checks :meth:`ready` itself). False
        if the channel was aborted."""
        if self.aborted.is_set():
            return False
        self.items.append(item)
        if self.waiter is not None:
            self.loop.call_soon_threadsafe(self._wake)
        return True

    def ready(self) -> bool:
        """Whether the consumer has room for more (or is gone: nothing to wait for)."""
        return len(self.items) < self.limit or self.aborted.is_set()

    def put_final(self, item: Any) -> None:
        """Append the last item without waiting for space (never blocks)."""
        self.items.append(item)
        self.loop.call_soon_threadsafe(self._wake)

    def abort(self) -> None:
        """Release a producer blocked on a full buffer; later puts are dropped."""
        self.aborted.set()
        self.space.set()

    # -- consumer (event loop) ---------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        """The next item (waits without polling)."""
        while not self.items:
            waiter = self.loop.create_future()
            self.waiter = waiter
            if self.items:  # appended between the check and publishing the waiter
                self.waiter = None
                break
            try:
                await waiter
            finally:
                self.waiter = None
        item = self.items.popleft()
        left = len(self.items)
        if left < self.limit:
            self.space.set()
            if left == self.limit - 1 and self.on_space is not None:
                self.on_space()
        return item
