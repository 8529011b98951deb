"""Start the dashboard (``modeldeck`` with no sub-command)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tui.cli.context import Context


def launch_app(ctx: Context) -> int:
    """Build :class:`~tui.app.app.ModelDeckApp` from ``ctx.services`` and run it; the exit code.

    Textual is imported here only, so the other sub-commands never pay for it. The inventory
    is opened and every page read first: a bad setting or a damaged, foreign or unwritable
    inventory is one line on the terminal before the screen is taken, never a traceback
    inside Textual.
    """
    services = ctx.services
    services.db.verify()
    from tui.app.app import ModelDeckApp

    app = ModelDeckApp(services)
    app.run()
    return int(app.return_code or 0)
