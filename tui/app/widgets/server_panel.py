"""The API server's panel: where it listens, requests in flight and queued, requests and
tokens per minute, the last error. Hidden while the server is off.

The panel owns its sampling timer: once shown (:meth:`ServerPanel.show_server`) it reads the
server's :class:`~tui.serve.stats.ServeStats` every second (every
:data:`LOW_REDRAW_INTERVAL` seconds with ``low_redraw``), redraws only the lines that changed
and tells the App the per-model request counts when they change (:class:`ServerPanel.Sampled`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer

from tui.app.widgets.line import Line

INTERVAL = 1.0
LOW_REDRAW_INTERVAL = 3.0


def address_line(url: str, auth: bool) -> str:
    """``http://127.0.0.1:8765/v1 (OpenAI API; key required)``."""
    return f"{url}/v1  (OpenAI API{'; API key required' if auth else ''}, docs {url}/docs)"


def ssh_hint(host: str, port: int) -> str:
    """How to reach a loopback-bound server from the user's computer ('' beyond loopback)."""
    from tui.serve.auth import is_loopback

    if not is_loopback(host):
        return ""
    return f"from your computer: ssh -N -L {port}:127.0.0.1:{port} user@pod"


def numbers_line(snap: Any) -> str:
    """``in flight 2  queued 1  14 req/min  512 tok/min  (30 answered)``."""
    return (f"in flight {snap.in_flight}  queued {snap.queued}  "
            f"{snap.requests_per_min} req/min  {snap.tokens_per_min} tok/min  "
            f"({snap.requests_total} answered)")


class ServerPanel(Vertical):
    """The dashboard's API server, watched live (see the module)."""

    @dataclass
    class Sampled(Message):
        """Requests answered per model changed (the table shows them on loaded rows)."""

        per_model: dict[str, int]

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, ServerPanel.Sampled)

    def __init__(self, *, low_redraw: bool = False, id: str | None = None) -> None:
        super().__init__(id=id, classes="-hidden")
        self.low_redraw = low_redraw
        self.border_title = "API server"
        self.handle: Any = None
        self._timer: Timer | None = None
        self._per_model: dict[str, int] = {}
        self._address = Line("", id="server-address")
        self._hint = Line("", id="server-hint")
        self._numbers = Line("", id="server-numbers")
        self._error = Line("", id="server-error")

    def compose(self) -> ComposeResult:
        yield self._address
        yield self._hint
        yield self._numbers
        yield self._error

    @property
    def interval(self) -> float:
        """Seconds between samples."""
        return LOW_REDRAW_INTERVAL if self.low_redraw else INTERVAL

    @property
    def sampling(self) -> bool:
        """Whether the panel follows a server (its timer runs)."""
        return self._timer is not None

    @property
    def per_model(self) -> dict[str, int]:
        """Requests answered per model id, as last sampled (empty while off)."""
        return dict(self._per_model)

    @property
    def text(self) -> str:
        """Every line shown, one per line (tests, and the e2e screen)."""
        lines = (self._address, self._hint, self._numbers, self._error)
        return "\n".join(line.text for line in lines if line.display)

    def show_server(self, handle: Any) -> None:
        """Show ``handle``'s server (a :class:`~tui.serve.server.ServerHandle`) and follow it."""
        self.handle = handle
        self._address.set(address_line(handle.url, handle.info.auth))
        hint = ssh_hint(handle.host, handle.port)
        self._hint.set(hint)
        self._hint.display = bool(hint)
        self._per_model = {}
        self.sample()
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(self.interval, self.sample, name="server-sample")
        self.remove_class("-hidden")

    def hide_server(self) -> None:
        """The server stopped: stop sampling, hide."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.handle = None
        self.add_class("-hidden")
        if self._per_model:
            self._per_model = {}
            self.post_message(self.Sampled({}))

    def sample(self) -> None:
        """Read the server's numbers and show them."""
        if self.handle is None:
            return
        snap = self.handle.stats.snapshot()
        self._numbers.set(numbers_line(snap))
        self._error.set(f"last error: {snap.last_error}" if snap.last_error else "")
        self._error.display = bool(snap.last_error)
        if snap.per_model != self._per_model:
            self._per_model = snap.per_model
            self.post_message(self.Sampled(dict(snap.per_model)))
