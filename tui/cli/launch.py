"""Start the dashboard (``modeldeck`` with no sub-command)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tui.cli.context import Context


def launch_app(ctx: Context) -> int:
    """Build :class:`~tui.app.app.ModelDeckApp` from ``ctx.services`` and run it; the exit code.

    Textual is imported here only, so the other sub-commands never pay for it.
    """
    from tui.app.app import ModelDeckApp

    app = ModelDeckApp(ctx.services)
    app.run()
    return int(app.return_code or 0)
