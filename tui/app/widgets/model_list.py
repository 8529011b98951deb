"""The model list: catalog entries and installed models, one line each, on Textual's line API.

A ``ScrollView`` with its own row store: ``render_line`` draws the header or one row from the
store, so only the lines on screen are ever rendered, whatever the row count. Each row's line
is cached as a ``Strip`` keyed by what it shows (its cells, the column layout, the styles, the
cursor), so an unchanged line is never drawn twice, and a change repaints only its own line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.app.views import (
    COLUMN_KEYS,
    COLUMNS,
    SORTABLE,
    STATUS_FILTERS,
    ModelRow,
    fit_columns,
    fold,
    format_ago,
    row_cells,
    select_rows,
)

USED_REFRESH_S = 30.0  # how often the "Used" times on screen are re-formatted
STRIP_CACHE = 1024  # rendered lines kept (a few screens' worth)
PADDING = 1  # blank cells on each side of a column

_USED = COLUMN_KEYS.index("last_used")
_LABELS = {column.key: column.label for column in COLUMNS}
_CELL = {key: index for index, key in enumerate(COLUMN_KEYS)}

# Row status -> the component class that colours its Status cell (others: plain).
STATUS_CLASSES = {
    "loaded": "model-list--loaded",
    "loading": "model-list--loading",
    "unloading": "model-list--loading",
    "queued": "model-list--downloading",
    "downloading": "model-list--downloading",
    "paused": "model-list--downloading",
    "failed": "model-list--failed",
}
UPDATE_CLASS = "model-list--update"  # an installed model the Hub has a newer commit of


class _Look(NamedTuple):
    """The Rich styles of one render pass (hashable: part of every cached line's key)."""

    base: Style
    header: Style
    even: Style
    odd: Style
    cursor: Style
    status: tuple[tuple[str, Style], ...]
    ascii: bool


class ModelList(ScrollView, can_focus=True, inherit_bindings=False):
    """Every model in one list, keyed by :attr:`ModelRow.key`.

    Feed it with :meth:`set_rows` (the full set: rows kept are updated in place, new or removed
    ones rebuild the view) and :meth:`update_rows` / :meth:`update_row` (in place: only the
    lines of rows on screen whose cells changed are repainted). Filtering and sorting select
    over all rows; only the lines on screen are ever rendered.

    Columns have fixed widths fitted to the width (:func:`~tui.app.views.fit_columns`): the
    least important hide when it is narrow and ID takes the free cells. Hidden columns keep
    their cells (:meth:`get_cell` still answers). The "Used" times on screen are re-formatted
    every ``used_refresh`` seconds.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "activate", "Open"),
        Binding("d", "delete", "Delete"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse", show=False),
        Binding("i", "toggle_installed", "Installed"),
        Binding("f", "cycle_status_filter", "Status filter", show=False),
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "model-list--header",
        "model-list--cursor",
        "model-list--even-row",
        "model-list--loaded",
        "model-list--loading",
        "model-list--downloading",
        "model-list--failed",
        UPDATE_CLASS,
    }

    DEFAULT_CSS = """
    ModelList {
        background: $surface;
        color: $foreground;
        overflow-x: hidden;
        &:focus {
            background-tint: $foreground 5%;
            & > .model-list--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .model-list--header {
                background-tint: $foreground 5%;
            }
        }
        & > .model-list--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .model-list--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .model-list--even-row {
            background: $surface-lighten-1 50%;
        }
        &:dark > .model-list--even-row {
            background: $surface-darken-1 40%;
        }
        & > .model-list--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        & > .model-list--loaded {
            color: $text-success;
        }
        & > .model-list--loading, & > .model-list--downloading {
            color: $text-accent;
        }
        & > .model-list--failed {
            color: $text-error;
        }
        & > .model-list--update {
            color: $text-warning;
        }
    }
    """

    filter_text: reactive[str] = reactive("", init=False)
    status_filter: reactive[str] = reactive("all", init=False)
    sort_column: reactive[str | None] = reactive(None, init=False)
    sort_reverse: reactive[bool] = reactive(False, init=False)

    @dataclass
    class Activated(Message):
        """Enter on a row: load an installed model, download an available one."""

        model_list: ModelList
        row: ModelRow

        @property
        def control(self) -> ModelList:
            """The list that sent the message."""
            return self.model_list

    @dataclass
    class DeleteRequested(Message):
        """``d`` on an installed row (the App asks before anything is deleted)."""

        model_list: ModelList
        row: ModelRow

        @property
        def control(self) -> ModelList:
            """The list that sent the message."""
            return self.model_list

    @dataclass
    class ViewChanged(Message):
        """Filter, status filter or sort changed, or a row was added (for the status line)."""

        model_list: ModelList
        shown: int
        total: int
        description: str

        @property
        def control(self) -> ModelList:
            """The list that sent the message."""
            return self.model_list

    def __init__(
        self,
        *,
        now: Callable[[], float] = time.time,
        used_refresh: float = USED_REFRESH_S,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self._now = now
        self._used_refresh = used_refresh
        self._used_now = 0.0  # the latest time "Used" texts were formatted for
        self._rows: dict[str, ModelRow] = {}
        self._cells: dict[str, tuple[str, ...]] = {}
        self._order: list[str] = []  # visible keys, in order
        self._positions: dict[str, int] | None = None  # key -> index in _order (built lazily)
        self._cursor = 0
        self._basis: tuple[str, str, str | None, bool] | None = None
        self._layout: tuple[tuple[str, int], ...] = ()  # shown columns and their widths
        self._strips: LRUCache[tuple[object, ...], Strip] = LRUCache(STRIP_CACHE)
        self._look: _Look | None = None  # styles of the render pass under way

    def on_mount(self) -> None:
        self._update_geometry()
        if self._used_refresh > 0:
            self.set_interval(self._used_refresh, self.refresh_used, name="used-refresh")

    def on_resize(self) -> None:
        self._update_geometry()
        self._refresh_used_on_screen()  # taller: more rows on screen

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()  # new styles make new keys anyway: free the old lines

    # -- the store -------------------------------------------------------------------------

    @property
    def all_rows(self) -> dict[str, ModelRow]:
        """All rows by key, visible or not."""
        return self._rows

    @property
    def visible_keys(self) -> list[str]:
        """Keys of the rows that pass the filters, in order."""
        return list(self._order)

    @property
    def row_count(self) -> int:
        """How many rows pass the filters."""
        return len(self._order)

    @property
    def used_refresh(self) -> float:
        """Seconds between re-formats of the "Used" times on screen (0: never)."""
        return self._used_refresh

    @property
    def shown_columns(self) -> tuple[tuple[str, int], ...]:
        """The columns shown, as ``(key, width)`` (cells, padding not included)."""
        return self._layout

    @property
    def cursor_row(self) -> int:
        """Index of the cursor row in :attr:`visible_keys`."""
        return self._cursor

    def get_model_row(self, key: str) -> ModelRow | None:
        """The row with this key."""
        return self._rows.get(key)

    def current_row(self) -> ModelRow | None:
        """The row under the cursor."""
        if not 0 <= self._cursor < len(self._order):
            return None
        return self._rows.get(self._order[self._cursor])

    def get_cell(self, key: str, column: str) -> str:
        """The text a row shows in ``column`` (also for hidden columns), before it is cut to
        the column's width. Raises ``KeyError`` for an unknown row or column."""
        return self._cells[key][_CELL[column]]

    def get_row_index(self, key: str) -> int:
        """Index of a visible row in :attr:`visible_keys`; ``KeyError`` if it is filtered out
        or unknown."""
        positions = self._positions
        if positions is None:
            positions = self._positions = {k: i for i, k in enumerate(self._order)}
        return positions[key]

    def set_rows(self, rows: Iterable[ModelRow]) -> None:
        """Replace the row set: rows kept update in place; new or removed ones rebuild."""
        now = self._used_time()
        new_rows = {r.key: r for r in rows}
        if self._rows and new_rows.keys() == self._rows.keys():
            self.update_rows(new_rows.values())
            return
        self._rows = new_rows
        self._cells = {k: row_cells(r, now) for k, r in new_rows.items()}
        self._basis = None
        self._rebuild()

    def update_rows(self, rows: Iterable[ModelRow]) -> None:
        """Update rows in place: a row on screen whose cells changed repaints its line."""
        now = self._used_time()
        for row in rows:
            self._update_one(row, now)

    def update_row(self, row: ModelRow) -> None:
        """Update one row in place (appended at the end when new and it passes the filters)."""
        self._update_one(row, self._used_time())

    def _used_time(self) -> float:
        """``now()`` for formatting rows; remembered for re-formatting "Used" cells later."""
        now = self._used_now = max(self._used_now, self._now())
        return now

    def _update_one(self, row: ModelRow, now: float) -> None:
        key = row.key
        cells = row_cells(row, now)
        old = self._cells.get(key)
        old_row = self._rows.get(key)
        self._rows[key] = row
        self._cells[key] = cells
        if old is None:  # a new row: appended (sorted at the next rebuild)
            if select_rows([row], self.filter_text, self.status_filter):
                self._order.append(key)
                if self._positions is not None:
                    self._positions[key] = len(self._order) - 1
                self._update_geometry()
                self._refresh_row(len(self._order) - 1)
                self._post_view_changed()
            return
        if old != cells or old_row is None or self._status_class(old_row) != self._status_class(
            row
        ):
            self._refresh_key(key)

    def _refresh_key(self, key: str) -> None:
        """Repaint the line of a row if it is visible and on screen."""
        if not self._on_screen_rows():
            return
        try:
            index = self.get_row_index(key)
        except KeyError:
            return  # filtered out: its cells are enough
        self._refresh_row(index)

    def _on_screen_rows(self) -> range:
        """Indexes in :attr:`visible_keys` of the rows on screen."""
        top = self.scroll_offset.y
        body = max(0, self.scrollable_content_region.height - 1)
        return range(top, min(len(self._order), top + body))

    def _refresh_row(self, index: int) -> None:
        """Repaint the line of the row at ``index`` if it is on screen (nothing else)."""
        if index in self._on_screen_rows():
            self.refresh_line(index + 1)  # virtual line: the header is line 0

    # -- the "Used" column -------------------------------------------------------------------

    def refresh_used(self) -> None:
        """Re-format the "Used" times of the rows on screen (the timer's tick)."""
        self._used_time()
        self._refresh_used_on_screen()

    def _refresh_used_on_screen(self) -> None:
        """Bring the "Used" cells of the rows on screen up to the last tick's time; repaint the
        lines whose text changed, nothing else. A few dozen rows: cheap enough to run on every
        scroll and rebuild, so a row scrolled to never shows a time older than the last tick."""
        now = self._used_now
        if not now:
            return
        rows, cells_of, order = self._rows, self._cells, self._order
        for index in self._on_screen_rows():
            key = order[index]
            when = rows[key].last_used_at
            if not when:
                continue
            text = format_ago(when, now)
            cells = cells_of[key]
            if cells[_USED] != text:
                cells_of[key] = (*cells[:_USED], text, *cells[_USED + 1:])
                self.refresh_line(index + 1)

    # -- filter, sort, view ------------------------------------------------------------------

    def describe(self) -> str:
        """``installed | filter "llama" | sort size desc`` (empty when nothing applies)."""
        parts = []
        if self.status_filter != "all":
            parts.append(self.status_filter)
        if self.filter_text:
            parts.append(f'filter "{self.filter_text}"')
        if self.sort_column:
            parts.append(f"sort {self.sort_column}{' desc' if self.sort_reverse else ''}")
        return " | ".join(parts)

    def _rebuild(self) -> None:
        """Show the rows that pass the filters, in sort order, from the top (the cursor stays
        on its row if that row is still shown)."""
        current = self.current_row()
        basis = (self.filter_text, self.status_filter, self.sort_column, self.sort_reverse)
        last = self._basis
        rows = self._rows
        if (
            last is not None
            and basis[1:] == last[1:] == ("all", *basis[2:])
            and fold(basis[0]).startswith(fold(last[0]))
        ):
            # Typing more narrows the previous matches, which are already sorted.
            chosen = select_rows([rows[k] for k in self._order], self.filter_text)
        else:
            chosen = select_rows(rows.values(), *basis)
        self._basis = basis
        self._order = [r.key for r in chosen]
        self._positions = None
        cursor = 0
        if current is not None:
            try:
                cursor = self.get_row_index(current.key)
            except KeyError:
                cursor = 0
        self._cursor = cursor
        self._update_geometry()
        self.scroll_to(y=0, animate=False, force=True)
        self._scroll_to_cursor()
        self.refresh()
        self._refresh_used_on_screen()
        self._post_view_changed()

    def _post_view_changed(self) -> None:
        self.post_message(
            self.ViewChanged(self, len(self._order), len(self._rows), self.describe())
        )


    def watch_filter_text(self) -> None:
        self._rebuild()

    def watch_status_filter(self) -> None:
        self._rebuild()

    def watch_sort_column(self) -> None:
        self._rebuild()

    def watch_sort_reverse(self) -> None:
        self._rebuild()

    # -- columns ---------------------------------------------------------------------------

    def _columns_width(self) -> int:
        """Cells the columns may fill: the content width less a vertical scrollbar if the rows
        need one (predicted from the row count: known before the next layout shows it)."""
        width, height = self.size
        styles = self.styles
        overflow = styles.overflow_y
        if overflow == "scroll" or (
            overflow == "auto"
            and (len(self._order) + 1 > height or styles.scrollbar_gutter == "stable")
        ):
            width -= styles.scrollbar_size_vertical
        return width

    def _update_geometry(self) -> None:
        """Fit the columns to the width (a repaint only if that changed) and set the
        scrollable size: the columns' width, a header line plus one line per visible row
        (a layout pass only when the row count changed)."""
        available = self._columns_width()
        if available > 0:
            layout = fit_columns(available, PADDING)
            if layout != self._layout:
                self._layout = layout
                self.refresh()
        width = sum(w + 2 * PADDING for _, w in self._layout)
        size = Size(width, len(self._order) + 1)
        if size != self.virtual_size:
            self.virtual_size = size

    # -- the cursor ------------------------------------------------------------------------

    def move_cursor(self, *, row: int | None = None, animate: bool = False) -> None:
        """Put the cursor on the row at ``row`` (clamped), scrolled into view."""
        if row is None or not self._order:
            return
        index = max(0, min(row, len(self._order) - 1))
        old = self._cursor
        self._cursor = index
        if index != old:
            self._refresh_row(old)
        self._scroll_to_cursor(animate)
        self._refresh_row(index)

    def _body_height(self) -> int:
        """Rows on screen at once (the header takes a line)."""
        return max(1, self.scrollable_content_region.height - 1)

    def _scroll_to_cursor(self, animate: bool = False) -> None:
        top = self.scroll_offset.y
        body = self._body_height()
        # ``force``: the rows may have just arrived, before a layout shows the scrollbar.
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=animate, force=True)
        elif self._cursor >= top + body:
            self.scroll_to(y=self._cursor - body + 1, animate=animate, force=True)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._refresh_used_on_screen()

    def action_cursor_up(self) -> None:
        """Cursor one row up."""
        self.move_cursor(row=self._cursor - 1)

    def action_cursor_down(self) -> None:
        """Cursor one row down."""
        self.move_cursor(row=self._cursor + 1)

    def action_page_up(self) -> None:
        """Cursor one screen up."""
        self.move_cursor(row=self._cursor - self._body_height())

    def action_page_down(self) -> None:
        """Cursor one screen down."""
        self.move_cursor(row=self._cursor + self._body_height())

    def action_first(self) -> None:
        """Cursor on the first row."""
        self.move_cursor(row=0)

    def action_last(self) -> None:
        """Cursor on the last row."""
        self.move_cursor(row=len(self._order) - 1)

    def on_click(self, event: events.Click) -> None:
        """A click on a row selects it; on the header, sorts by that column (again: reverse)."""
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            column = self._column_at(offset.x)
            if column is None:
                return
            if column == self.sort_column:
                self.sort_reverse = not self.sort_reverse
            else:
                self.sort_column = column
            return
        index = self.scroll_offset.y + offset.y - 1
        if index < len(self._order):
            self.move_cursor(row=index)

    def _column_at(self, x: int) -> str | None:
        """The column under cell ``x`` of a line."""
        left = 0
        for key, width in self._layout:
            left += width + 2 * PADDING
            if x < left:
                return key
        return None

    # -- actions ---------------------------------------------------------------------------

    def action_cycle_sort(self) -> None:
        """Next sortable column (off after the last)."""
        order: Sequence[str | None] = (None, *SORTABLE)
        index = order.index(self.sort_column) if self.sort_column in order else 0
        self.sort_column = order[(index + 1) % len(order)]

    def action_reverse_sort(self) -> None:
        """Flip the sort direction."""
        self.sort_reverse = not self.sort_reverse

    def action_toggle_installed(self) -> None:
        """Installed-only on/off."""
        self.status_filter = "all" if self.status_filter == "installed" else "installed"

    def action_cycle_status_filter(self) -> None:
        """all → installed → downloads → available → all."""
        names = list(STATUS_FILTERS)
        self.status_filter = names[(names.index(self.status_filter) + 1) % len(names)]

    def action_activate(self) -> None:
        """Post :class:`Activated` for the cursor row."""
        row = self.current_row()
        if row is not None:
            self.post_message(self.Activated(self, row))

    def action_delete(self) -> None:
        """Post :class:`DeleteRequested` for an installed cursor row (the App confirms)."""
        row = self.current_row()
        if row is None:
            return
        if not row.installed:
            self.notify(f"{row.cli_id} is not installed", severity="warning", markup=False)
            return
        self.post_message(self.DeleteRequested(self, row))

    # -- rendering -------------------------------------------------------------------------

    def _styles_now(self) -> _Look:
        """The component styles, read once per render pass."""
        component = self.get_component_rich_style
        status = tuple(
            (name, component(name, partial=True))
            for name in sorted({*STATUS_CLASSES.values(), UPDATE_CLASS})
        )
        base = self.rich_style
        return _Look(
            base=base,
            header=component("model-list--header"),
            even=component("model-list--even-row"),
            odd=base,
            cursor=component("model-list--cursor"),
            status=status,
            ascii=self.app.has_class("-ascii"),
        )

    def render_lines(self, crop: Region) -> list[Strip]:
        self._look = self._styles_now()
        try:
            return super().render_lines(crop)
        finally:
            self._look = None

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the widget: the header, a row, or blank below the last row."""
        look = self._look or self._styles_now()
        width = self.size.width
        if y == 0:
            return self._header_strip(look, width)
        index = self.scroll_offset.y + y - 1
        if not 0 <= index < len(self._order):
            return Strip.blank(width, look.base)
        key = self._order[index]
        row = self._rows[key]
        cursor = index == self._cursor
        status = None if cursor else self._status_class(row)
        cache_key = (self._cells[key], self._layout, look, cursor, index % 2, status, width)
        strip = self._strips.get(cache_key)
        if strip is None:
            strip = self._strips[cache_key] = self._row_strip(
                self._cells[key], look, cursor, index % 2 == 0, status, width
            )
        return strip

    @staticmethod
    def _status_class(row: ModelRow) -> str | None:
        if row.update and row.status == "installed":
            return UPDATE_CLASS
        return STATUS_CLASSES.get(row.status)

    def _row_strip(
        self,
        cells: tuple[str, ...],
        look: _Look,
        cursor: bool,
        even: bool,
        status: str | None,
        width: int,
    ) -> Strip:
        """One row's line: each shown cell cut or padded to its column, in the row's style
        (the Status cell coloured by the row's status)."""
        style = (look.even if even else look.odd) + (look.cursor if cursor else Style())
        pad = " " * PADDING
        texts = [
            f"{pad}{_fit(cells[_CELL[key]], cell_width, look.ascii)}{pad}"
            for key, cell_width in self._layout
        ]
        segments: list[Segment] = []
        if status is not None and self._layout and self._layout[0][0] == "status":
            segments.append(Segment(texts.pop(0), style + dict(look.status)[status]))
        segments.append(Segment("".join(texts), style))
        return Strip(segments).adjust_cell_length(width, style).simplify()

    def _header_strip(self, look: _Look, width: int) -> Strip:
        cache_key = ("header", self._layout, look, self.sort_column, self.sort_reverse, width)
        strip = self._strips.get(cache_key)
        if strip is None:
            pad = " " * PADDING
            texts = []
            for key, cell_width in self._layout:
                label = _LABELS[key]
                if key == self.sort_column:
                    marker = ("v" if self.sort_reverse else "^") if look.ascii else (
                        "↓" if self.sort_reverse else "↑")
                    label = set_cell_size(label, max(0, cell_width - 1)).rstrip() + marker
                texts.append(f"{pad}{set_cell_size(label, cell_width)}{pad}")
            strip = Strip([Segment("".join(texts), look.header)])
            strip = strip.adjust_cell_length(width, look.header).simplify()
            self._strips[cache_key] = strip
        return strip


def _fit(text: str, width: int, ascii: bool) -> str:
    """``text`` padded or cut to ``width`` cells; a cut text ends in ``…`` (``~`` in ASCII
    mode) so a shortened id is never taken for a whole one."""
    if cell_len(text) <= width:
        return set_cell_size(text, width)
    if width <= 1:
        return set_cell_size(text, width)
    return set_cell_size(text, width - 1) + ("~" if ascii else "…")


ModelTable = ModelList  # the name the App and its tests used for the DataTable it replaces
