"""The downloads panel: every download job, ordered for a human, fed by its own worker.

The panel follows the download service (:func:`~tui.app.wiring.follow_downloads`, an async
worker) and the inventory's change feed (jobs other processes run, in the feed's thread); both
post :class:`DownloadsPanel.JobChanged`, the one message per progress event (the service's
``EventThrottle`` is the one rate limit; ``can_replace`` drops a superseded update of the same
job). It runs the job actions itself (cancel asks first) and tells its parent what the rest
of the screen cares about: :class:`JobFinished`, :class:`JobFailed`, :class:`JobStalled`,
:class:`JobWarned`; ``JobChanged`` bubbles on, and the App mirrors the job on its table row.

Order: active and queued (and paused) jobs, oldest first; then failed, newest first; then
finished (done, cancelled), newest first, under a header that collapses them (Enter) — those
older than a day are hidden unless shown (``o``). Only the rows shown are widgets; a progress
update repaints the cells that changed, a new order moves rows without rebuilding them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rich.style import Style
from textual import work
from textual.app import ComposeResult, RenderResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.renderables.bar import Bar
from textual.widget import Widget
from textual.widgets import Static

from tui.app.messages import InventoryChanged, LiveProblem
from tui.app.views import (
    JOB_STATES,
    JobView,
    format_size,
    job_bytes_text,
    job_speed_text,
    job_state_text,
    text_bar,
)
from tui.app.widgets.line import Line
from tui.terminal_text import clean_line

if TYPE_CHECKING:
    from tui.services import Services

ACTIONS = ("pause", "resume", "cancel", "retry")
FINISHED_STATES = frozenset({"done", "cancelled"})
RECENT_S = 86400.0  # finished jobs older than this are hidden unless asked for
HEADER = "\0finished"  # the selection key of the finished group's header line
EVENT_RATE = 2.0  # progress events per second per job the panel asks the service for
EVENT_RATE_LOW_REDRAW = 0.5


def job_group(view: JobView) -> int:
    """0: active, queued or paused; 1: failed; 2: finished (done, cancelled)."""
    if view.state == "failed":
        return 1
    return 2 if view.state in FINISHED_STATES else 0


class JobBar(Widget):
    """A progress bar repainted only when its filled half-cells change (no timer, no
    animation; a job of unknown size shows an empty bar)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"bar--bar", "bar--complete"}
    DEFAULT_CSS = """
    JobBar {
        width: 16;
        height: 1;
    }
    JobBar > .bar--bar {
        color: $primary;
        background: $surface;
    }
    JobBar > .bar--complete {
        color: $success;
        background: $surface;
    }
    """

    def __init__(self, *, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self._fraction: float | None = None
        self._shown: float | None = None

    def set_fraction(self, fraction: float | None) -> None:
        """Show ``fraction`` (0..1; None: unknown)."""
        self._fraction = fraction
        shown = self._quantized()
        if shown != self._shown:
            self._shown = shown
            self.refresh()

    def _quantized(self) -> float | None:
        if self._fraction is None:
            return None
        cells = 2 * (self.size.width or 16)
        return int(max(0.0, min(1.0, self._fraction)) * cells) / cells

    def on_resize(self) -> None:
        self._shown = self._quantized()

    def render(self) -> RenderResult:
        shown = self._shown or 0.0
        style = self.get_component_rich_style("bar--complete" if shown >= 1 else "bar--bar")
        return Bar(
            highlight_range=(0, self.size.width * shown),
            highlight_style=Style.from_color(style.color),
            background_style=Style.from_color(style.bgcolor),
        )


class DownloadRow(Horizontal):
    """One job: name, state, bar, percentage, bytes, speed/ETA (or why it failed)."""

    def __init__(self, view: JobView, *, ascii: bool = False) -> None:
        super().__init__(classes="download-row")
        self.view = view
        self.ascii = ascii
        self._name_line = Line(view.name, classes="job-name")
        self._state = Line("", classes="job-state")
        self._bar: JobBar | Line = (
            Line("", classes="job-ascii-bar") if ascii else JobBar(classes="job-bar")
        )
        self._pct = Line("", classes="job-pct")
        self._bytes = Line("", classes="job-bytes")
        self._speed = Line("", classes="job-speed")
        self._apply(view)

    def compose(self) -> ComposeResult:
        yield self._name_line
        yield self._state
        yield self._bar
        yield self._pct
        yield self._bytes
        yield self._speed

    @property
    def job_id(self) -> str:
        """The job shown."""
        return self.view.job_id

    def update_view(self, view: JobView) -> None:
        """Show ``view`` (same widgets; only what changed repaints)."""
        old, self.view = self.view, view
        self._apply(view, old)

    def _apply(self, view: JobView, old: JobView | None = None) -> None:
        self._name_line.set(view.name)  # Line.set: no-op when unchanged
        self._state.set(job_state_text(view))
        if old is None or old.state != view.state:
            for state in JOB_STATES:
                self.set_class(view.state == state, f"-{state}")
        fraction = 1.0 if view.state == "done" else view.fraction
        if isinstance(self._bar, JobBar):
            self._bar.set_fraction(fraction)
        else:
            self._bar.set("[" + text_bar(fraction or 0.0, 12, ascii=True) + "]")
        self._pct.set("--%" if fraction is None else f"{int(fraction * 100)}%")
        self._bytes.set(job_bytes_text(view))
        self._speed.set(job_speed_text(view))


class DownloadsPanel(VerticalScroll, can_focus=True):
    """Download jobs, ordered for a human. Keys act on the selected job; the App's download
    keys act through :meth:`request` on the job of the table's row."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "select(-1)", "Previous", show=False),
        Binding("down", "select(1)", "Next", show=False),
        Binding("enter", "open", "Details"),
        Binding("p", "request('pause')", "Pause"),
        Binding("r", "request('resume')", "Resume"),
        Binding("c", "request('cancel')", "Cancel"),
        Binding("R", "request('retry')", "Retry"),
        Binding("x", "clear_finished", "Clear finished"),
        Binding("o", "toggle_older", "Older finished", show=False),
        Binding("escape", "app.focus_table", "Back to table"),
    ]

    @dataclass
    class JobChanged(Message):
        """A job's latest view (from the service's events or the change feed). A newer one of
        the same job in the same state replaces an unprocessed one (a change of state is never
        dropped). Bubbles on to the App, which mirrors it on the table."""

        view: JobView

        def can_replace(self, message: Message) -> bool:
            return (
                isinstance(message, DownloadsPanel.JobChanged)
                and message.view.job_id == self.view.job_id
                and message.view.state == self.view.state
            )

    @dataclass
    class JobMessage(Message):
        """What a job did (the subclasses say what)."""

        view: JobView

    class JobFinished(JobMessage):
        """A job shown running is done: its model is installed (reload the rows)."""

    class JobFailed(JobMessage):
        """A job shown running failed (``view.error`` says why)."""

    class JobStalled(JobMessage):
        """A job shown running stalled; the service retries."""

    class JobWarned(JobMessage):
        """A job carries a caution that does not stop it (sent once per job and warning)."""

    @dataclass
    class JobRemoved(Message):
        """A job's record is gone (cleared here or by another process)."""

        job_id: str

    def __init__(
        self,
        services: Services,
        *,
        ascii: bool = False,
        low_redraw: bool = False,
        now: Callable[[], float] = time.time,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.services = services
        self._ascii = ascii
        self._low_redraw = low_redraw
        self._now = now
        self._views: dict[str, JobView] = {}
        self._seq: dict[str, int] = {}  # first-seen order (active jobs keep it)
        self._rows: dict[str, DownloadRow] = {}  # the jobs shown
        self._items: list[str] = []  # what is shown, in order: job ids and HEADER
        self._selected: str | None = None
        self._warned: set[tuple[str, str]] = set()
        self._collapsed = False
        self._show_older = False
        self._relayout_pending = False
        self._title = ""
        self._recent_finished = 0  # finished jobs listed (or folded under the header)
        self._header = Line("", classes="downloads-group")
        self._header.display = False
        self._empty = Static("No downloads", id="downloads-empty")
        self.border_title = "Downloads"

    def compose(self) -> ComposeResult:
        yield self._empty
        yield self._header

    # -- following the services -------------------------------------------------------------

    def follow(self, *, downloads: bool = True, changes: bool = True) -> None:
        """Start following the download service (a worker that also runs the queue) and the
        change feed (jobs other processes run; installed models changed -> the App)."""
        if downloads:
            self._follow_downloads()
        if changes:
            from tui.app import wiring

            wiring.follow_changes(
                self.services, emit_job=self.post_job,
                drop_job=lambda job_id: self.post_message(self.JobRemoved(job_id)),
                models_changed=lambda: self.post_message(InventoryChanged()),
                failed=lambda line: self.post_message(LiveProblem([line], "error")),
            )

    @work(exclusive=True, group="downloads-follow", exit_on_error=False)
    async def _follow_downloads(self) -> None:
        """Follow the download service; quietly ends while it is not wired."""
        from tui.app import wiring

        rate = EVENT_RATE_LOW_REDRAW if self._low_redraw else EVENT_RATE
        try:
            await wiring.follow_downloads(self.services, self.post_job, event_rate=rate)
        except (wiring.NotWired, ImportError) as exc:
            self.log.warning(f"downloads panel idle: {exc}")

    def post_job(self, view: JobView) -> None:
        """Show ``view`` soon (thread-safe): posts :class:`JobChanged`."""
        self.post_message(self.JobChanged(view))

    def on_downloads_panel_job_changed(self, message: JobChanged) -> None:
        self.update_job(message.view)

    def on_downloads_panel_job_removed(self, message: JobRemoved) -> None:
        self.remove_job(message.job_id)

    # -- the jobs ----------------------------------------------------------------------------

    @property
    def jobs(self) -> dict[str, JobView]:
        """The latest view of every job (shown or not)."""
        return dict(self._views)

    @property
    def active_count(self) -> int:
        """Jobs still going (queued, connecting, downloading, stalled, waiting, verifying)."""
        return sum(1 for view in self._views.values() if view.active)

    @property
    def shown_jobs(self) -> list[str]:
        """The ids of the jobs shown, top to bottom."""
        return [item for item in self._items if item != HEADER]

    def row_for(self, job_id: str) -> DownloadRow | None:
        """The row widget of a job shown."""
        return self._rows.get(job_id)

    @property
    def selected_job(self) -> str | None:
        """The job the keys act on (None on the finished header or when empty)."""
        return self._selected if self._selected in self._rows else None

    def job_for_row(self, row_key: str) -> JobView | None:
        """The job of a table row: the one still going, else the latest."""
        views = [v for v in self._views.values() if v.row_key == row_key]
        going = [v for v in views if job_group(v) == 0]
        pool = going or views
        return max(pool, key=lambda v: self._seq[v.job_id]) if pool else None

    def update_job(self, view: JobView) -> None:
        """Show ``view``: the job's row updates in place; a new job, or one that changed
        group, moves to its place. Tells the parent about transitions."""
        before = self._views.get(view.job_id)
        self._views[view.job_id] = view
        if before is None:
            self._seq[view.job_id] = len(self._seq)
        row = self._rows.get(view.job_id)
        if row is not None:
            row.update_view(view)
        if before is None or job_group(before) != job_group(view) or row is None:
            self._schedule_relayout()
        elif before.state != view.state:
            self._update_title()
        self._tell(before, view)

    def remove_job(self, job_id: str) -> None:
        """Forget a job whose record is gone."""
        if self._views.pop(job_id, None) is not None:
            self._schedule_relayout()

    def _tell(self, before: JobView | None, view: JobView) -> None:
        if view.warning and (view.job_id, view.warning) not in self._warned:
            self._warned.add((view.job_id, view.warning))
            self.post_message(self.JobWarned(view))
        if before is None or before.state == view.state:
            return
        if view.state == "done":
            self.post_message(self.JobFinished(view))
        elif view.state == "failed":
            self.post_message(self.JobFailed(view))
        elif view.state == "stalled":
            self.post_message(self.JobStalled(view))

    # -- order, groups and title -------------------------------------------------------------

    def _schedule_relayout(self) -> None:
        """Re-order once after a burst of new jobs (the listing at start is one burst)."""
        if not self._relayout_pending:
            self._relayout_pending = True
            self.call_later(self._relayout)

    def _finished_at(self, view: JobView) -> float:
        return view.updated_at or 0.0

    def _recent(self, view: JobView, now: float) -> bool:
        return self._show_older or now - self._finished_at(view) < RECENT_S

    def _plan(self) -> tuple[list[str], int, int]:
        """The items to show in order, the finished jobs recent enough, and those hidden as
        older than a day."""
        now = self._now()
        views = self._views.values()
        active = sorted((v for v in views if job_group(v) == 0),
                        key=lambda v: self._seq[v.job_id])
        failed = sorted((v for v in views if job_group(v) == 1),
                        key=lambda v: (-self._finished_at(v), -self._seq[v.job_id]))
        finished = sorted((v for v in views if job_group(v) == 2),
                          key=lambda v: (-self._finished_at(v), -self._seq[v.job_id]))
        recent = [v for v in finished if self._recent(v, now)]
        items = [v.job_id for v in (*active, *failed)]
        if finished:
            items.append(HEADER)
            if not self._collapsed:
                items.extend(v.job_id for v in recent)
        return items, len(recent), len(finished) - len(recent)

    def _relayout(self) -> None:
        """Show the planned items: rows made for jobs coming into view, removed for those
        leaving it, moved (not rebuilt) where the order changed."""
        self._relayout_pending = False
        if not self.is_attached:
            return
        items, recent, older = self._plan()
        wanted = set(items)
        for job_id in [j for j in self._rows if j not in wanted]:
            self._rows.pop(job_id).remove()
        new = [DownloadRow(self._views[j], ascii=self._ascii) for j in items
               if j != HEADER and j not in self._rows]
        for row in new:
            self._rows[row.job_id] = row
        if new:
            self.mount_all(new)
        self._header.display = HEADER in wanted
        self._header.set(self._header_text(recent, older))
        widgets = [self._header if item == HEADER else self._rows[item] for item in items]
        shown = set(widgets)
        current = [c for c in self.children if c in shown]
        for index, widget in enumerate(widgets):
            if current[index] is not widget:
                self.move_child(widget, before=current[index])
                current.remove(widget)
                current.insert(index, widget)
        self._empty.display = not items
        self._items = items
        self._recent_finished = recent
        if self._selected not in wanted:
            self._selected = items[0] if items else None
        self._mark_selected()
        self._update_title()

    def _header_text(self, recent: int, older: int) -> str:
        opened, closed = (("v", ">") if self._ascii else ("▾", "▸"))
        if self._collapsed:
            return f"{closed} {recent} finished (enter shows)"
        text = f"{opened} {recent} finished"
        if older:
            text += f" | {older} older than a day hidden (o shows)"
        elif self._show_older:
            text += " (o hides those older than a day)"
        return text

    def _update_title(self) -> None:
        """``Downloads | 1 active | 2 paused | 1 failed | 3 finished``: what is listed below
        (finished jobs folded under their header count; those older than a day hidden do not)."""
        counts = {"active": 0, "paused": 0, "failed": 0}
        for item in self._items:
            view = self._views.get(item)
            if view is None or job_group(view) == 2:
                continue
            what = "active" if view.active else view.state
            counts[what] = counts.get(what, 0) + 1
        counts["finished"] = self._recent_finished
        parts = [f"{n} {what}" for what, n in counts.items() if n]
        title = " | ".join(["Downloads", *parts])
        if title != self._title:  # setting border_title repaints the whole panel
            self._title = title
            self.border_title = title

    def _mark_selected(self) -> None:
        for job_id, row in self._rows.items():
            row.set_class(job_id == self._selected, "-selected")
        self._header.set_class(self._selected == HEADER, "-selected")

    # -- actions -----------------------------------------------------------------------------

    def action_select(self, delta: int) -> None:
        """Move the selection."""
        if not self._items:
            return
        index = self._items.index(self._selected) if self._selected in self._items else 0
        self._selected = self._items[max(0, min(len(self._items) - 1, index + delta))]
        self._mark_selected()
        widget = self._header if self._selected == HEADER else self._rows[self._selected]
        self.scroll_to_widget(widget, animate=False)

    def action_open(self) -> None:
        """Enter: the selected job's details, or fold/unfold the finished jobs."""
        if self._selected == HEADER:
            self._collapsed = not self._collapsed
            self._relayout()
            return
        job_id = self.selected_job
        if job_id is not None:
            from tui.app.screens import JobDetailScreen

            self.app.push_screen(JobDetailScreen(self.services, self._views[job_id]))

    def action_toggle_older(self) -> None:
        """Show/hide the finished jobs older than a day."""
        self._show_older = not self._show_older
        self._relayout()

    def action_request(self, action: str) -> None:
        """``action`` on the selected job (cancel asks first)."""
        job_id = self.selected_job
        if job_id is not None:
            self.request(job_id, action)

    def request(self, job_id: str, action: str, *, ask: bool = False) -> None:
        """Run ``action`` (pause, resume, cancel, retry) on a job. Cancel always asks (its
        partial is deleted); ``ask`` makes the others ask too (keys typed on the table)."""
        view = self._views.get(job_id)
        if view is None or action not in ACTIONS:
            return
        name = clean_line(view.name)
        if action == "cancel":
            partial = format_size(view.done_bytes)
            question = f"Cancel {name}?\n" + (
                f"The partial ({partial}) will be deleted." if partial and view.state != "done"
                else "Nothing downloaded yet is kept.")
        elif ask:
            question = f"{action.capitalize()} {name}?"
        else:
            self._run_action(job_id, action)
            return
        from tui.app.screens import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self._run_action(job_id, action)

        labels = {"cancel": ("Cancel download", "Keep"), "retry": ("Retry", "No")}
        yes, no = labels.get(action, (action.capitalize(), "No"))
        # Cancelling deletes the partial: no typed letter confirms it.
        self.app.push_screen(ConfirmScreen(question, yes=yes, no=no,
                                           destructive=action == "cancel"), answered)

    @work(group="download-actions", exit_on_error=False)
    async def start_download(self, entry_id: str, quant: str | None) -> None:
        """Queue a download of a catalog entry (a quant of a GGUF entry)."""
        from tui.app import wiring

        # On the loop: enqueue is one small SQLite write and wakes the service's scheduler.
        wiring.start_download(self.services, entry_id, quant)

    @work(group="download-actions", exit_on_error=False)
    async def _run_action(self, job_id: str, action: str) -> None:
        from tui.app import wiring

        await wiring.download_action(self.services, job_id, action)

    def action_clear_finished(self) -> None:
        """Forget the finished jobs (done, cancelled), here and in ``modeldeck jobs``."""
        if any(job_group(v) == 2 for v in self._views.values()):
            self._clear_finished()

    @work(thread=True, group="download-actions", exit_on_error=False)
    def _clear_finished(self) -> None:
        from tui.app import wiring

        for job_id in wiring.clear_finished(self.services):
            self.post_message(self.JobRemoved(job_id))

