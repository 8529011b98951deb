"""The dashboard's low-disk warning and its reclaim proposal (``F``, or "Reclaim disk space…"
in the palette): the candidates ``modeldeck reclaim`` would list to bring the models volume
back above ``low_disk_warning``, in a dialog; confirming deletes them through the safe path."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from tui import formatting
from tui.app.screens import ConfirmScreen
from tui.terminal_text import clean_line

if TYPE_CHECKING:
    from tui.app.app import ModelDeckApp
    from tui.reclaim import Proposal
    from tui.resources.types import Snapshot


def check_disk(app: ModelDeckApp, snapshot: Snapshot) -> None:
    """Show or hide the sidebar's warning for a new sample; notify once as the volume gets low."""
    from tui.reclaim import low_disk_text

    disk = snapshot.disks[0] if snapshot.disks else None
    if disk is None:
        return
    app.disk_usage = (disk.free, disk.total)
    text = low_disk_text(app.settings.low_disk_warning, disk.free, disk.total)
    app.sidebar.show_disk_warning(f"{text}: F frees space" if text else None)
    if text and not app.low_disk:
        app.notify(f"{text}. Press F to see what can go.", title="Low disk space",
                   severity="warning", timeout=15)
    app.low_disk = text is not None


def start(app: ModelDeckApp) -> None:
    """Work out the proposal in a thread, then show it."""
    app.run_worker(lambda: _plan(app), thread=True, group="reclaim", exit_on_error=False)


def _plan(app: ModelDeckApp) -> None:
    from tui.reclaim import bytes_short, propose

    setting = app.settings.low_disk_warning
    free, total = app.disk_usage or _usage(app)
    short = bytes_short(setting, free, total)
    if short <= 0:
        app.call_from_thread(
            app.notify, f"{formatting.size(free)} free on the models volume, above the "
            f"warning level ({setting}); `modeldeck reclaim --free SIZE` frees more")
        return
    proposal = propose(app.services, short)
    app.call_from_thread(_ask, app, proposal)


def _usage(app: ModelDeckApp) -> tuple[int, int]:
    usage = shutil.disk_usage(app.settings.models_dir)
    return usage.free, usage.total


def _ask(app: ModelDeckApp, proposal: Proposal) -> None:
    from tui.reclaim import describe

    if not proposal.candidates:
        app.notify("Nothing can go: no orphan, duplicate or unpinned unused model frees space",
                   severity="warning")
        return
    n = len(proposal.candidates)
    question = (f"Delete {n} item{'s' if n != 1 else ''}, freeing "
                f"{formatting.size(proposal.total)}?")
    if not proposal.met:
        question += (f"\nThat is all that can go: {formatting.size(proposal.target)} are needed "
                     "to get back above the warning level.")

    def answered(yes: bool | None) -> None:
        if yes:
            app.run_worker(lambda: _delete(app, proposal), thread=True, group="reclaim",
                           exit_on_error=False)

    app.push_screen(ConfirmScreen(question, yes="Delete", no="Keep", details=describe(proposal),
                                  destructive=True), answered)


def _delete(app: ModelDeckApp, proposal: Proposal) -> None:
    from tui.reclaim import carry_out

    done = carry_out(app.services, proposal)
    freed = sum(c.size for c in done if c.done)
    app.call_from_thread(app.notify, f"Reclaimed {formatting.size(freed)}", markup=False)
    for c in done:
        if c.note:
            line = clean_line(f"{c.what}: {c.note}")
            app.call_from_thread(app.notify, line, severity="warning", markup=False)
    app.call_from_thread(app.browser.load_rows)
