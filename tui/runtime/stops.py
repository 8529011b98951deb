"""Stop strings over a stream of text deltas: emit everything up to the first stop string,
holding back only a tail that might be the start of one."""

from __future__ import annotations

from collections.abc import Sequence

from tui.runtime.backends.base import Emit


class StopMatcher:
    """Wraps ``emit``; :meth:`feed` returns True once a stop string was seen (then stop)."""

    def __init__(self, stops: Sequence[str], emit: Emit) -> None:
        self.stops = tuple(s for s in stops if s)
        self.emit = emit
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> bool:
        """Add a delta; emit what is safe; True when a stop string matched."""
        if self.stopped or not text:
            return self.stopped
        if not self.stops:
            self.emit(text)
            return False
        buf = self.pending + text
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            if cut:
                self.emit(buf[:cut])
            self.pending = ""
            self.stopped = True
            return True
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buf)), 0, -1):
                if buf.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        if len(buf) > hold:
            self.emit(buf[: len(buf) - hold])
        self.pending = buf[len(buf) - hold :] if hold else ""
        return False

    def flush(self) -> None:
        """Emit a held-back tail at the end of the stream (it was not a stop string)."""
        if self.pending and not self.stopped:
            self.emit(self.pending)
        self.pending = ""
