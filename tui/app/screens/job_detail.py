"""One download job in full: the whole error, where it comes from, its files, bytes, times."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.app.views import (
    JobView,
    format_duration,
    format_size,
    job_bytes_text,
    job_speed_text,
    job_state_text,
)
from tui.terminal_text import clean_line

if TYPE_CHECKING:
    from tui.services import Services

LABEL_WIDTH = 12


def detail_lines(view: JobView, record: Any, now: float) -> list[tuple[str, str]]:
    """``(label, value)`` for each detail of a job: its live view, and its record (spec,
    files, times) when it was read. Values are raw: the screen shows them escaped. URLs lose
    any ``user:password@`` and anything that looks like a token."""
    from tui.download.errors import redact
    from tui.runtime.types import redact_url

    error = (record.error if record is not None else None) or view.error
    lines: list[tuple[str, str]] = [("Name", view.name), ("State", job_state_text(view))]
    if error:
        lines.append(("Error", error))
    if view.retry:
        lines.append(("Retrying", view.retry))
    if view.state == "waiting" and view.wait_for:
        lines.append(("Waiting for", view.wait_for))
    lines.append(("Bytes", job_bytes_text(view)))
    if view.state == "downloading" and (speed := job_speed_text(view)):
        lines.append(("Speed", speed))
    lines.append(("Job id", view.job_id))
    if record is None:
        return lines
    spec = record.spec
    for label, value in (("Repo", spec.repo), ("Revision", spec.revision),
                         ("Quant", spec.quant), ("Catalog entry", spec.catalog_id)):
        if value:
            lines.append((label, value))
    if spec.url:
        lines.append(("URL", redact(redact_url(spec.url))))
    for label, when in (("Created", record.created_at), ("Updated", record.updated_at)):
        if when:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
            lines.append((label, f"{stamp} ({format_duration(max(0.0, now - when))} ago)"))
    lines.append(("Files", str(len(record.files))))
    for f in record.files:
        done, size = format_size(f.done_bytes) or "0B", format_size(f.size) or "?"
        text = f"{f.path}  {done}/{size}  {f.state}"
        lines.append(("", f"{text}  {f.error}" if f.error else text))
    return lines


def detail_text(lines: list[tuple[str, str]]) -> Text:
    """The lines as one ``Text`` (no markup parsed; controls shown escaped), labels bold."""
    text = Text()
    for index, (label, value) in enumerate(lines):
        if index:
            text.append("\n")
        text.append(f"{label:<{LABEL_WIDTH}} ", style="bold")
        text.append(clean_line(value))
    return text


class JobDetailScreen(ModalScreen[None]):
    """A job's details (Enter in the downloads panel); its record is read in a thread."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss", "Close"),
        Binding("pageup", "scroll('page_up')", "Page up", show=False),
        Binding("pagedown", "scroll('page_down')", "Page down", show=False),
        Binding("home", "scroll('home')", "Top", show=False),
        Binding("end", "scroll('end')", "Bottom", show=False),
    ]

    def __init__(self, services: Services, view: JobView,
                 now: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.services = services
        self.view = view
        self._now = now
        self.record: Any = None

    def compose(self) -> ComposeResult:
        with Vertical(id="job-dialog", classes="dialog"):
            yield Static("Download details", id="job-title")
            with VerticalScroll(id="job-scroll"):
                yield Static(detail_text(detail_lines(self.view, None, self._now())),
                             id="job-details")
            yield Static("Esc closes | up/down PgUp PgDn Home End scroll", classes="dialog-hint",
                         markup=False)

    def on_mount(self) -> None:
        self.query_one("#job-scroll").focus()
        self._load()

    @property
    def text(self) -> str:
        """The details shown, as plain text."""
        return str(self.query_one("#job-details", Static).render())

    @work(thread=True, exit_on_error=False)
    def _load(self) -> None:
        from tui.app import wiring

        record = wiring.job_record(self.services, self.view.job_id)
        self.app.call_from_thread(self._show, record)

    def _show(self, record: Any) -> None:
        self.record = record
        lines = detail_lines(self.view, record, self._now())
        self.query_one("#job-details", Static).update(detail_text(lines))

    def action_scroll(self, where: str) -> None:
        """Scroll the details."""
        scroll = self.query_one("#job-scroll", VerticalScroll)
        {"page_up": scroll.scroll_page_up, "page_down": scroll.scroll_page_down,
         "home": scroll.scroll_home, "end": scroll.scroll_end}[where](animate=False)
