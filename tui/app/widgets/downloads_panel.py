"""The downloads panel: one row per job, updated in place through :meth:`update_job`."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.clock import Clock
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import ProgressBar, Static

from tui.app.views import (
    JOB_STATES,
    JobView,
    job_bytes_text,
    job_speed_text,
    job_state_text,
    text_bar,
)
from tui.app.widgets.line import Line

ACTIONS = ("pause", "resume", "cancel", "retry")


class DownloadRow(Horizontal):
    """One job: name, state, progress bar, bytes, speed/ETA (or the error)."""

    def __init__(self, view: JobView, *, clock: Clock | None = None, ascii: bool = False) -> None:
        super().__init__(classes="download-row")
        self.view = view
        self.ascii = ascii
        self._name = Line(view.name, classes="job-name")
        self._state = Line(job_state_text(view), classes="job-state")
        self._bar = ProgressBar(
            total=view.total_bytes or None,
            show_eta=False,
            show_percentage=True,
            show_bar=not ascii,
            clock=clock,
            classes="job-bar",
        )
        self._ascii_bar = Line("", classes="job-ascii-bar")
        self._bytes = Line("", classes="job-bytes")
        self._speed = Line("", classes="job-speed")
        self._apply(view)

    def compose(self) -> ComposeResult:
        yield self._name
        yield self._state
        if self.ascii:
            yield self._ascii_bar
        yield self._bar
        yield self._bytes
        yield self._speed

    @property
    def job_id(self) -> str:
        """The job shown."""
        return self.view.job_id

    def update_view(self, view: JobView) -> None:
        """Show ``view`` (same widgets, new values)."""
        old = self.view
        self.view = view
        self._apply(view, old)

    def _apply(self, view: JobView, old: JobView | None = None) -> None:
        if old is None or old.name != view.name:
            self._name.set(view.name)
        self._state.set(job_state_text(view))  # no-op when unchanged
        if old is None or old.state != view.state:
            for state in JOB_STATES:
                self.set_class(view.state == state, f"-{state}")
        total = view.total_bytes or None
        if view.state == "done" and total:
            self._bar.update(total=total, progress=total)
        elif total is None and view.state in ("queued", "paused", "failed", "cancelled"):
            # A paused or waiting job with unknown size: an empty bar, not a moving one.
            self._bar.update(total=1, progress=0)
        else:
            self._bar.update(total=total, progress=view.done_bytes)
        if self.ascii:
            self._ascii_bar.set("[" + text_bar(view.fraction or 0.0, 12, ascii=True) + "]")
        self._bytes.set(job_bytes_text(view))
        self._speed.set(job_speed_text(view))


class DownloadsPanel(VerticalScroll, can_focus=True):
    """Download jobs. Keys act on the selected job by posting :class:`ActionRequested`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "select(-1)", "Previous", show=False),
        Binding("down", "select(1)", "Next", show=False),
        Binding("p", "request('pause')", "Pause"),
        Binding("r", "request('resume')", "Resume"),
        Binding("c", "request('cancel')", "Cancel"),
        Binding("R", "request('retry')", "Retry"),
    ]

    class ActionRequested(Message):
        """pause/resume/cancel/retry asked for one job (the App routes it to the service)."""

        def __init__(self, panel: DownloadsPanel, job_id: str, action: str) -> None:
            super().__init__()
            self.panel = panel
            self.job_id = job_id
            self.action = action

        @property
        def control(self) -> DownloadsPanel:
            """The panel that sent the message."""
            return self.panel

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        ascii: bool = False,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self._clock = clock
        self._ascii = ascii
        self._rows: dict[str, DownloadRow] = {}
        self._order: list[str] = []
        self._selected = 0
        self._empty = Static("No downloads", id="downloads-empty")
        self.border_title = "Downloads"

    def compose(self) -> ComposeResult:
        yield self._empty

    # -- feeding ---------------------------------------------------------------------------

    @property
    def jobs(self) -> dict[str, JobView]:
        """The latest view of every job."""
        return {job_id: row.view for job_id, row in self._rows.items()}

    @property
    def active_count(self) -> int:
        """Jobs still going (queued, connecting, downloading, stalled, verifying)."""
        return sum(1 for row in self._rows.values() if row.view.active)

    def row_for(self, job_id: str) -> DownloadRow | None:
        """The row widget of a job."""
        return self._rows.get(job_id)

    @property
    def selected_job(self) -> str | None:
        """The job the keys act on."""
        if not self._order:
            return None
        return self._order[min(self._selected, len(self._order) - 1)]

    def update_job(self, view: JobView) -> None:
        """Show ``view``: update the job's row in place, or add a row for a new job."""
        row = self._rows.get(view.job_id)
        if row is not None:
            row.update_view(view)
        else:
            row = DownloadRow(view, clock=self._clock, ascii=self._ascii)
            self._rows[view.job_id] = row
            self._order.append(view.job_id)
            self._empty.display = False
            self.mount(row)
            self._mark_selected()
        self._update_title()

    def remove_job(self, job_id: str) -> None:
        """Drop a job's row (after it was cancelled and cleared)."""
        row = self._rows.pop(job_id, None)
        if row is None:
            return
        self._order.remove(job_id)
        row.remove()
        self._empty.display = not self._order
        self._mark_selected()
        self._update_title()

    def _update_title(self) -> None:
        active = self.active_count
        self.border_title = f"Downloads ({active} active)" if active else "Downloads"

    def _mark_selected(self) -> None:
        selected = self.selected_job
        for job_id, row in self._rows.items():
            row.set_class(job_id == selected, "-selected")

    # -- actions ---------------------------------------------------------------------------

    def action_select(self, delta: int) -> None:
        """Move the selection."""
        if self._order:
            self._selected = max(0, min(len(self._order) - 1, self._selected + delta))
            self._mark_selected()
            row = self._rows[self._order[self._selected]]
            self.scroll_to_widget(row, animate=False)

    def action_request(self, action: str) -> None:
        """Post :class:`ActionRequested` for the selected job."""
        job_id = self.selected_job
        if job_id is not None and action in ACTIONS:
            self.post_message(self.ActionRequested(self, job_id, action))
