"""The API server inside the dashboard (``A``, the palette, ``serve_with_dashboard``): start it
in the App's own loop over the same services (one runtime, one batching scheduler shared with
the console), stop it gracefully, notice when it ends by itself, and wait for it at quit.

Its workers run on the App (they outlive any one widget); the panel only shows it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tui.app import wiring
from tui.errors import ModelDeckError

if TYPE_CHECKING:
    from tui.app.app import ModelDeckApp


class ServerControl:
    """Start/stop state of the dashboard's API server (``handle``: a running
    :class:`~tui.serve.server.ServerHandle`, else None)."""

    def __init__(self, app: ModelDeckApp) -> None:
        self.app = app
        self.handle: Any = None
        self.busy = False  # starting or stopping: the key is ignored meanwhile
        self._stopping: asyncio.Future[None] | None = None  # a stop under way

    def toggle(self) -> None:
        """Start the server, or stop the running one."""
        if self.busy:
            self.app.notify("The API server is starting or stopping", severity="warning")
        elif self.handle is not None:
            self.stop()
        else:
            self.start()

    def start(self) -> None:
        """Serve the OpenAI and management APIs from this process, on the settings' host,
        port and key; one line in a notification when it cannot start."""
        if self.handle is None and not self.busy and not self.app.closing:
            self.busy = True
            self.app.run_worker(self._start(), group="server", exit_on_error=False)

    def stop(self) -> None:
        """Stop the server gracefully (open answers get a few seconds, then stop)."""
        if self.handle is not None and not self.busy:
            self.busy = True
            self.app.run_worker(self._stop(), group="server", exit_on_error=False)

    async def close(self) -> None:
        """At quit: stop the server (or wait for the stop under way) before the runtime
        closes, so its open answers end first."""
        handle, self.handle = self.handle, None
        stopping = handle.stop() if handle is not None else self._stopping
        if stopping is not None:
            try:
                await stopping
            except Exception as exc:
                self.app.log.error(f"stopping the API server failed: {exc!r}")

    async def _start(self) -> None:
        app = self.app
        try:
            handle = await wiring.start_server(app.services)
        except ModelDeckError as exc:
            app.notify(str(exc), title="API server not started", severity="error", timeout=15)
            return
        finally:
            self.busy = False
        if app.closing or not app.ui_alive():  # the app ended meanwhile
            await handle.stop()
            return
        self.handle = handle
        app.follow_runtime()
        app.server_panel.show_server(handle)
        app.notify(f"API server on {handle.url}/v1", title="API server")
        handle.task.add_done_callback(lambda _task: app.call_later(self._ended, handle))

    async def _stop(self) -> None:
        handle, self.handle = self.handle, None  # its end is expected now
        # The stop runs on even if this worker is cancelled (the app quits): close() waits
        # for it before the runtime closes.
        self._stopping = asyncio.ensure_future(handle.stop())
        try:
            await asyncio.shield(self._stopping)
        finally:
            self.busy = False
            if self.app.ui_alive():
                self.app.server_panel.hide_server()
        self.app.notify("API server stopped", title="API server")

    def _ended(self, handle: Any) -> None:
        """``handle``'s server task ended without being asked to (uvicorn failed): say so,
        hide its panel."""
        if self.handle is not handle:
            return
        self.handle = None
        self.app.run_worker(handle.stop(), group="server", exit_on_error=False)
        if self.app.ui_alive():
            self.app.server_panel.hide_server()
            self.app.notify("The API server stopped unexpectedly; A starts it again",
                            title="API server", severity="error", timeout=15)
