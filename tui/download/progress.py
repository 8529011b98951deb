"""Progress events for the UI and the CLI, speed smoothing and event-rate limiting."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

JOB_STATES = (
    "queued", "connecting", "downloading", "stalled", "waiting", "verifying", "paused", "done",
    "failed", "cancelled",
)
ACTIVE_STATES = ("queued", "connecting", "downloading", "stalled", "waiting", "verifying")
TERMINAL_STATES = ("done", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class FileProgress:
    """One file of a job."""

    path: str
    done_bytes: int
    total_bytes: int | None
    state: str


@dataclass(frozen=True, slots=True)
class DownloadEvent:
    """A snapshot of one job, emitted at most ~10 times a second plus at every state change.

    ``speed`` is bytes/s (EWMA-smoothed), ``eta`` seconds (None when unknown), ``error`` the
    one-line reason when ``state == "failed"``, ``warning`` a one-line caution about the job
    that does not stop it (e.g. the models dir is on a network file system). While requests
    fail and are retried with nothing arriving, ``attempt`` is the try under way (2, 3, …)
    and ``detail`` why the last one failed (``connection refused``); both are None again
    once bytes arrive. A ``waiting`` job waits for ``wait_for`` ("the Hub's rate limit")
    ``wait_s`` more seconds (updated each second), and ``detail`` says it in one line
    ("waiting for the Hub's rate limit, 42s"). ``note`` says what a finished job did when
    that is not a download (``already installed as qwen-q4 (commit 1a2b3c4); nothing to do``).
    """

    job_id: str
    name: str
    state: str
    done_bytes: int
    total_bytes: int | None
    speed: float
    eta: float | None
    files: tuple[FileProgress, ...] = ()
    error: str | None = None
    warning: str | None = None
    timestamp: float = field(default_factory=time.time)
    attempt: int | None = None
    detail: str | None = None
    note: str | None = None
    wait_for: str | None = None
    wait_s: int | None = None

    @property
    def fraction(self) -> float | None:
        """0..1 when the total is known."""
        if not self.total_bytes:
            return None
        return min(1.0, self.done_bytes / self.total_bytes)

    @property
    def status(self) -> str:
        """The state as one short phrase: ``connecting, try 3, connection refused``, or what a
        waiting job waits for (``waiting for the Hub's rate limit, 42s``)."""
        if self.state == "waiting" and self.detail:
            return self.detail
        if self.attempt is None:
            return self.state
        return ", ".join(filter(None, (self.state, f"try {self.attempt}", self.detail)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (one ``--json`` line)."""
        data = asdict(self)
        data["files"] = [asdict(f) for f in self.files]
        return data


class SpeedMeter:
    """Exponentially weighted moving average of a byte counter's rate."""

    def __init__(self, half_life: float = 2.0) -> None:
        self.half_life = half_life
        self.speed = 0.0
        self._last_bytes: int | None = None
        self._last_time = 0.0

    def update(self, total_bytes: int, now: float | None = None) -> float:
        """Feed the counter's current value; returns the smoothed bytes/s."""
        now = time.monotonic() if now is None else now
        if self._last_bytes is None:
            self._last_bytes, self._last_time = total_bytes, now
            return self.speed
        dt = now - self._last_time
        if dt < 0.05:
            return self.speed
        instant = max(0, total_bytes - self._last_bytes) / dt
        alpha = 1 - 0.5 ** (dt / self.half_life)
        self.speed = instant if self.speed == 0 else self.speed + alpha * (instant - self.speed)
        self._last_bytes, self._last_time = total_bytes, now
        return self.speed

    def reset(self, total_bytes: int) -> None:
        """Restart measuring from ``total_bytes`` (after a pause or restart)."""
        self.speed = 0.0
        self._last_bytes = total_bytes
        self._last_time = time.monotonic()


class EventThrottle:
    """Decides whether a progress event may go out: state changes always, else ≤ ``rate``/s."""

    def __init__(self, rate: float = 10.0) -> None:
        self.interval = 1.0 / rate
        self._last = 0.0
        self._last_state: str | None = None

    def allow(self, state: str, now: float | None = None) -> bool:
        """True if an event in ``state`` may be emitted now (and records it)."""
        now = time.monotonic() if now is None else now
        if state != self._last_state or now - self._last >= self.interval:
            self._last, self._last_state = now, state
            return True
        return False
