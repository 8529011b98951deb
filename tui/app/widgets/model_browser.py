"""The model browser: the filter line, the model table and its status line, fed by its own
workers (rows read from the catalog and inventory in a thread, the Fit column from the
runtime's estimates, the Hub's update markers)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.geometry import Size
from textual.message import Message
from textual.reactive import Reactive
from textual.widgets import Input, Static

from tui.app.messages import ModelsLoaded, RowsChanged
from tui.app.views import ModelRow
from tui.app.widgets.model_list import ModelTable
from tui.errors import ModelDeckError
from tui.terminal_text import clean_line

if TYPE_CHECKING:
    from tui.services import Services


class FilterInput(Input):
    """The filter line above the table; Esc clears it, Enter or down goes to the table."""

    # Input re-sets ``virtual_size`` on every keystroke, and as a layout reactive that reflows
    # (and repaints) the whole screen per key. This line's size never depends on it.
    virtual_size = Reactive(Size(0, 0), layout=False)

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "leave(True)", "Clear filter"),
        Binding("enter,down", "leave(False)", "To table", show=False),
    ]

    @dataclasses.dataclass
    class Left(Message):
        """Back to the table (``clear``: the filter emptied first)."""

        clear: bool

    def action_leave(self, clear: bool) -> None:
        """Back to the table, clearing the filter or keeping it."""
        self.post_message(self.Left(clear))


class ModelBrowser(Vertical):
    """Filter + table + status line. The App asks it to :meth:`load_rows` (at start, after an
    inventory change or a finished download); a :class:`~tui.app.messages.ModelsLoaded` it
    shows bubbles on to the App, which marks what its runtime and downloads know."""

    def __init__(
        self,
        services: Services,
        *,
        now: Callable[[], float] = time.time,
        used_refresh: float,
        cursor_blink: bool = True,
        prime_changes: bool = False,
        compute_fit: bool = True,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.services = services
        self._now = now
        self._used_refresh = used_refresh
        self._cursor_blink = cursor_blink
        self._prime_changes = prime_changes
        self._compute_fit = compute_fit
        self._entries: dict[str, Any] = {}

    def compose(self) -> ComposeResult:
        filter_input = FilterInput(placeholder="Filter models (Esc clears)", id="filter")
        filter_input.cursor_blink = self._cursor_blink
        yield filter_input
        yield ModelTable(now=self._now, used_refresh=self._used_refresh, id="models")
        yield Static("", id="table-status", markup=False)

    @property
    def table(self) -> ModelTable:
        """The model table."""
        return self.query_one("#models", ModelTable)

    @property
    def entries(self) -> Mapping[str, Any]:
        """The catalog entries by id, read with the rows (quant sizes for the pickers)."""
        return self._entries

    # -- rows --------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="rows", exit_on_error=False)
    def load_rows(self) -> None:
        """Read catalog + inventory (blocking SQLite, in a thread) and post the rows."""
        from tui.app import wiring

        if self._prime_changes:  # what changes after this read is reported by the feed
            wiring.prime_changes(self.services)
        entries = {e.id: e for e in self.services.catalog.entries()}
        rows = wiring.load_rows(self.services)
        self.post_message(ModelsLoaded(rows, entries))
        if extra := wiring.remote_rows(self.services):  # after the local rows: it may wait
            self.post_message(ModelsLoaded(rows + extra, entries))

    @on(ModelsLoaded)
    def _models_loaded(self, message: ModelsLoaded) -> None:
        if message.entries is not None:
            self._entries = dict(message.entries)
        table = self.table
        rows = []  # keep known Fit verdicts until they are recomputed (no blank flash)
        for row in message.rows:
            old = table.get_model_row(row.key)
            if old is not None and old.fit and not row.fit:
                row = dataclasses.replace(row, fit=old.fit)
            rows.append(row)
        table.set_rows(rows)
        self._show_status()
        if self._compute_fit:  # once the rows are painted
            self.call_after_refresh(self._fill_fit, list(table.all_rows.values()))

    @work(exclusive=True, group="fit", exit_on_error=False)
    async def _fill_fit(self, rows: list[ModelRow]) -> None:
        """Fill the Fit column (the runtime reads headers and memory in its threads)."""
        from tui.app import wiring

        changed = await wiring.fit_for(self.services, rows)
        if changed:
            self.post_message(RowsChanged(changed))

    @on(RowsChanged)
    def _rows_changed(self, message: RowsChanged) -> None:
        table = self.table
        # Merge the changed fields into the current rows (the status may have moved on).
        current = []
        for row in message.rows:
            now = table.get_model_row(row.key)
            current.append(dataclasses.replace(now, fit=row.fit) if now is not None else row)
        table.update_rows(current)

    @work(thread=True, exclusive=True, group="update-check", exit_on_error=False)
    def check_updates(self) -> None:
        """Ask the Hub for newer commits (network: in a thread); an outdated model's row then
        shows ``update avail.``. Offline: tried again at the next check."""
        from tui.app import wiring

        try:
            outdated = wiring.check_updates(self.services)
        except ModelDeckError as exc:
            self.log.warning(f"update check: {exc}")
            return
        self.app.call_from_thread(self._mark_updates, outdated)

    def _mark_updates(self, outdated: set[str]) -> None:
        """Set or clear each row's update marker in place (download states stay as they are)."""
        if not self.is_attached:
            return
        table = self.table
        changed = []
        for row in table.all_rows.values():
            wanted = row.model_id in outdated
            if row.update != wanted:
                row.update = wanted
                changed.append(row)
        if changed:
            table.update_rows(changed)

    # -- filter and status line ----------------------------------------------------------------

    def show_filter(self) -> None:
        """Show the filter line and type into it."""
        filter_input = self.query_one("#filter", FilterInput)
        filter_input.add_class("-active")
        self.screen.set_focus(filter_input)  # at once: keys typed ahead reach it

    @on(FilterInput.Left)
    def _filter_left(self, message: FilterInput.Left) -> None:
        self.leave_filter(clear=message.clear)

    def leave_filter(self, *, clear: bool) -> None:
        """Back to the table; ``clear`` empties and hides the filter (else an empty one hides)."""
        filter_input = self.query_one("#filter", FilterInput)
        if clear:
            filter_input.value = ""
            self.table.filter_text = ""
        if not filter_input.value:
            filter_input.remove_class("-active")
        self.screen.set_focus(self.table)

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.table.filter_text = event.value

    @on(ModelTable.ViewChanged, "#models")
    def _view_changed(self, message: ModelTable.ViewChanged) -> None:
        self._show_status(message.shown, message.total, message.description)

    def _show_status(
        self, shown: int | None = None, total: int | None = None, description: str | None = None
    ) -> None:
        table = self.table
        shown = len(table.visible_keys) if shown is None else shown
        total = len(table.all_rows) if total is None else total
        description = table.describe() if description is None else description
        text = f"{shown} of {total} models"
        self.query_one("#table-status", Static).update(
            f"{text} | {clean_line(description)}" if description else text, layout=False
        )
