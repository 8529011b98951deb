"""The model table: catalog entries and installed models in one keyed ``DataTable``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from rich.cells import set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.color import Color
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import DataTable
from textual.widgets.data_table import Column as DataTableColumn
from textual.widgets.data_table import ColumnKey, DuplicateKey, Row, RowKey

from tui.app.views import (
    COLUMN_KEYS,
    COLUMNS,
    SORTABLE,
    STATUS_FILTERS,
    ModelRow,
    fit_columns,
    format_ago,
    row_cells,
    select_rows,
)


def _cell(value: str) -> Text:
    """A cell as plain ``Text``: no markup parsing (names may contain ``[``), no wrapping."""
    return Text(value, no_wrap=True, end="")


PAGE = 400  # rows put into the DataTable at a time
PAGE_MARGIN = 60  # page in when the cursor/viewport is this close to the end
USED_REFRESH_S = 30.0  # how often the "Used" times on screen are re-formatted

_USED = COLUMN_KEYS.index("last_used")
# DataTable internals the fast paths (batched rows, hidden columns) rely on.
_INTERNALS = ("_row_locations", "_column_locations", "_data", "_new_rows", "_update_count")
_NO_DROP = tuple(dataclasses.replace(column, drop=0) for column in COLUMNS)


def _padded(text: str, width: int, padding: int) -> str:
    """``text`` cropped/padded to a ``width``-cell column between ``padding`` spaces."""
    pad = " " * padding
    return f"{pad}{set_cell_size(text, max(0, width - 2 * padding))}{pad}"


class _MemoStyles:
    """A component's styles with ``rich_style`` computed once (other attributes pass through)."""

    def __init__(self, styles: Any) -> None:
        self._styles = styles
        self.rich_style = styles.rich_style

    def __getattr__(self, name: str) -> Any:
        return getattr(self._styles, name)


class ModelTable(DataTable[str]):
    """Every model in one table, keyed by :attr:`ModelRow.key`.

    Feed it with :meth:`set_rows` (the full set; diffed) and :meth:`update_rows` (in place with
    ``update_cell``). Filtering and sorting select over all rows but put only a page of them
    into the ``DataTable`` (more are paged in on scroll), and one-line plain cells take a fast
    render path, so a keystroke costs about the same with 10,000 rows as with 100.

    Columns have fixed widths fitted to the table's width (:func:`~tui.app.views.fit_columns`):
    the least important hide when it is narrow and Name takes the free cells. Hidden columns
    keep their cells (``get_cell`` still answers), so showing them again is instant. The
    "Used" times on screen are re-formatted every ``used_refresh`` seconds.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "activate", "Open"),
        Binding("d", "delete", "Delete"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse", show=False),
        Binding("i", "toggle_installed", "Installed"),
        Binding("f", "cycle_status_filter", "Status filter", show=False),
    ]

    filter_text: reactive[str] = reactive("", init=False)
    status_filter: reactive[str] = reactive("all", init=False)
    sort_column: reactive[str | None] = reactive(None, init=False)
    sort_reverse: reactive[bool] = reactive(False, init=False)

    class _TableMessage(Message):
        def __init__(self, table: ModelTable) -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> ModelTable:
            """The table that sent the message."""
            return self.table

    class Activated(_TableMessage):
        """Enter on a row: load an installed model, download an available one."""

        def __init__(self, table: ModelTable, row: ModelRow) -> None:
            super().__init__(table)
            self.row = row

    class DeleteRequested(_TableMessage):
        """``d`` on an installed row."""

        def __init__(self, table: ModelTable, row: ModelRow) -> None:
            super().__init__(table)
            self.row = row

    class ViewChanged(_TableMessage):
        """Filter, status filter or sort changed (for the status line)."""

        def __init__(self, table: ModelTable, shown: int, total: int, description: str) -> None:
            super().__init__(table)
            self.shown = shown
            self.total = total
            self.description = description

    def __init__(
        self,
        *,
        now: Callable[[], float] = time.time,
        used_refresh: float = USED_REFRESH_S,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(
            id=id, classes=classes, cursor_type="row", zebra_stripes=True, cell_padding=1
        )
        self._now = now
        self._used_refresh = used_refresh
        self._used_now = 0.0  # the latest time "Used" texts were formatted for
        self._layout: tuple[tuple[str, int], ...] = ()  # shown columns and widths
        self._all_columns: dict[str, DataTableColumn] = {}
        self._column_keys: list[ColumnKey] = []
        self._rows: dict[str, ModelRow] = {}
        self._cells: dict[str, tuple[str, ...]] = {}
        self._order: list[str] = []
        self._loaded = 0
        self._paging = True
        self._basis: tuple[str, str, str | None, bool] | None = None
        self._texts: dict[str, list[Text]] = {}  # cells as Text, made when first paged in
        self._row_style_cache: dict[tuple[object, ...], Style] = {}
        self._fast_ctx: tuple[Any, ...] | None = None
        self._style_memo: Style | None = None
        self._pass_memo: dict[Any, Any] = {}  # per render pass (see render_lines)
        self._memo_active = False

    def on_mount(self) -> None:
        for column in COLUMNS:
            self.add_column(column.label, key=column.key, width=column.width)
        # Every column, hidden ones too (their cells stay in the rows' cell dicts).
        self._all_columns = {column.key.value: column for column in self.ordered_columns}
        self._column_keys = [column.key for column in self.ordered_columns]
        if self._used_refresh > 0:
            self.set_interval(self._used_refresh, self.refresh_used, name="used-refresh")

    def on_resize(self) -> None:
        if self._fit_columns():
            self._update_virtual_size()
        self._refresh_used_on_screen()  # taller: more rows on screen

    # -- feeding ---------------------------------------------------------------------------

    @property
    def all_rows(self) -> dict[str, ModelRow]:
        """All rows by key, visible or not."""
        return self._rows

    @property
    def visible_keys(self) -> list[str]:
        """Keys of the rows that pass the filters, in order (loaded into the table or not)."""
        return list(self._order)

    @property
    def used_refresh(self) -> float:
        """Seconds between re-formats of the "Used" times on screen (0: never)."""
        return self._used_refresh

    @property
    def loaded_count(self) -> int:
        """How many of :attr:`visible_keys` are in the ``DataTable`` now."""
        return self._loaded

    def get_model_row(self, key: str) -> ModelRow | None:
        """The row with this key."""
        return self._rows.get(key)

    def current_row(self) -> ModelRow | None:
        """The row under the cursor."""
        if not 0 <= self.cursor_row < self._loaded:
            return None
        return self._rows.get(self._order[self.cursor_row])

    def set_rows(self, rows: Iterable[ModelRow]) -> None:
        """Replace the row set: rows kept update in place; new or removed ones rebuild."""
        now = self._used_time()
        new_rows = {r.key: r for r in rows}
        same_keys = new_rows.keys() == self._rows.keys()
        if same_keys and self._rows:
            self.update_rows(new_rows.values())
            return
        self._rows = new_rows
        self._cells = {k: row_cells(r, now) for k, r in new_rows.items()}
        self._texts.clear()
        self._basis = None
        self._rebuild()

    def update_rows(self, rows: Iterable[ModelRow]) -> None:
        """Update rows in place (only changed cells are touched)."""
        now = self._used_time()
        with self.app.batch_update():
            for row in rows:
                self._update_one(row, now)

    def update_row(self, row: ModelRow) -> None:
        """Update one row in place (added at the end when new)."""
        self._update_one(row, self._used_time())

    def _used_time(self) -> float:
        """``now()`` for formatting rows; remembered for re-formatting "Used" cells later."""
        now = self._used_now = max(self._used_now, self._now())
        return now

    def _update_one(self, row: ModelRow, now: float) -> None:
        key = row.key
        cells = row_cells(row, now)
        old = self._cells.get(key)
        self._rows[key] = row
        self._cells[key] = cells
        self._texts.pop(key, None)
        if old is None:  # a new row: appended (re-sorted at the next rebuild)
            if self._matches(row):
                self._order.append(key)
                if self._loaded == len(self._order) - 1:
                    self._add_keyed_rows([key])
                    self._loaded += 1
            return
        if key not in self.rows:
            return  # filtered out or not paged in yet: the cached cells are enough
        for column, before, after in zip(COLUMN_KEYS, old, cells, strict=True):
            if before != after:
                self._set_cell(key, column, _cell(after))

    def _set_cell(self, key: str, column: str, value: Text) -> None:
        """Put a cell of a row that is in the table (``update_cell`` unless it is hidden)."""
        if column in self.columns:
            self.update_cell(key, column, value)
        else:  # hidden: only the data, shown when the column comes back
            self._data[RowKey(key)][ColumnKey(column)] = value

    def refresh_used(self) -> None:
        """Re-format the "Used" times of the rows on screen (the timer's tick)."""
        self._used_time()
        self._refresh_used_on_screen()

    def _refresh_used_on_screen(self) -> None:
        """Bring the "Used" cells of the rows on screen up to :attr:`_used_now`.

        A few dozen rows, only changed cells are updated: cheap enough to run on scrolls and
        rebuilds, so rows paged in or scrolled to never show a time older than the last tick.
        """
        if not self._paging:  # mid-rebuild: the table is being cleared
            return
        top = max(0, int(self.scroll_y))
        header = self.header_height if self.show_header else 0
        bottom = min(self._loaded, top + self.size.height - header)
        if top >= bottom or not self._used_now:
            return
        now, rows, cells_of = self._used_now, self._rows, self._cells
        changed: list[tuple[str, str]] = []
        for key in self._order[top:bottom]:
            when = rows[key].last_used_at
            if when:
                text = format_ago(when, now)
                cells = cells_of[key]
                if cells[_USED] != text:
                    replaced = list(cells)
                    replaced[_USED] = text
                    cells_of[key] = tuple(replaced)
                    changed.append((key, text))
        if not changed:
            return
        with self.app.batch_update():
            for key, text in changed:
                texts = self._texts.get(key)
                cell = _cell(text)
                if texts is not None:
                    texts[_USED] = cell
                self._set_cell(key, "last_used", cell)

    def _matches(self, row: ModelRow) -> bool:
        return bool(select_rows([row], self.filter_text, self.status_filter))

    def _rebuild(self) -> None:
        """Show the rows that pass the filters, in sort order (keeps the cursor row).

        Only the first :data:`PAGE` rows go into the ``DataTable``; more are paged in as the
        cursor or the scroll position nears the end, so a keystroke costs the same with
        10,000 rows as with 500.
        """
        current = self.current_row()
        basis = (self.filter_text, self.status_filter, self.sort_column, self.sort_reverse)
        last = self._basis
        rows = self._rows
        if (
            last is not None
            and basis[1:] == last[1:] == ("all", *basis[2:])
            and basis[0].lower().startswith(last[0].lower())
        ):
            # Typing more narrows the previous matches, which are already sorted.
            chosen = select_rows([rows[k] for k in self._order], self.filter_text)
        else:
            chosen = select_rows(rows.values(), *basis)
        self._basis = basis
        self._order = [r.key for r in chosen]
        want = PAGE
        if current is not None:
            try:
                want = max(want, self._order.index(current.key) + PAGE)
            except ValueError:
                current = None
        with self.app.batch_update():
            self._paging = False  # clear() resets the scroll position: no paging meanwhile
            try:
                self.clear()
            finally:
                self._paging = True
            self._loaded = 0
            self._load_until(want)
            if current is not None:
                self.move_cursor(row=self.get_row_index(current.key), animate=False)
            self._refresh_used_on_screen()
        self.post_message(
            self.ViewChanged(self, len(self._order), len(self._rows), self.describe())
        )

    def _load_until(self, count: int) -> None:
        count = min(count, len(self._order))
        if count <= self._loaded:
            return
        self._add_keyed_rows(self._order[self._loaded:count])
        self._loaded = count

    def _maybe_page_in(self) -> None:
        """Load the next page when the cursor or the viewport nears the last loaded row."""
        if not self._paging or self._loaded >= len(self._order):
            return
        bottom = max(self.cursor_row, int(self.scroll_y) + self.size.height)
        if bottom >= self._loaded - PAGE_MARGIN:
            self._load_until(self._loaded + PAGE)

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self) -> None:
        self._maybe_page_in()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._maybe_page_in()
        self._refresh_used_on_screen()

    def _row_texts(self, key: str) -> list[Text]:
        texts = self._texts.get(key)
        if texts is None:
            texts = self._texts[key] = [_cell(c) for c in self._cells[key]]
        return texts

    def _add_keyed_rows(self, keys: Sequence[str]) -> None:
        """Append many one-line rows at once.

        ``DataTable.add_row`` re-validates the cursor and recomputes the column order for
        every row (~0.1 ms each: a second per 10,000 rows). This does the same bookkeeping
        once per batch; it relies on DataTable internals, so it falls back to ``add_row``
        when they are not there (a Textual upgrade).
        """
        if not keys or not self._has_internals():
            for key in keys:
                self.add_row(*self._row_texts(key), key=key)
            return
        column_keys = self._column_keys  # hidden columns too: their cells wait in ``_data``
        locations = self._row_locations
        data = self._data
        rows = self.rows
        new_rows = self._new_rows
        index = self.row_count
        for key in keys:
            row_key = RowKey(key)
            if row_key in locations:
                raise DuplicateKey(f"The row key {row_key!r} already exists.")
            locations[row_key] = index
            data[row_key] = dict(zip(column_keys, self._row_texts(key), strict=True))
            rows[row_key] = Row(row_key, 1)
            new_rows.add(row_key)
            index += 1
        self._require_update_dimensions = True
        self._update_count += 1
        self.cursor_coordinate = self.cursor_coordinate
        if index == len(keys) and self.show_cursor and self.cursor_type != "none":
            self._highlight_cursor()
        self.check_idle()
        self.refresh()

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> list[list[Segment]]:
        """Fast path for our one-line plain-``Text`` cells (a few µs instead of a Rich render).

        Produces what ``DataTable`` would: the text cropped/padded to the column, between
        ``cell_padding`` spaces, styled ``base + component + post``. Anything else (header,
        labels, taller rows, styled text) goes to the stock renderer.
        """
        ctx = self._fast_ctx if self.__dict__.get("_memo_active") else None
        if ctx is None:
            ctx = self._render_context()
        pseudo, fixed_rows, fixed_columns, show_cursor, show_hover, fg_css, bg_css, padding = ctx
        is_header = row_index == -1
        if column_index < 0 or row_index < -1 or 0 <= row_index < fixed_rows:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._header_row_key if is_header else self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        cache_key = (
            row_key, column_key, base_style, cursor, hover, show_hover, self._update_count, pseudo
        )
        cache = self._cell_render_cache
        lines = cache.get(cache_key)
        if lines is not None:
            return lines
        if is_header:
            column = self.columns.get(column_key) if column_key is not None else None
            value = column.label if column is not None else None
            height = self.header_height
        else:
            value = self._data.get(row_key, {}).get(column_key) if row_key is not None else None
            row = self.rows.get(row_key) if row_key is not None else None
            height = row.height if row is not None else 0
        if (
            not isinstance(value, Text) or value.spans or value.style or height != 1
            or column_index < fixed_columns
        ):
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        component_style, post_style = self._get_styles_to_render_cell(
            is_header, False, False, hover, cursor, show_cursor, show_hover, fg_css, bg_css
        )
        style = base_style + component_style + post_style
        style += Style.from_meta({"row": row_index, "column": column_index})
        lines = [[Segment(_padded(value.plain, width, padding), style)]]
        cache[cache_key] = lines
        return lines

    def _render_line_in_row(
        self,
        row_key: RowKey,
        line_no: int,
        base_style: Style,
        cursor_location: Any,
        hover_location: Any,
    ) -> tuple[list[list[Segment]], list[list[Segment]]]:
        """Fast path for a data row of plain one-line cells: the whole row as one segment.

        With a row cursor every cell of a row has the same style, so the row is one string
        (each cell padded to its column) in one style plus the stock "extend" segment, instead
        of eight cell renders and sixteen style additions. The meta says ``column`` 0 for the
        whole row (a click selects the row either way). Header, labels, fixed columns and
        styled or taller cells go to the stock renderer.
        """
        fast = None
        if (
            self.__dict__.get("_memo_active")
            and line_no == 0
            and self.cursor_type == "row"
            and not self.fixed_columns
            and row_key is not self._header_row_key
            and not (self._labelled_row_exists and self.show_row_labels)
        ):
            fast = self._render_plain_row(row_key, base_style, cursor_location, hover_location)
        if fast is None:
            return super()._render_line_in_row(
                row_key, line_no, base_style, cursor_location, hover_location
            )
        return fast

    def _render_plain_row(
        self, row_key: RowKey, base_style: Style, cursor_location: Any, hover_location: Any
    ) -> tuple[list[list[Segment]], list[list[Segment]]] | None:
        """:meth:`_render_line_in_row` for one row as one segment; None if a cell is not a
        plain one-line ``Text``."""
        pseudo, _fr, _fc, show_cursor, show_hover, fg_css, bg_css, padding = self._fast_ctx
        row_index = self._row_locations.get(row_key)
        width = self.size.width
        cursor = row_index == cursor_location.row
        hover = row_index == hover_location.row
        cache_key = ("fast", row_key, base_style, cursor, hover, show_cursor, show_hover,
                     self._update_count, pseudo, width)
        cache = self._row_render_cache
        cached = cache.get(cache_key)
        if cached is not None:
            return cached
        row = self.rows.get(row_key)
        data = self._data.get(row_key)
        if row_index is None or row is None or data is None or row.height != 1:
            return None
        parts: list[str] = []
        table_width = 0
        for column in self.ordered_columns:
            value = data.get(column.key)
            if not isinstance(value, Text) or value.spans or value.style:
                return None
            cell_width = column.get_render_width(self)
            table_width += cell_width
            parts.append(_padded(value.plain, cell_width, padding))
        row_style = self._get_row_style(row_index, base_style)
        component_style, post_style = self._get_styles_to_render_cell(
            False, False, False, hover, cursor, show_cursor, show_hover, fg_css, bg_css
        )
        style = row_style + component_style + post_style
        style += Style.from_meta({"row": row_index, "column": 0})
        extend_style, _ = self._get_styles_to_render_cell(
            False, False, False, hover, cursor, show_cursor, show_hover, False, False
        )
        extend_style = row_style + extend_style
        extend_style += Style.from_meta({"row": row_index, "column": 0, "out_of_bounds": True})
        remaining = max(0, width - table_width - self._row_label_column_width)
        result: tuple[list[list[Segment]], list[list[Segment]]] = (
            [],
            [[Segment("".join(parts), style)], [Segment(" " * remaining, extend_style)]],
        )
        cache[cache_key] = result
        return result

    def _render_context(self) -> tuple[Any, ...]:
        # Reactive and pseudo-class reads cost µs each: read once per render pass, not per cell.
        return (
            self._pseudo_class_state,
            self.fixed_rows,
            self.fixed_columns,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
            self.cell_padding,
        )

    def render_lines(self, crop: Region) -> list[Strip]:
        """Render with styles and settings read once per pass instead of once per line/cell."""
        self._style_memo = None
        self._pass_memo = {}
        self._fast_ctx = self._render_context()
        self._memo_active = True
        try:
            return super().render_lines(crop)
        finally:
            self._memo_active = False
            self._style_memo = None
            self._pass_memo = {}

    def get_component_styles(self, *names: str) -> Any:
        """Component styles; during a render pass one object per name whose ``rich_style`` is
        computed once (``DataTable`` asks for the header's on every line, ~0.3 ms each)."""
        if not self.__dict__.get("_memo_active"):
            return super().get_component_styles(*names)
        key = ("component", names)
        memo = self._pass_memo.get(key)
        if memo is None:
            memo = self._pass_memo[key] = _MemoStyles(super().get_component_styles(*names))
        return memo

    @property
    def background_colors(self) -> tuple[Color, Color]:
        """The widget's background colours (memoised during one render pass)."""
        if not self.__dict__.get("_memo_active"):
            return super().background_colors
        colors = self._pass_memo.get("background")
        if colors is None:
            colors = self._pass_memo["background"] = super().background_colors
        return colors

    @property
    def rich_style(self) -> Style:
        """The widget's Rich style (memoised during one render pass)."""
        if not self.__dict__.get("_memo_active"):
            return super().rich_style
        if self._style_memo is None:
            self._style_memo = super().rich_style
        return self._style_memo

    def _get_row_style(self, row_index: int, base_style: Style) -> Style:
        """Zebra row styles, computed once per repaint rather than once per row."""
        if row_index < max(0, self.fixed_rows) or not self.zebra_stripes:
            return super()._get_row_style(row_index, base_style)
        key = (row_index % 2, self._update_count, self._pseudo_class_state, self.app.theme)
        cached = self._row_style_cache
        style = cached.get(key)
        if style is None:
            if len(cached) > 16:
                cached.clear()
            style = cached[key] = super()._get_row_style(row_index, base_style)
        return style

    def notify_style_update(self) -> None:
        cache = self.__dict__.get("_row_style_cache")
        if cache:
            cache.clear()
        super().notify_style_update()

    def _update_dimensions(self, new_rows: Iterable[object]) -> None:
        """Every column has a fixed width and rows are one line: no per-cell measuring, only
        the columns fitted to the width (the row count may have added a scrollbar) and the
        scrollable size set."""
        if any(c.auto_width for c in self.columns.values()):
            super()._update_dimensions(new_rows)  # type: ignore[arg-type]
            return
        self._new_rows.clear()
        self._fit_columns()
        self._update_virtual_size()

    def _update_virtual_size(self) -> None:
        """Set the scrollable size: a layout pass only when a scrollbar comes or goes (the
        table's own size does not follow its content), else just the scrollbars' thumbs."""
        header = self.header_height if self.show_header else 0
        width = sum(c.get_render_width(self) for c in self.columns.values())
        size = Size(width, len(self.rows) + header)
        if size == self.virtual_size:
            return
        styles = self.styles
        if any(scalar is None or scalar.is_auto for scalar in (styles.width, styles.height)):
            self.virtual_size = size  # sized by its content: lay out
            return
        self.set_reactive(Widget.virtual_size, size)
        self._scroll_update(size)  # shows/hides scrollbars (that lays out), clamps the scroll
        self.refresh()

    def _has_internals(self) -> bool:
        return all(hasattr(self, name) for name in _INTERNALS)

    def _columns_width(self) -> int:
        """Cells the columns may fill: the content width less a vertical scrollbar if the rows
        need one (predicted from the row count: known before the next layout shows it)."""
        width, height = self.size
        styles = self.styles
        rows = len(self.rows) + (self.header_height if self.show_header else 0)
        overflow = styles.overflow_y
        if overflow == "scroll" or (
            overflow == "auto" and (rows > height or styles.scrollbar_gutter == "stable")
        ):
            width -= styles.scrollbar_size_vertical
        return width

    def _fit_columns(self) -> bool:
        """Show the columns that fit the width, Name taking the free cells (True if changed).

        Cheap when nothing changed (arithmetic over nine columns). A change swaps the
        ``DataTable``'s column map only: rows and their cells stay as they are.
        """
        available = self._columns_width()
        if available <= 0 or not self._all_columns:
            return False
        layout = fit_columns(available, self.cell_padding)
        if layout == self._layout:
            return False
        self._layout = layout
        shown = [key for key, _ in layout]
        if not self._has_internals():  # after a Textual upgrade: all columns, Name fitted
            layout = fit_columns(available, self.cell_padding, _NO_DROP)
            shown = list(COLUMN_KEYS)
        if [column.key.value for column in self.ordered_columns] != shown:
            self.columns.clear()
            self.columns.update((ColumnKey(key), self._all_columns[key]) for key in shown)
            self._column_locations = type(self._column_locations)(
                {ColumnKey(key): index for index, key in enumerate(shown)}
            )
            self.cursor_coordinate = self.cursor_coordinate  # clamped to the columns left
        for key, width in layout:
            self._all_columns[key].width = width
        self._update_count += 1  # every render cache is keyed on it
        self.refresh()
        return True

    def describe(self) -> str:
        """``installed · filter "llama" · sort size ↓`` (empty when nothing applies)."""
        parts = []
        if self.status_filter != "all":
            parts.append(self.status_filter)
        if self.filter_text:
            parts.append(f'filter "{self.filter_text}"')
        if self.sort_column:
            parts.append(f"sort {self.sort_column}{' desc' if self.sort_reverse else ''}")
        return " | ".join(parts)

    # -- reactives -------------------------------------------------------------------------

    def watch_filter_text(self) -> None:
        self._rebuild()

    def watch_status_filter(self) -> None:
        self._rebuild()

    def watch_sort_column(self) -> None:
        self._rebuild()

    def watch_sort_reverse(self) -> None:
        self._rebuild()

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
        """Post :class:`DeleteRequested` for an installed cursor row."""
        row = self.current_row()
        if row is None:
            return
        if not row.installed:
            self.notify(f"{row.name} is not installed", severity="warning")
            return
        self.post_message(self.DeleteRequested(self, row))

    @on(DataTable.HeaderSelected)
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        column = str(event.column_key.value)
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column = column
