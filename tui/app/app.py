"""``ModelDeckApp``: the dashboard, built from :class:`~tui.services.Services`."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.clock import Clock
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.geometry import Size
from textual.reactive import Reactive, reactive
from textual.widget import Widget
from textual.widgets import Footer, Input, Static
from textual.worker import Worker, WorkerState

from tui import formatting
from tui.app import wiring
from tui.app.commands import ModelDeckCommands, literal
from tui.app.messages import (
    DeletePlanned,
    InventoryChanged,
    JobRemoved,
    JobUpdated,
    LiveProblem,
    LoadRefused,
    ModelDeleted,
    ModelsLoaded,
    ResourcesSampled,
    RowsChanged,
    RuntimeChanged,
)
from tui.app.paths import styles_dir
from tui.app.screens import (
    AddModelScreen,
    ChatListScreen,
    ConfirmScreen,
    GenParamsScreen,
    HelpScreen,
    HubSearchScreen,
    LoadOptionsScreen,
    TextPromptScreen,
    binding_rows,
    describe_params,
)
from tui.app.views import JobView, ModelRow, format_size, row_status_for_job
from tui.app.widgets import (
    DownloadsPanel,
    ModelTable,
    PromptConsole,
    PromptInput,
    ResourceLine,
    ResourceSidebar,
)
from tui.errors import ModelDeckError
from tui.terminal_text import clean, clean_line

if TYPE_CHECKING:
    from tui.resources.types import Snapshot
    from tui.services import Services

THEMES = {"dark": "textual-dark", "light": "textual-light"}
JOB_REDRAW_S = 0.5  # progress redraws per job while its state stays the same
USED_REFRESH_S = 30.0  # "Used" times on screen are re-formatted this often
USED_REFRESH_LOW_REDRAW_S = 120.0  # … and this often with ``low_redraw``
UPDATE_CHECK_S = 6 * 3600.0  # Hub models are checked for newer commits this often


class SamplerLike(Protocol):
    """What the sidebar needs from :class:`~tui.resources.ResourceSampler` (fakes in tests)."""

    interval: float

    async def run(self, callback: Callable[[Snapshot], object]) -> None: ...

    def history_of(self, name: str) -> list[float]: ...


class FilterInput(Input):
    """The filter line above the table; Esc clears it."""

    # Input re-sets ``virtual_size`` on every keystroke, and as a layout reactive that reflows
    # (and repaints) the whole screen per key. This line's size never depends on it.
    virtual_size = Reactive(Size(0, 0), layout=False)

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.clear_filter", "Clear filter"),
        Binding("enter,down", "app.focus_table", "To table", show=False),
    ]


class ModelDeckApp(App[None]):
    """Catalog + installed models, downloads, resources and a prompt console.

    Args:
        services: the service container (inventory, catalog, downloads, runtime, sampler).
        sampler: replaces ``services.sampler`` (tests inject fixed readings).
        clock: the clock of the downloads' progress bars (tests: ``MockClock()``).
        now: wall-clock source for "last used" (tests: a fixed time).
        cursor_blink: blink input cursors (off for snapshots; default from ``CURSOR_BLINK``).
        start_sampler: start the resource sampler worker on mount.
        watch_downloads: start the download-events worker on mount.
        watch_changes: follow what other processes change in the inventory (jobs, models).
        watch_folders: scan on start, then follow the managed folders (discovery).
        check_updates: ask the Hub for newer commits of Hub models in a thread, at start and
            every ``UPDATE_CHECK_S`` (default: as ``watch_downloads``).
        compute_fit: fill the Fit column from the runtime's memory estimate.
    """

    TITLE = "ModelDeck"
    CSS_PATH: ClassVar[list[str | Any]] = [styles_dir() / "app.tcss"]
    COMMANDS = App.COMMANDS | {ModelDeckCommands}
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (100, "-wide")]
    CURSOR_BLINK: ClassVar[bool] = True
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("slash", "filter", "Filter"),
        Binding("g", "toggle_sidebar", "Resources"),
        Binding("w", "toggle_downloads", "Downloads"),
        Binding("e", "toggle_console", "Console"),
        Binding("ctrl+o", "pick_model", "Models"),
        Binding("u", "unload", "Unload"),
        Binding("a", "add_model", "Add model"),
        Binding("ctrl+f", "hub_search", "Hub search"),
        Binding("L", "load_with", "Load with…", show=False),
        Binding("t", "toggle_theme", "Theme", show=False),
    ]

    show_sidebar: reactive[bool] = reactive(True)
    show_downloads: reactive[bool] = reactive(True)
    show_console: reactive[bool] = reactive(False)

    def __init__(
        self,
        services: Services,
        *,
        sampler: SamplerLike | None = None,
        clock: Clock | None = None,
        now: Callable[[], float] | None = None,
        cursor_blink: bool | None = None,
        start_sampler: bool = True,
        watch_downloads: bool = True,
        watch_changes: bool = True,
        watch_folders: bool = True,
        compute_fit: bool = True,
        check_updates: bool | None = None,
    ) -> None:
        super().__init__()
        self.services = services
        self.settings = services.settings
        self._sampler = sampler
        self._clock = clock
        self._now = now or time.time
        self._start_sampler = start_sampler
        self._watch_downloads = watch_downloads
        self._watch_changes = watch_changes
        self._watch_folders = watch_folders
        self._check_updates = watch_downloads if check_updates is None else check_updates
        self._compute_fit = compute_fit
        blink = self.CURSOR_BLINK if cursor_blink is None else cursor_blink
        self.cursor_blink = blink and not self.settings.low_redraw
        if self.settings.low_redraw:
            self.animation_level = "none"
        self.theme = THEMES.get(self.settings.theme, "textual-dark")
        self.models_ready = asyncio.Event()
        self._job_states: dict[str, str] = {}
        self._job_warnings: set[tuple[str, str]] = set()  # (job id, warning) already shown
        self._job_applied: dict[str, float] = {}  # job id -> monotonic time of last redraw
        self._job_pending: dict[str, JobView] = {}
        self._job_timer: Any = None
        self._closing = False
        self._background_started = False
        self._active_model: str | None = None  # model id answering in the console
        self._runtime_unsubscribe: Callable[[], None] | None = None
        self._entries: dict[str, Any] = {}  # catalog entries by id (read with the rows)
        self._loaded_with: dict[str, Any] = {}  # model id -> LoadOptions of its last load
        # LoadOptions for loads of models with none remembered (None: runtime defaults)
        self.load_options: Any = None
        # GenParams for answers (None: runtime defaults); set with F3, kept for the session.
        self.gen_params: Any = None

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        ascii = self.settings.ascii
        yield ResourceLine("", id="resource-line")
        with Horizontal(id="body"):
            with Vertical(id="main"):
                filter_input = FilterInput(placeholder="Filter models (Esc clears)", id="filter")
                filter_input.cursor_blink = self.cursor_blink
                yield filter_input
                used_refresh = (
                    USED_REFRESH_LOW_REDRAW_S if self.settings.low_redraw else USED_REFRESH_S
                )
                yield ModelTable(now=self._now, used_refresh=used_refresh, id="models")
                yield Static("", id="table-status", markup=False)
                yield DownloadsPanel(clock=self._clock, ascii=ascii, id="downloads")
                yield PromptConsole(
                    cursor_blink=self.cursor_blink, runtime=lambda: self.services.runtime,
                    chats=self.chat_store, params=lambda: self.gen_params, id="console",
                )
            yield ResourceSidebar(ascii=ascii, id="sidebar")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.set_class(self.settings.ascii, "-ascii")
        self.set_class(self.settings.low_redraw, "-low-redraw")
        self._apply_visibility()
        self.model_table.focus()
        self._load_rows()

    @property
    def model_table(self) -> ModelTable:
        """The model table."""
        return self.query_one("#models", ModelTable)

    @property
    def downloads_panel(self) -> DownloadsPanel:
        """The downloads panel."""
        return self.query_one("#downloads", DownloadsPanel)

    @property
    def sidebar(self) -> ResourceSidebar:
        """The resource sidebar."""
        return self.query_one("#sidebar", ResourceSidebar)

    @property
    def prompt_console(self) -> PromptConsole:
        """The prompt console."""
        return self.query_one("#console", PromptConsole)

    @property
    def sampler(self) -> SamplerLike:
        """The injected sampler, else ``services.sampler``."""
        if self._sampler is None:
            self._sampler = self.services.sampler
        return self._sampler

    def _ui_alive(self) -> bool:
        """False once the app is shutting down (late service events are then dropped)."""
        if self._closing:
            return False
        try:
            self.query_one("#models", ModelTable)
        except NoMatches:
            return False
        return True

    def _focus_now(self, widget: Widget) -> None:
        """Focus at once, not on the next idle (``Widget.focus`` defers): keys that arrive in
        the same burst — a paste, or typing ahead over a slow SSH link — then reach the
        newly focused widget instead of the old one."""
        screen = widget.screen
        if screen is self.screen:
            screen.set_focus(widget)
        else:
            widget.focus()

    def _apply_visibility(self) -> None:
        self.query_one("#sidebar").set_class(not self.show_sidebar, "-hidden")
        self.query_one("#resource-line").set_class(not self.show_sidebar, "-hidden")
        self.query_one("#downloads").set_class(not self.show_downloads, "-hidden")
        self.query_one("#console").set_class(not self.show_console, "-hidden")

    def watch_show_sidebar(self) -> None:
        if self.is_mounted:
            self._apply_visibility()

    def watch_show_downloads(self) -> None:
        if self.is_mounted:
            self._apply_visibility()

    def watch_show_console(self, show: bool) -> None:
        if self.is_mounted:
            self._apply_visibility()
            if show:
                self._focus_now(self.prompt_console.prompt_input)
            elif self.prompt_console.has_focus_within:
                self._focus_now(self.model_table)

    # -- workers ---------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="rows", exit_on_error=False)
    def _load_rows(self) -> None:
        """Read catalog + inventory (blocking SQLite) and post the rows."""
        if self._watch_changes:  # what changes after this read is reported by the feed
            wiring.prime_changes(self.services)
        entries = {e.id: e for e in self.services.catalog.entries()}
        self.post_message(ModelsLoaded(wiring.load_rows(self.services), entries))

    @work(exclusive=True, group="sampler", exit_on_error=False)
    async def _run_sampler(self) -> None:
        """Run the resource sampler; each snapshot is posted as a message."""
        # Building the real sampler imports psutil and probes NVML: not on the event loop.
        sampler = await asyncio.to_thread(lambda: self.sampler)
        if self.settings.low_redraw:
            sampler.interval = max(sampler.interval, 3.0)

        def report(snapshot: Snapshot) -> None:
            names = ["cpu", "ram", *(f"gpu{g.index}.util" for g in snapshot.gpus)]
            history = {name: sampler.history_of(name) for name in names}
            self.post_message(ResourcesSampled(snapshot, history))

        await sampler.run(report)

    @work(exclusive=True, group="download-events", exit_on_error=False)
    async def _run_download_watch(self) -> None:
        """Follow the download service; quietly ends while it is not wired."""
        try:
            await wiring.watch_downloads(self.services, self.post_job)
        except (wiring.NotWired, ImportError) as exc:
            self.log.warning(f"downloads panel idle: {exc}")

    @work(thread=True, exclusive=True, group="update-check", exit_on_error=False)
    def _run_update_check(self) -> None:
        """Ask the Hub for newer commits (network: in a thread); an outdated model's row then
        shows ``update avail.``. Offline: tried again later."""
        try:
            outdated = wiring.check_updates(self.services)
        except ModelDeckError as exc:
            self.log.warning(f"update check: {exc}")
            return
        self.call_from_thread(self._mark_updates, outdated)

    def _mark_updates(self, outdated: set[str]) -> None:
        """Set or clear each row's update marker in place (download states stay as they are)."""
        if not self._ui_alive():
            return
        table = self.model_table
        changed = []
        for row in table.all_rows.values():
            wanted = row.model_id in outdated
            if row.update != wanted:
                row.update = wanted
                changed.append(row)
        if changed:
            table.update_rows(changed)

    async def on_unmount(self) -> None:
        """Stop the download queue (running jobs stay queued for the next start) and the
        runtime (unloads every model)."""
        self._closing = True
        if self._job_timer is not None:
            self._job_timer.stop()
        if self._runtime_unsubscribe is not None:
            self._runtime_unsubscribe()
        await asyncio.to_thread(wiring.stop_live, self.services)
        if self._watch_downloads:
            try:
                await wiring.stop_downloads(self.services)
            except Exception as exc:  # exiting anyway: log, do not raise
                self.log.error(f"stopping downloads failed: {exc!r}")
        try:
            await wiring.close_runtime(self.services)
        except Exception as exc:
            self.log.error(f"closing the runtime failed: {exc!r}")

    def post_job(self, view: JobView) -> None:
        """Thread-safe entry point for job updates (coalesced per job)."""
        self.post_message(JobUpdated(view))

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR or event.worker.error is None:
            return
        error = event.worker.error
        if isinstance(error, wiring.NotWired):
            self.notify(str(error), title="Not available yet", severity="warning")
        elif isinstance(error, ModelDeckError):
            self.notify(str(error), title="Error", severity="error")
        else:
            self.notify(f"{type(error).__name__}: {error}", title="Error", severity="error")

    # -- message handlers ------------------------------------------------------------------

    def _start_background(self) -> None:
        """Sampler and download queue: started once the rows are on screen."""
        if self._background_started:
            return
        self._background_started = True
        if self._start_sampler:
            self._run_sampler()
        if self._watch_downloads:
            self._run_download_watch()
        if self._watch_changes:
            wiring.follow_changes(
                self.services, emit_job=self.post_job,
                drop_job=lambda job_id: self.post_message(JobRemoved(job_id)),
                models_changed=lambda: self.post_message(InventoryChanged()),
                failed=lambda line: self.post_message(LiveProblem([line], "error")),
            )
        if self._watch_folders:
            wiring.watch_folders(self.services, lambda lines: self.post_message(
                LiveProblem(lines)))
        if self._check_updates:
            self._run_update_check()
            self.set_interval(UPDATE_CHECK_S, self._run_update_check, name="update-check")

    @on(ModelsLoaded)
    def _models_loaded(self, message: ModelsLoaded) -> None:
        if not self._ui_alive():
            return
        self.call_after_refresh(self._start_background)
        if message.entries is not None:
            self._entries = dict(message.entries)
        table = self.model_table
        rows = []  # keep known Fit verdicts until they are recomputed (no blank flash)
        for row in message.rows:
            old = table.get_model_row(row.key)
            if old is not None and old.fit and not row.fit:
                row = dataclasses.replace(row, fit=old.fit)
            rows.append(row)
        table.set_rows(rows)
        for view in self.downloads_panel.jobs.values():  # rows read again: jobs still going
            if view.active:
                self._mirror_job(view)
        self._update_table_status()
        for row in message.rows:
            if row.status == "loaded":
                self.prompt_console.set_model(row.name)
        self._mark_loaded_rows()
        self.models_ready.set()
        if self._compute_fit:
            self._fill_fit(list(self.model_table.all_rows.values()))

    def _mark_loaded_rows(self) -> None:
        """Rows of models the runtime holds show "loaded" (after a reload from the inventory)."""
        if not wiring.runtime_built(self.services):
            return
        table = self.model_table
        for row in list(table.all_rows.values()):
            loaded = row.model_id and self.services.runtime.is_loaded(row.model_id)
            if loaded and row.status != "loaded":
                table.update_row(dataclasses.replace(row, status="loaded"))

    @work(exclusive=True, group="fit", exit_on_error=False)
    async def _fill_fit(self, rows: list[ModelRow]) -> None:
        """Fill the Fit column (the runtime reads headers and memory in its threads)."""
        changed = await wiring.fit_for(self.services, rows)
        if changed:
            self.post_message(RowsChanged(changed))

    @on(RowsChanged)
    def _rows_changed(self, message: RowsChanged) -> None:
        if not self._ui_alive():
            return
        table = self.model_table
        # Merge the changed fields into the current rows (the status may have moved on).
        current = []
        for row in message.rows:
            now = table.get_model_row(row.key)
            current.append(dataclasses.replace(now, fit=row.fit) if now is not None else row)
        table.update_rows(current)

    @on(ResourcesSampled)
    def _resources_sampled(self, message: ResourcesSampled) -> None:
        self.sidebar.update_snapshot(message.snapshot, message.history)
        self.query_one("#resource-line", ResourceLine).update_snapshot(message.snapshot)

    @on(JobUpdated)
    def _job_updated(self, message: JobUpdated) -> None:
        """Apply job updates: state changes at once, progress at most every
        :data:`JOB_REDRAW_S` per job (the latest one wins)."""
        view = message.view
        if not self._ui_alive():
            return
        last = self._job_applied.get(view.job_id)
        now = time.monotonic()
        same_state = self._job_states.get(view.job_id) == view.state
        if same_state and last is not None and now - last < JOB_REDRAW_S:
            self._job_pending[view.job_id] = view
            if self._job_timer is None:
                self._job_timer = self.set_timer(JOB_REDRAW_S - (now - last),
                                                 self._flush_jobs)
            return
        self._job_pending.pop(view.job_id, None)
        self._job_applied[view.job_id] = now
        self.apply_job(view)

    @on(JobRemoved)
    def _job_removed(self, message: JobRemoved) -> None:
        if not self._ui_alive():
            return
        self._job_pending.pop(message.job_id, None)
        self._job_states.pop(message.job_id, None)
        self.downloads_panel.remove_job(message.job_id)

    @on(InventoryChanged)
    def _inventory_changed(self) -> None:
        if self._ui_alive():
            self._load_rows()

    @on(LiveProblem)
    def _live_problem(self, message: LiveProblem) -> None:
        title = "Inventory" if message.severity == "error" else "Discovery"
        for line in message.lines[:5]:
            self.notify(line, title=title, severity=message.severity, timeout=15)

    def _flush_jobs(self) -> None:
        self._job_timer = None
        if not self._ui_alive():
            return
        pending, self._job_pending = self._job_pending, {}
        now = time.monotonic()
        with self.batch_update():
            for view in pending.values():
                self._job_applied[view.job_id] = now
                self.apply_job(view)

    def apply_job(self, view: JobView) -> None:
        """Show a job in the panel, mirror it on its table row, alert on transitions."""
        self.downloads_panel.update_job(view)
        self._mirror_job(view)
        if view.warning and (view.job_id, view.warning) not in self._job_warnings:
            self._job_warnings.add((view.job_id, view.warning))
            self.notify(f"{view.name}: {view.warning}", title="Download warning",
                        severity="warning", timeout=15)
        before = self._job_states.get(view.job_id)
        self._job_states[view.job_id] = view.state
        if before != view.state and before is not None:
            if view.state == "done":
                self.alert(f"{view.name} downloaded", title="Download finished")
                self._load_rows()
            elif view.state == "failed":
                self.alert(f"{view.name}: {view.error or 'failed'}", "Download failed", "error")
            elif view.state == "stalled":
                self.alert(f"{view.name} stalled; retrying", "Download stalled", "warning")

    def _mirror_job(self, view: JobView) -> None:
        """Show a job's state on its catalog row (not over an installed model's)."""
        table = self.model_table
        row = table.get_model_row(view.row_key) if view.row_key else None
        if row is not None and not (row.installed and view.state != "done"):
            status = row_status_for_job(view)
            table.update_row(dataclasses.replace(row, status=status, progress=view.fraction))

    def notify(  # type: ignore[override]
        self,
        message: str,
        *,
        title: str = "",
        severity: Any = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """A notification whose text is shown literally, whoever asks (widgets' ``notify``
        passes ``markup=True``): names and errors in it come from files and servers, so no
        markup is parsed and control characters are shown escaped."""
        super().notify(clean(str(message)), title=clean_line(title), severity=severity,
                       timeout=timeout, markup=False)

    def alert(self, message: str, title: str = "", severity: str = "information") -> None:
        """A notification, plus the terminal bell when ``settings.bell`` is on."""
        self.notify(message, title=title, severity=severity)  # type: ignore[arg-type]
        if self.settings.bell:
            self.bell()

    @on(ModelTable.ViewChanged, "#models")
    def _view_changed(self, message: ModelTable.ViewChanged) -> None:
        if not self._ui_alive():
            return
        self._update_table_status(message.shown, message.total, message.description)

    def _update_table_status(
        self, shown: int | None = None, total: int | None = None, description: str | None = None
    ) -> None:
        table = self.model_table
        shown = len(table.visible_keys) if shown is None else shown
        total = len(table.all_rows) if total is None else total
        description = table.describe() if description is None else description
        text = f"{shown} of {total} models"
        self.query_one("#table-status", Static).update(
            f"{text} | {clean_line(description)}" if description else text, layout=False
        )

    @on(ModelTable.Activated, "#models")
    def _row_activated(self, message: ModelTable.Activated) -> None:
        row = message.row
        if row.installed:
            self.load_row(row)
        elif row.status in ("queued", "downloading", "paused"):
            self.notify(f"{row.name} is {row.status}", severity="warning")
        elif len(row.quants) > 1:
            self.pick_quant(row)
        else:
            self.download_row(row, row.quant)

    # -- runtime ---------------------------------------------------------------------------

    def _follow_runtime(self) -> None:
        """Subscribe to the runtime's lifecycle events (once; builds the runtime)."""
        if self._runtime_unsubscribe is None:
            self._runtime_unsubscribe = wiring.subscribe_runtime(
                self.services, lambda event: self.post_message(RuntimeChanged(event))
            )

    def _row_of_model(self, model_id: str) -> ModelRow | None:
        return next(
            (r for r in self.model_table.all_rows.values() if r.model_id == model_id), None
        )

    def load_row(self, row: ModelRow, force: bool = False, options: Any = None) -> None:
        """Load an installed model (an async worker; the runtime loads in its threads) with
        ``options``, else those remembered for it ("Load with…"), else :attr:`load_options`."""
        if row.model_id is None:
            return
        if row.status == "loaded" and row.model_id == self._active_model and options is None:
            self.notify(f"{row.name} is already loaded")
            self.show_console = True
            return
        self._follow_runtime()
        self._load_model(row, force, options)

    @work(exclusive=True, group="load", exit_on_error=False)
    async def _load_model(self, row: ModelRow, force: bool, options: Any = None) -> None:
        from tui.runtime.errors import WontFitError

        assert row.model_id is not None
        if options is None:
            options = await asyncio.to_thread(self.remembered_options, row.model_id)
        options = options or self.load_options
        self._loaded_with[row.model_id] = options
        try:
            name = await wiring.load_model(self.services, row.model_id, force, options)
        except WontFitError as exc:
            # The message without the CLI's "--force" hint: the dialog offers "Load anyway".
            self.post_message(LoadRefused(row, " ".join(exc.message.split())))
            return
        self._model_loaded(row.model_id, name)

    def _model_loaded(self, model_id: str, name: str) -> None:
        self._active_model = model_id
        self.prompt_console.use_model(model_id, name, self._load_text(model_id))
        self.notify(f"{name} loaded")

    def _load_text(self, model_id: str) -> str:
        """How the model was loaded, for the console's model line: ``ctx 4,096 | gpu all``,
        plus threads and parallel answers when they were set."""
        info = next((m for m in self.services.runtime.loaded() if m.id == model_id), None)
        if info is None:
            return ""
        parts = [f"ctx {info.context_length:,}"] if info.context_length else []
        if info.kind == "gguf":
            layers = info.gpu_layers
            parts.append("cpu" if layers == 0 else "gpu all" if layers < 0
                         else f"gpu {layers} layers")
        options = self._loaded_with.get(model_id)
        if options is not None and options.threads:
            parts.append(f"{options.threads} threads")
        if options is not None and options.parallel:
            parts.append(f"{info.slots} parallel")
        return " | ".join(parts)

    def chat_store(self) -> Any:
        """The conversations and remembered load options (in the inventory's SQLite)."""
        from tui.chat import ChatStore

        return ChatStore(self.services.db)

    def remembered_options(self, model_id: str) -> Any:
        """The load options remembered for ``model_id`` (None: none; blocking SQLite)."""
        try:
            return self.chat_store().load_options(model_id)
        except ModelDeckError as exc:
            self.log.warning(f"load options of {model_id}: {exc}")
            return None

    @on(LoadRefused)
    def _load_refused(self, message: LoadRefused) -> None:
        row = message.row
        self.notify(message.reason, title=f"{row.name} won't fit", severity="warning")

        def answered(yes: bool | None) -> None:
            if yes:
                self.load_row(row, force=True)

        question = f"{clean_line(row.name)} won't fit in free memory.\nLoad anyway?"
        self.push_screen(ConfirmScreen(question, yes="Load anyway", no="Cancel"), answered)

    @on(RuntimeChanged)
    def _runtime_changed(self, message: RuntimeChanged) -> None:
        if not self._ui_alive():
            return
        event = message.event
        state = str(event.state)
        row = self._row_of_model(event.model_id)
        status = {"loading": "loading", "loaded": "loaded", "unloading": "unloading",
                  "unloaded": "installed", "failed": "installed"}.get(state)
        if row is not None and status is not None and row.installed:
            self.model_table.update_row(dataclasses.replace(row, status=status))
        name = row.name if row is not None else event.model_id
        console = self.prompt_console
        if state == "loading":
            console.use_model(None, f"{name} (loading…)")
        elif state == "loaded":
            self._active_model = event.model_id
            console.use_model(event.model_id, name, self._load_text(event.model_id))
        elif state in ("unloaded", "failed") and self._active_model == event.model_id:
            self._active_model = None
            console.set_model(None)
        elif state == "failed" and console.model_name and "loading" in console.model_name:
            console.set_model(None)
        # A failed load is reported by the load worker (won't fit → the force question).
        if state == "unloaded" and event.message not in ("unload all",):
            self.notify(f"{name} unloaded ({event.message})")

    def action_unload(self) -> None:
        """Unload the model under the cursor (or the one answering in the console)."""
        row = self.model_table.current_row()
        model_id = row.model_id if row is not None and row.status == "loaded" else None
        model_id = model_id or self._active_model
        if model_id is None:
            self.notify("No model is loaded", severity="warning")
            return
        self.prompt_console.cancel_answer()
        self._unload_model(model_id)

    @work(group="unload", exit_on_error=False)
    async def _unload_model(self, model_id: str) -> None:
        await wiring.unload_model(self.services, model_id)

    # -- downloads -------------------------------------------------------------------------

    def pick_quant(self, row: ModelRow) -> None:
        """A palette of the entry's quants with their sizes; picking one queues it."""
        entry = self._entries.get(row.entry_id) if row.entry_id else None
        choices = []
        for quant in row.quants:
            size = entry.size_for(quant) if entry is not None else None
            choices.append((literal(f"Download {row.name} {quant}"),
                            partial(self.download_row, row, quant), format_size(size)))
        self.search_commands(choices, placeholder=f"Which quant of {clean_line(row.name)}?")

    def download_row(self, row: ModelRow, quant: str | None) -> None:
        """Queue a download of a catalog row."""
        if row.entry_id is None:
            return
        self.notify(f"Queued {row.name} {quant or ''}".rstrip())
        self._start_download(row.entry_id, quant)

    @work(group="download-actions", exit_on_error=False)
    async def _start_download(self, entry_id: str, quant: str | None) -> None:
        # On the loop: enqueue is one small SQLite write and wakes the service's scheduler.
        wiring.start_download(self.services, entry_id, quant)

    @on(DownloadsPanel.ActionRequested, "#downloads")
    def _download_action(self, message: DownloadsPanel.ActionRequested) -> None:
        self._run_download_action(message.job_id, message.action)

    @work(group="download-actions", exit_on_error=False)
    async def _run_download_action(self, job_id: str, action: str) -> None:
        await wiring.download_action(self.services, job_id, action)

    # -- delete ----------------------------------------------------------------------------

    @on(ModelTable.DeleteRequested, "#models")
    def _delete_requested(self, message: ModelTable.DeleteRequested) -> None:
        row = message.row
        if row.model_id is None:
            return
        loaded = row.status in ("loaded", "loading") or (
            wiring.runtime_built(self.services) and self.services.runtime.is_loaded(row.model_id)
        )
        if loaded:
            self.notify(f"{row.name} is loaded: unload first (u)", severity="warning")
            return
        self._plan_delete(row)

    @work(thread=True, group="delete", exit_on_error=False)
    def _plan_delete(self, row: ModelRow) -> None:
        assert row.model_id is not None
        freed, forget_only, lines = wiring.plan_delete(self.services, row.model_id)
        self.post_message(DeletePlanned(row, freed, forget_only, lines))

    @on(DeletePlanned)
    def _delete_planned(self, message: DeletePlanned) -> None:
        row = message.row
        name = clean_line(row.name)
        if message.forget_only:
            question = (f"Forget {name}?\nIts files are outside the models folder "
                        "and stay on disk.")
        else:
            size = formatting.size(message.freed_bytes)
            question = f"Delete {name}?\nThis frees {size} on the models volume."

        def answered(yes: bool | None) -> None:
            if yes and row.model_id:
                self._delete_model(row.model_id, row.name)

        self.push_screen(
            ConfirmScreen(question, yes="Delete", no="Keep", details=message.lines), answered
        )

    @work(thread=True, group="delete", exit_on_error=False)
    def _delete_model(self, model_id: str, name: str) -> None:
        freed, kept = wiring.delete_model(self.services, model_id)
        self.post_message(ModelDeleted(name, freed, kept))
        self.post_message(ModelsLoaded(wiring.load_rows(self.services)))

    @on(ModelDeleted)
    def _model_deleted(self, message: ModelDeleted) -> None:
        self.notify(f"Deleted {message.name}, freed {formatting.size(message.freed_bytes)}",
                    markup=False)
        for line in message.kept:
            self.notify(line, severity="warning", markup=False)

    # -- add model / Hub search ------------------------------------------------------------

    def action_add_model(self, repo: str | None = None) -> None:
        """The add-custom-model modal (Hub repo, URL or local path)."""

        def done(entry_ids: list[str] | None) -> None:
            if entry_ids:
                self.notify(f"Added {', '.join(entry_ids)}")
                self._load_rows()

        self.push_screen(AddModelScreen(self.services, repo=repo), done)

    def action_hub_search(self) -> None:
        """Search the Hub for GGUF repos; picking one opens the add modal on it."""

        def picked(repo: str | None) -> None:
            if repo:
                self.action_add_model(repo)

        self.push_screen(HubSearchScreen(), picked)

    # -- console ---------------------------------------------------------------------------

    @on(PromptConsole.AnswerDone, "#console")
    def _answer_done(self, message: PromptConsole.AnswerDone) -> None:
        """Show the answer's speed in the model's row."""
        speed = message.metrics.tokens_per_s
        row = self._row_of_model(message.model_id) if speed else None
        if row is not None:
            self.model_table.update_row(dataclasses.replace(row, tokens_per_s=speed))

    @on(PromptConsole.LeaveRequested, "#console")
    def _leave_console(self) -> None:
        self._focus_now(self.model_table)

    def _to_console(self) -> PromptConsole:
        """Show the console with the focus on its prompt line."""
        self.show_console = True
        console = self.prompt_console
        self._focus_now(console.prompt_input)
        return console

    def action_new_chat(self) -> None:
        """A new conversation in the console (the current one stays saved)."""
        self._to_console().new_chat()

    def action_clear_chat(self) -> None:
        """Empty the console's conversation."""
        self._to_console().clear_chat()

    def action_open_chat(self) -> None:
        """The saved conversations with the loaded model, newest first; one reopens."""
        model_id = self.prompt_console.model_id
        if model_id is None:
            self.notify("Load a model first: its saved chats are listed", severity="warning")
            return
        self._list_chats(model_id)

    @work(thread=True, group="chats", exit_on_error=False)
    def _list_chats(self, model_id: str) -> None:
        chats = self.chat_store().list(model_id)
        self.call_from_thread(self._show_chats, model_id, chats)

    def _show_chats(self, model_id: str, chats: list[Any]) -> None:
        if not self._ui_alive():
            return
        if not chats:
            self.notify("No saved chats with this model yet")
            return

        def picked(conversation_id: str | None) -> None:
            if conversation_id:
                self._open_chat(conversation_id)

        name = self.prompt_console.model_name or model_id
        self.push_screen(ChatListScreen(name, chats, self.chat_store, now=self._now), picked)

    @work(thread=True, group="chats", exit_on_error=False)
    def _open_chat(self, conversation_id: str) -> None:
        session = self.chat_store().open(conversation_id)
        self.call_from_thread(self._chat_opened, session)

    def _chat_opened(self, session: Any) -> None:
        console = self.prompt_console
        if session is None:
            self.notify("That chat was deleted meanwhile", severity="warning")
        elif session.model_id != console.model_id:
            self.notify("That chat belongs to a model no longer loaded", severity="warning")
        else:
            self._to_console().open_session(session)

    def action_load_with(self) -> None:
        """The "Load with…" modal for the model under the cursor (or the loaded one): context
        length, GPU layers, threads, parallel answers; saved, they are remembered for that
        model and it is loaded with them."""
        row = self.model_table.current_row()
        if row is None or not row.installed or row.model_id is None:
            row = self._row_of_model(self._active_model) if self._active_model else None
        if row is None or row.model_id is None:
            self.notify("Select an installed model first", severity="warning")
            return
        self._ask_load_options(row)

    @work(thread=True, group="chats", exit_on_error=False)
    def _ask_load_options(self, row: ModelRow) -> None:
        assert row.model_id is not None
        current = self.remembered_options(row.model_id)
        self.call_from_thread(self._show_load_options, row, current)

    def _show_load_options(self, row: ModelRow, current: Any) -> None:
        if not self._ui_alive() or isinstance(self.screen, LoadOptionsScreen):
            return

        def done(options: Any) -> None:
            if options is not None:
                self._remember_and_load(row, options)

        parallel = self.settings.parallel_requests
        self.push_screen(LoadOptionsScreen(row.name, current, parallel_default=parallel), done)

    @work(group="chats", exit_on_error=False)
    async def _remember_and_load(self, row: ModelRow, options: Any) -> None:
        assert row.model_id is not None
        await asyncio.to_thread(self.chat_store().set_load_options, row.model_id, options)
        self.load_row(row, options=options)

    @on(PromptConsole.SystemPromptRequested, "#console")
    def _edit_system_prompt(self, message: PromptConsole.SystemPromptRequested) -> None:
        def done(text: str | None) -> None:
            if text is not None:
                self.prompt_console.set_system_prompt(text)
                self.notify("System prompt updated")

        self.push_screen(
            TextPromptScreen("System prompt", message.current, "You are a helpful assistant."),
            done,
        )

    def action_edit_gen_params(self) -> None:
        """The generation-parameters modal (F3 in the console); saved values apply to the
        next answers, for this session."""
        if isinstance(self.screen, GenParamsScreen):
            return

        def done(params: Any) -> None:
            if params is not None:
                self.set_gen_params(params)
                self.notify(f"Parameters: {describe_params(params)}")

        self.push_screen(GenParamsScreen(self.gen_params), done)

    def set_gen_params(self, params: Any) -> None:
        """Use ``params`` (a GenParams, None: runtime defaults) and show them in the console."""
        self.gen_params = params
        self.prompt_console.set_params_text(describe_params(params) if params else "")

    # -- actions ---------------------------------------------------------------------------

    async def action_quit(self) -> None:
        """Quit; asks first while downloads are active."""
        active = self.downloads_panel.active_count
        if not active:
            self.exit()
            return
        plural = "s" if active != 1 else ""
        question = f"{active} download{plural} in progress will resume next start. Quit?"

        def answered(yes: bool | None) -> None:
            if yes:
                self.exit()

        self.push_screen(ConfirmScreen(question, yes="Quit", no="Stay"), answered)

    def help_sections(self) -> list[tuple[str, Sequence[BindingType]]]:
        """Binding groups shown by the help screen (read from the classes' ``BINDINGS``)."""
        palette = Binding(self.COMMAND_PALETTE_BINDING, "command_palette", "Command palette")
        return [
            ("Global", [*type(self).BINDINGS, palette, *App.BINDINGS]),
            ("Model table", ModelTable.BINDINGS),
            ("Filter", FilterInput.BINDINGS),
            ("Downloads", DownloadsPanel.BINDINGS),
            ("Console", [*PromptConsole.BINDINGS, *PromptInput.BINDINGS]),
            ("Dialogs", ConfirmScreen.BINDINGS),
            ("Parameters", GenParamsScreen.BINDINGS),
            ("Load with", LoadOptionsScreen.BINDINGS),
            ("Saved chats", ChatListScreen.BINDINGS),
        ]

    def action_help(self) -> None:
        """Show every binding."""
        self.push_screen(HelpScreen(binding_rows(self, self.help_sections())))

    def action_filter(self) -> None:
        """Show and focus the filter line."""
        filter_input = self.query_one("#filter", FilterInput)
        filter_input.add_class("-active")
        self._focus_now(filter_input)

    def action_clear_filter(self) -> None:
        """Clear and hide the filter, back to the table."""
        filter_input = self.query_one("#filter", FilterInput)
        filter_input.value = ""
        filter_input.remove_class("-active")
        self.model_table.filter_text = ""
        self._focus_now(self.model_table)

    def action_focus_table(self) -> None:
        """Back to the table, keeping the filter."""
        filter_input = self.query_one("#filter", FilterInput)
        if not filter_input.value:
            filter_input.remove_class("-active")
        self._focus_now(self.model_table)

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.model_table.filter_text = event.value

    def action_toggle_sidebar(self) -> None:
        """Show/hide the resource sidebar."""
        self.show_sidebar = not self.show_sidebar

    def action_toggle_downloads(self) -> None:
        """Show/hide the downloads panel."""
        self.show_downloads = not self.show_downloads

    def action_toggle_console(self) -> None:
        """Show/hide the prompt console."""
        self.show_console = not self.show_console

    def action_toggle_theme(self) -> None:
        """Dark ↔ light."""
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def action_pick_model(self) -> None:
        """Quick-switch: a palette of installed models."""
        rows = [r for r in self.model_table.all_rows.values() if r.installed]
        if not rows:
            self.notify("No installed models yet", severity="warning")
            return
        self.search_commands(
            [(literal(f"Load {r.name}"), partial(self.load_row, r), literal(r.quant or ""))
             for r in rows],
            placeholder="Load which model?",
        )

    def get_key_display(self, binding: Binding) -> str:
        """Key names for the footer and help; plain ASCII in ASCII mode."""
        display = super().get_key_display(binding)
        if self.settings.ascii and not display.isascii():
            names = {"enter": "enter", "up": "up", "down": "down", "left": "left",
                     "right": "right"}
            keys = [k.strip() for k in binding.key.split(",")]
            display = ", ".join(names.get(k, k.replace("ctrl+", "^")) for k in keys)
        return display

    def palette_commands(self) -> list[tuple[str, Callable[[], object], str]]:
        """Everything the command palette offers."""
        commands: list[tuple[str, Callable[[], object], str]] = [
            ("Toggle sidebar", self.action_toggle_sidebar, "Show/hide resources"),
            ("Toggle downloads", self.action_toggle_downloads, "Show/hide the downloads panel"),
            ("Toggle console", self.action_toggle_console, "Show/hide the prompt console"),
            ("Switch theme", self.action_toggle_theme, "Dark / light"),
            ("Installed only", self.model_table.action_toggle_installed, "Status filter"),
            ("Help", self.action_help, "All key bindings"),
            ("Add model", self.action_add_model, "Hub repo, URL or local file"),
            ("Search the Hub", self.action_hub_search, "GGUF repos on Hugging Face"),
            ("Unload model", self.action_unload, "Free the loaded model's memory"),
            ("Generation parameters" + ("..." if self.settings.ascii else "…"),
             self.action_edit_gen_params, "Temperature, top_p, max tokens, seed, stop"),
            ("New chat", self.action_new_chat, "A new conversation in the console"),
            ("Clear chat", self.action_clear_chat, "Empty the console's conversation"),
            ("Open chat" + ("..." if self.settings.ascii else "…"), self.action_open_chat,
             "Saved conversations with the loaded model"),
            ("Load with" + ("..." if self.settings.ascii else "…"), self.action_load_with,
             "Context length, GPU layers, threads (remembered per model)"),
        ]
        for row in self.model_table.all_rows.values():
            if row.installed:
                commands.append(
                    (literal(f"Load {row.name}"), partial(self.load_row, row), "Load model")
                )
            elif row.entry_id is not None:
                entry = self._entries.get(row.entry_id)
                for quant in row.quants or (row.quant,):
                    label = literal(f"Download {row.name} {quant or ''}".rstrip())
                    size = format_size(entry.size_for(quant) if entry and quant else None)
                    size = size or (format_size(row.size_bytes) if quant == row.quant else "")
                    commands.append((label, partial(self.download_row, row, quant), size))
        return commands
