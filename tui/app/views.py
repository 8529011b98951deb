"""Plain view models for the dashboard: table rows, download jobs, answer metrics.

No Textual here (unit-testable, importable from the CLI): rows are built from
:class:`~tui.store.ModelRecord` and :class:`~tui.catalog.CatalogEntry`, and every string the
widgets show is produced by the formatters below.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tui import formatting
from tui.download import progress
from tui.terminal_text import clean_line

if TYPE_CHECKING:
    from tui.catalog import CatalogEntry
    from tui.store import ModelRecord

# -- table rows -----------------------------------------------------------------------------

ROW_STATUSES = ("available", "queued", "downloading", "paused", "installed", "loading",
                "loaded", "unloading", "failed")
INSTALLED_STATUSES = frozenset({"installed", "loading", "loaded", "unloading"})
DOWNLOAD_STATUSES = frozenset({"queued", "downloading", "paused", "failed"})

# Status filters the table cycles through: name -> statuses shown (None = all).
STATUS_FILTERS: dict[str, frozenset[str] | None] = {
    "all": None,
    "installed": INSTALLED_STATUSES,
    "downloads": DOWNLOAD_STATUSES,
    "available": frozenset({"available"}),
}


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: key, header label, width in cells and when it gives way.

    ``drop`` ranks the columns hidden when the table is too narrow (1 goes first; 0 stays).
    """

    key: str
    label: str
    width: int
    drop: int = 0


FLEX_COLUMN = "id"  # takes the free width; its ``width`` is the least it gets before others hide
FLEX_FLOOR = 8  # the flex column's width when even hiding every droppable column is not enough
FLEX_ENOUGH = 36  # beyond this the flex column shares free cells with Name (when Name is shown)
SHARE_COLUMN = "name"  # gets the free cells the flex column does not need

# The id (what every CLI command takes) comes first; the inner name, often the same words or a
# file's ``general.name`` shared by several files, is the first to give way.
COLUMNS: tuple[Column, ...] = (
    Column("status", "Status", 15),
    Column(FLEX_COLUMN, "ID", 24),  # most catalog ids fit in 26
    Column("name", "Name", 20, drop=1),
    Column("kind", "Kind", 9, drop=4),  # llm, vlm, lora, diffusion, vae, … (tui.kinds)
    Column("base", "Base", 6, drop=2),  # an image model's family: sd1, sdxl, flux1, …
    Column("format", "Fmt", 4, drop=6),
    Column("quant", "Quant", 6),
    Column("params", "Params", 6, drop=5),
    Column("size", "Size", 5),
    Column("fit", "Fit", 4),
    Column("tps", "tok/s", 5, drop=3),
    Column("last_used", "Used", 7, drop=2),
)
COLUMN_KEYS: tuple[str, ...] = tuple(c.key for c in COLUMNS)
SORTABLE: tuple[str, ...] = ("name", "status", "size", "params", "tps", "last_used", "format",
                             "id", "kind")


def fit_columns(
    available: int, padding: int = 1, columns: Sequence[Column] = COLUMNS
) -> tuple[tuple[str, int], ...]:
    """The columns shown in ``available`` cells, as ``(key, width)`` in table order.

    Droppable columns are hidden in ``drop`` order until :data:`FLEX_COLUMN` gets its
    ``width``; the free cells then widen it up to :data:`FLEX_ENOUGH`, and the rest go to
    :data:`SHARE_COLUMN` if it is shown, else to the flex column too (so the row fills the
    table exactly). The flex column never gets less than :data:`FLEX_FLOOR`. ``padding`` is
    the cell padding on each side of a column.
    """
    shown = list(columns)
    flex = next(c for c in columns if c.key == FLEX_COLUMN)

    def free() -> int:
        return available - sum(c.width + 2 * padding for c in shown) + flex.width

    for column in sorted((c for c in columns if c.drop), key=lambda c: c.drop):
        if free() >= flex.width:
            break
        shown.remove(column)
    flex_width = max(free(), FLEX_FLOOR)
    widths = {c.key: c.width for c in shown}
    widths[FLEX_COLUMN] = flex_width
    if SHARE_COLUMN in widths and flex_width > max(FLEX_ENOUGH, flex.width):
        extra = flex_width - max(FLEX_ENOUGH, flex.width)
        widths[FLEX_COLUMN] -= extra
        widths[SHARE_COLUMN] += extra
    return tuple((c.key, widths[c.key]) for c in shown)


def fold(text: str) -> str:
    """``text`` as the filter compares it: NFKC-normalised and case-folded (full-width
    ``ｑｗｅｎ`` matches ``qwen``, ``ß`` matches ``ss``)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


_FORMAT_SHORT = {"gguf": "gguf", "safetensors": "st", "pytorch": "pt", "tflite": "tfl",
                 "coreml": "cml"}
_KIND_SHORT = {"text-encoder": "text-enc", "controlnet": "ctrlnet", "textual-inversion": "txt-inv",
               "unknown": ""}


@dataclass(slots=True)
class ModelRow:
    """One line of the model table: a catalog entry, an installed model, or both merged."""

    key: str
    name: str
    status: str = "available"
    format: str | None = None
    quant: str | None = None
    parameters: int | None = None
    size_bytes: int | None = None
    fit: str = ""
    tokens_per_s: float | None = None
    last_used_at: float | None = None
    progress: float | None = None  # 0..1 while downloading
    entry_id: str | None = None
    model_id: str | None = None
    quants: tuple[str, ...] = ()
    update: bool = False  # the Hub has a newer commit of its tracked revision
    kind: str | None = None  # tui.kinds: what the model is for
    base: str | None = None  # the base model family of an image model, LoRA, VAE (sdxl, …)
    served: int = 0  # requests the dashboard's API server answered with this model
    search_text: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.search_text:  # once per row: what the filter matches, folded
            self.search_text = fold(" ".join(
                filter(None, [self.model_id, self.entry_id, self.name, self.kind, self.base,
                              self.format, self.quant, *self.quants])
            ))

    @property
    def installed(self) -> bool:
        """True for installed or loaded models."""
        return self.status in INSTALLED_STATUSES

    @property
    def cli_id(self) -> str:
        """The id the CLI takes for this row: the installed model's id, else the catalog
        entry's (``pull``, ``info`` and ``fit`` take it)."""
        return self.model_id or self.entry_id or ""


def row_from_entry(entry: CatalogEntry) -> ModelRow:
    """A catalog entry not (yet) installed."""
    default = entry.default_quant
    size = entry.size_for() if (entry.quants or entry.files) else 0
    return ModelRow(
        key=f"entry:{entry.id}",
        name=entry.name,
        format=entry.format,
        quant=default.quant if default else None,
        parameters=entry.parameters,
        size_bytes=size or None,
        entry_id=entry.id,
        quants=tuple(q.quant for q in entry.quants),
        kind=getattr(entry, "kind", None),
        base=getattr(entry, "base_model", None),
    )


def row_from_record(record: ModelRecord, entry: CatalogEntry | None = None) -> ModelRow:
    """An installed model; with ``entry`` it takes over that catalog entry's row key."""
    status = record.status if record.status in ROW_STATUSES else "installed"
    if record.status == "missing":
        status = "failed"
    return ModelRow(
        key=f"entry:{entry.id}" if entry is not None else f"model:{record.id}",
        name=entry.name if entry is not None else record.name,
        status=status,
        format=record.format,
        quant=record.quantization,
        parameters=record.parameters or (entry.parameters if entry else None),
        size_bytes=record.size_bytes or None,
        tokens_per_s=record.tokens_per_s,
        last_used_at=record.last_used_at,
        entry_id=entry.id if entry is not None else record.catalog_id,
        model_id=record.id,
        quants=tuple(q.quant for q in entry.quants) if entry is not None else (),
        kind=record_kind(record),
        base=record_base(record) or (entry.base_model if entry is not None else None),
    )


def record_base(record: ModelRecord) -> str | None:
    """The base model family read from an installed model (a LoRA's, a checkpoint's, a
    CivitAI download's), or None."""
    extra = record.metadata.extra if record.metadata is not None else None
    base = extra.get("base_family") if isinstance(extra, dict) else None
    return base if isinstance(base, str) and base else None


def record_kind(record: ModelRecord) -> str:
    """An installed model's kind (a record made without one: from its metadata)."""
    from tui import kinds
    from tui.metadata.kinds import kind_of

    if record.kind in kinds.KINDS and record.kind != kinds.UNKNOWN:
        return record.kind
    return kind_of(record.metadata, record.format)


def build_rows(entries: Iterable[CatalogEntry], records: Iterable[ModelRecord]) -> list[ModelRow]:
    """Catalog entries, then installed models not in the catalog.

    Merge rule: an installed model whose ``catalog_id`` matches an entry replaces that entry's
    row (same key, status installed); a second install of the same entry gets its own row.
    """
    rows: dict[str, ModelRow] = {}
    by_id: dict[str, CatalogEntry] = {}
    for entry in entries:
        by_id[entry.id] = entry
        rows[f"entry:{entry.id}"] = row_from_entry(entry)
    taken: set[str] = set()
    for record in records:
        entry = by_id.get(record.catalog_id) if record.catalog_id else None
        if entry is not None and entry.id not in taken:
            taken.add(entry.id)
            row = row_from_record(record, entry)
        else:
            row = row_from_record(record)
        rows[row.key] = row
    return list(rows.values())


# -- formatting -----------------------------------------------------------------------------


def format_size(n: int | float | None) -> str:
    """A size in a narrow cell (:func:`tui.formatting.size_compact`: ``4.6Gi``, ``512Mi``);
    blank when unknown."""
    return formatting.size_compact(n) if n else ""


def format_params(n: int | None) -> str:
    """``8.0B``, ``494M``; blank when unknown."""
    return formatting.params(n) if n else ""


def format_rate(bytes_per_s: float | None) -> str:
    """``12Mi/s`` (:func:`tui.formatting.rate_compact`); blank when unknown."""
    return formatting.rate_compact(bytes_per_s) if bytes_per_s else ""


def format_duration(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``2h10m`` (:func:`tui.formatting.duration`); blank when unknown."""
    return "" if seconds is None or seconds < 0 else formatting.duration(seconds)


def format_ago(when: float | None, now: float) -> str:
    """``now``, ``5m ago``, ``3h ago``, ``12d ago`` (:func:`tui.formatting.ago`); blank when
    never."""
    return formatting.ago(when, now) if when else ""


def format_tps(tps: float | None) -> str:
    """Tokens per second, one decimal below 100."""
    if tps is None:
        return ""
    return f"{tps:.1f}" if tps < 100 else f"{tps:.0f}"


UPDATE_LABEL = "update avail."  # an installed model whose Hub revision moved on


def status_label(row: ModelRow) -> str:
    """``downloading 42%`` while downloading, ``update avail.`` for an installed model the
    Hub has a newer commit of, ``loaded, 12 req`` for a loaded model the API server answered
    requests with, else the status word."""
    if row.status == "downloading" and row.progress is not None:
        return f"downloading {int(row.progress * 100):d}%"
    if row.update and row.status == "installed":
        return UPDATE_LABEL
    if row.status == "loaded" and row.served > 0:
        return f"loaded, {count_text(row.served)} req"
    return row.status


def count_text(n: int) -> str:
    """``12``, ``999``, ``1.2k``, ``35k``, ``1.2M``: at most 4 characters."""
    if n < 1000:
        return str(n)
    for unit, size in (("k", 1e3), ("M", 1e6), ("G", 1e9)):
        if n < size * 1000 - size / 2:
            value = n / size
            return f"{value:.1f}{unit}" if value < 9.95 else f"{value:.0f}{unit}"
    return "many"


def row_cells(row: ModelRow, now: float) -> tuple[str, ...]:
    """The display strings of a row, in :data:`COLUMNS` order (names, formats and quants come
    from files and the catalog: one line each, control characters escaped)."""
    return (
        status_label(row),
        clean_line(row.cli_id),
        clean_line(row.name),
        clean_line(_KIND_SHORT.get(row.kind or "", row.kind or "")),
        clean_line(row.base or ""),
        clean_line(_FORMAT_SHORT.get(row.format or "", row.format or "")),
        clean_line(row.quant or ""),
        format_params(row.parameters),
        format_size(row.size_bytes),
        row.fit,
        format_tps(row.tokens_per_s),
        format_ago(row.last_used_at, now),
    )


_STATUS_ORDER = {s: i for i, s in enumerate((
    "loaded", "loading", "unloading", "downloading", "queued", "paused", "failed", "installed",
    "available",
))}


def sort_key(column: str) -> Callable[[ModelRow], object]:
    """A key function for sorting rows by ``column`` (unknown values last)."""
    big = float("inf")
    keys: dict[str, Callable[[ModelRow], object]] = {
        "name": lambda r: r.name.lower(),
        "id": lambda r: r.cli_id,
        "status": lambda r: (_STATUS_ORDER.get(r.status, 99), r.name.lower()),
        "format": lambda r: (r.format or "~", r.name.lower()),
        "kind": lambda r: (r.kind or "~", r.name.lower()),
        "quant": lambda r: (r.quant or "~", r.name.lower()),
        "size": lambda r: r.size_bytes if r.size_bytes else big,
        "params": lambda r: r.parameters if r.parameters else big,
        "tps": lambda r: -(r.tokens_per_s or -1.0),
        "last_used": lambda r: -(r.last_used_at or 0.0),
        "fit": lambda r: r.fit or "~",
    }
    return keys.get(column, keys["name"])


def select_rows(
    rows: Iterable[ModelRow],
    text: str = "",
    status_filter: str = "all",
    sort_column: str | None = None,
    reverse: bool = False,
) -> list[ModelRow]:
    """Rows matching every word of ``text`` and the status filter, sorted. Words match
    anywhere in a row's id, name, kind, format or quants, compared :func:`fold`-ed."""
    words = fold(text).split()
    allowed = STATUS_FILTERS.get(status_filter)
    out = list(rows) if allowed is None else [r for r in rows if r.status in allowed]
    for word in words:  # one pass per word: cheaper than all(...) per row
        out = [r for r in out if word in r.search_text]
    if sort_column:
        out.sort(key=sort_key(sort_column), reverse=reverse)
    return out


# -- download jobs --------------------------------------------------------------------------

JOB_STATES = progress.JOB_STATES
ACTIVE_JOB_STATES = frozenset(progress.ACTIVE_STATES)


@dataclass(frozen=True, slots=True)
class JobView:
    """What the downloads panel shows for one job."""

    job_id: str
    name: str
    state: str
    done_bytes: int = 0
    total_bytes: int | None = None
    speed_bps: float | None = None
    eta_s: float | None = None
    error: str | None = None
    row_key: str | None = None  # model-table row this job feeds (``entry:<id>``)
    warning: str | None = None  # a caution that does not stop the job (network file system)
    retry: str | None = None  # ``try 3, connection refused`` while requests keep failing
    wait_for: str | None = None  # what a waiting job waits for ("the Hub's rate limit")
    wait_s: int | None = None  # … and how many more seconds
    updated_at: float | None = None  # wall-clock time these facts were true (finished jobs: when)

    @property
    def active(self) -> bool:
        """Still going (resumes at next start if the app quits)."""
        return self.state in ACTIVE_JOB_STATES

    @property
    def fraction(self) -> float | None:
        """Done fraction 0..1, None when the size is unknown."""
        if not self.total_bytes:
            return None
        return min(1.0, self.done_bytes / self.total_bytes)


def job_bytes_text(view: JobView) -> str:
    """``1.2Gi/4.6Gi``."""
    done = format_size(view.done_bytes) or formatting.size_compact(0)
    return f"{done}/{format_size(view.total_bytes)}" if view.total_bytes else done


def job_state_text(view: JobView) -> str:
    """The state; ``waiting 42s`` for a job waiting out a rate limit."""
    if view.state == "waiting" and view.wait_s is not None:
        return f"waiting {formatting.duration(view.wait_s)}"
    return view.state


def job_speed_text(view: JobView) -> str:
    """``12Mi/s ETA 5m20s`` while downloading; the error for failed jobs; what a waiting
    job waits for (``the Hub's rate limit``); the try under way and why the last one failed
    while requests keep failing."""
    if view.state == "failed":
        return view.error or "failed"
    if view.state == "waiting":
        return view.wait_for or ""
    if view.retry:
        return clean_line(view.retry)
    if view.state != "downloading":
        return ""
    parts = [format_rate(view.speed_bps)]
    if view.eta_s is not None:
        parts.append(f"ETA {format_duration(view.eta_s)}")
    return " ".join(p for p in parts if p)


def row_status_for_job(view: JobView) -> str:
    """The model-table status a job implies."""
    if view.state in ("queued",):
        return "queued"
    if view.state == "paused":
        return "paused"
    if view.state == "failed":
        return "failed"
    if view.state == "done":
        return "installed"
    if view.state == "cancelled":
        return "available"
    return "downloading"


# -- prompt console -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricsView:
    """Timing of one answer, shown under it."""

    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    tokens: int | None = None
    cancelled: bool = False
    estimated: bool = False  # the token count is an estimate (an endpoint sent no usage)


def metrics_text(m: MetricsView) -> str:
    """``TTFT 210 ms · 42.0 tok/s · 128 tokens``."""
    parts = []
    if m.ttft_ms is not None:
        parts.append(f"TTFT {m.ttft_ms:.0f} ms")
    if m.tokens_per_s is not None:
        parts.append(f"{m.tokens_per_s:.1f} tok/s")
    if m.tokens is not None:
        estimated = " (estimated)" if m.estimated else ""
        parts.append(f"{m.tokens} token{'' if m.tokens == 1 else 's'}{estimated}")
    if m.cancelled:
        parts.append("cancelled")
    return " | ".join(parts)


# -- resource bars --------------------------------------------------------------------------

_SPARK_ASCII = " .:-=+*#"


def text_bar(fraction: float | None, width: int, ascii: bool = False) -> str:
    """A fixed-width bar; ``#``/``.`` in ASCII mode, block glyphs otherwise."""
    if width <= 0:
        return ""
    if fraction is None:
        return ("?" if ascii else "·") * width
    filled = round(max(0.0, min(1.0, fraction)) * width)
    full, empty = ("#", ".") if ascii else ("█", "░")
    return full * filled + empty * (width - filled)


def ascii_sparkline(values: Sequence[float], width: int, top: float = 100.0) -> str:
    """The last ``width`` values (0..top) as ASCII characters."""
    tail = list(values)[-width:]
    n = len(_SPARK_ASCII) - 1
    chars = [_SPARK_ASCII[round(max(0.0, min(top, v)) / top * n)] if top else " " for v in tail]
    return "".join(chars).rjust(width)


def percent(used: float | None, total: float | None) -> float | None:
    """``used / total`` as 0..1, None when unknown."""
    if used is None or not total:
        return None
    return max(0.0, min(1.0, used / total))


def wall_clock() -> float:
    """Default ``now`` for row formatting."""
    return time.time()


def load_text(info: Any, options: Any = None) -> str:
    """How a model was loaded (a runtime ``LoadedModel`` and its ``LoadOptions``), for the
    console's model line: ``ctx 4,096 | gpu all``, plus threads and parallel answers when set."""
    parts = [f"ctx {info.context_length:,}"] if info.context_length else []
    if info.kind == "gguf":
        layers = info.gpu_layers
        parts.append("cpu" if layers == 0 else "gpu all" if layers < 0 else f"gpu {layers} layers")
    if options is not None and options.threads:
        parts.append(f"{options.threads} threads")
    if options is not None and options.parallel:
        parts.append(f"{info.slots} parallel")
    return " | ".join(parts)
