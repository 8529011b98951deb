"""What every route needs: the services, the limits and the metrics (``app.state.serve``)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from tui.serve.metrics import ServeMetrics

MAX_BODY = 4 << 20  # bytes of a request body


@dataclass(eq=False)
class ServeState:
    """Shared by the routes of one app."""

    services: Any
    metrics: ServeMetrics
    max_tokens: int
    max_body: int = MAX_BODY
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def runtime(self) -> Any:
        return self.services.runtime

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` in the background (kept referenced until done)."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def aclose(self) -> None:
        """Cancel what runs in the background."""
        for task in list(self.background):
            task.cancel()
        for task in list(self.background):
            with contextlib.suppress(BaseException):
                await task


def state_of(request: Any) -> ServeState:
    """The :class:`ServeState` of the app serving ``request``."""
    return request.app.state.serve
