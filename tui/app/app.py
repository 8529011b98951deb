"""``ModelDeckApp``: the dashboard, built from :class:`~tui.services.Services`.

The App keeps the services, their lifecycle, the load/unload/delete flows, quit and theme; the
widgets own their work (the downloads panel follows the download service and the change feed
and runs job actions; the table filters and sorts) and tell the App with messages, which it
turns into what their siblings show (a job mirrored on its table row, rows reloaded when a
download finishes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from textual import events, on, work
from textual.app import App, ComposeResult, ScreenStackError
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Footer, Input
from textual.worker import Worker, WorkerState

from tui import formatting
from tui.app import reclaim_ui, wiring
from tui.app.commands import ModelDeckCommands, model_choices, quant_choices
from tui.app.messages import (
    DeletePlanned,
    InventoryChanged,
    LiveProblem,
    LoadRefused,
    ModelBusy,
    ModelDeleted,
    ModelsLoaded,
    ResourcesSampled,
    RuntimeChanged,
)
from tui.app.paths import styles_dir
from tui.app.screens import (
    ConfirmScreen,
    GenParamsScreen,
    describe_params,
)
from tui.app.server_control import ServerControl
from tui.app.views import JobView, ModelRow, load_text, row_status_for_job
from tui.app.widgets import (
    DownloadsPanel,
    ModelBrowser,
    ModelTable,
    PromptConsole,
    ResourceLine,
    ResourceSidebar,
    ServerPanel,
)
from tui.app.widgets.resource_sidebar import SamplerLike
from tui.errors import ModelDeckError
from tui.terminal_text import clean, clean_line

if TYPE_CHECKING:
    from tui.services import Services

WidgetT = TypeVar("WidgetT", bound=Widget)
THEMES = {"dark": "textual-dark", "light": "textual-light"}
USED_REFRESH_S = 30.0  # "Used" times on screen are re-formatted this often
USED_REFRESH_LOW_REDRAW_S = 120.0  # … and this often with ``low_redraw``
UPDATE_CHECK_S = 6 * 3600.0  # Hub models are checked for newer commits this often


class ModelDeckApp(App[None]):
    """Catalog + installed models, downloads, resources and a prompt console.

    Args:
        services: the service container (inventory, catalog, downloads, runtime, sampler).
        sampler: replaces ``services.sampler`` (tests inject fixed readings).
        now: wall-clock source for "last used" and finished jobs' age (tests: a fixed time).
        cursor_blink: blink input cursors (off for snapshots; default from ``CURSOR_BLINK``).
        start_sampler: start the resource sampler worker on mount.
        watch_downloads: the downloads panel follows (and runs) the download service.
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
        Binding("A", "toggle_server", "API server", show=False),
        Binding("L", "load_with", "Load with…", show=False),
        Binding("t", "toggle_theme", "Theme", show=False),
        Binding("F", "reclaim", "Reclaim disk space", show=False),
        # The panel's keys, on the job of the table's row (cancel and retry ask first).
        Binding("p", "download_key('pause')", "Pause download", show=False),
        Binding("r", "download_key('resume')", "Resume download", show=False),
        Binding("c", "download_key('cancel')", "Cancel download", show=False),
        Binding("R", "download_key('retry')", "Retry download", show=False),
    ]

    show_sidebar: reactive[bool] = reactive(True)
    show_downloads: reactive[bool] = reactive(True)
    show_console: reactive[bool] = reactive(False)

    def __init__(
        self,
        services: Services,
        *,
        sampler: SamplerLike | None = None,
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
        self._shutting_down = False
        self._background_started = False
        self._active_model: str | None = None  # model id answering in the console
        self._console_model: str | None = None  # model id the console's label names
        self._runtime_unsubscribe: Callable[[], None] | None = None
        self._loaded_with: dict[str, Any] = {}  # model id -> LoadOptions of its last load
        # LoadOptions for loads of models with none remembered (None: runtime defaults)
        self.load_options: Any = None
        # GenParams for answers (None: runtime defaults); set with F3, kept for the session.
        self.gen_params: Any = None
        self.disk_usage: tuple[int, int] | None = None  # the models volume's (free, total)
        self.low_disk = False  # below low_disk_warning (tui.app.reclaim_ui)
        self.server = ServerControl(self)  # the API server in this loop (A)

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        settings = self.settings
        yield ResourceLine("", id="resource-line")
        with Horizontal(id="body"):
            with Vertical(id="main"):
                yield ModelBrowser(
                    self.services, now=self._now, cursor_blink=self.cursor_blink,
                    used_refresh=USED_REFRESH_LOW_REDRAW_S if settings.low_redraw
                    else USED_REFRESH_S,
                    prime_changes=self._watch_changes, compute_fit=self._compute_fit,
                    id="browser")
                yield ServerPanel(low_redraw=settings.low_redraw, id="server")
                yield DownloadsPanel(self.services, ascii=settings.ascii, now=self._now,
                                     low_redraw=settings.low_redraw, id="downloads")
                yield PromptConsole(
                    cursor_blink=self.cursor_blink, runtime=lambda: self.services.runtime,
                    chats=self.chat_store, params=lambda: self.gen_params, now=self._now,
                    id="console",
                )
            yield ResourceSidebar(ascii=settings.ascii, low_redraw=settings.low_redraw,
                                  id="sidebar")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.set_class(self.settings.ascii, "-ascii")
        self.set_class(self.settings.low_redraw, "-low-redraw")
        self._apply_visibility()
        self.model_table.focus()
        self.browser.load_rows()

    @property
    def browser(self) -> ModelBrowser:
        """The filter, the model table and its status line."""
        return self._main("#browser", ModelBrowser)

    @property
    def model_table(self) -> ModelTable:
        """The model table."""
        return self._main("#models", ModelTable)

    @property
    def downloads_panel(self) -> DownloadsPanel:
        """The downloads panel."""
        return self._main("#downloads", DownloadsPanel)

    @property
    def server_panel(self) -> ServerPanel:
        """The API server's panel (hidden while the server is off)."""
        return self._main("#server", ServerPanel)

    @property
    def sidebar(self) -> ResourceSidebar:
        """The resource sidebar."""
        return self._main("#sidebar", ResourceSidebar)

    @property
    def prompt_console(self) -> PromptConsole:
        """The prompt console."""
        return self._main("#console", PromptConsole)

    @property
    def catalog_entries(self) -> Mapping[str, Any]:
        """The catalog entries by id, as read with the rows (quant sizes for the pickers)."""
        return self.browser.entries

    @property
    def sampler(self) -> SamplerLike:
        """The injected sampler, else ``services.sampler``."""
        if self._sampler is None:
            self._sampler = self.services.sampler
        return self._sampler

    def _main(self, selector: str, expect_type: type[WidgetT] = Widget) -> WidgetT:
        """A widget of the dashboard itself, found even while a dialog is on top (``query_one``
        on the app searches only the active screen)."""
        if not self.screen_stack:
            raise NoMatches(f"No nodes match {selector!r}: no screen yet")
        return self.screen_stack[0].query_one(selector, expect_type)

    def ui_alive(self) -> bool:
        """False before the widgets are composed and once the app is shutting down (late
        service events are then dropped)."""
        if self._shutting_down:
            return False
        try:
            self._main("#models", ModelTable)
        except (NoMatches, ScreenStackError):
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
        self._main("#sidebar").set_class(not self.show_sidebar, "-hidden")
        self._main("#resource-line").set_class(not self.show_sidebar, "-hidden")
        self._main("#downloads").set_class(not self.show_downloads, "-hidden")
        self._main("#console").set_class(not self.show_console, "-hidden")

    # ``App.is_mounted`` is a method (is *a widget* mounted), always true as a condition: the
    # watchers ask whether the widgets exist yet.

    def watch_show_sidebar(self) -> None:
        if self.ui_alive():
            self._apply_visibility()

    def watch_show_downloads(self, show: bool) -> None:
        if self.ui_alive():
            self._apply_visibility()
            if not show and self.downloads_panel.has_focus:
                self._focus_now(self.model_table)

    def watch_show_console(self, show: bool) -> None:
        if self.ui_alive():
            self._apply_visibility()
            if show:
                self._focus_now(self.prompt_console.prompt_input)
            elif self.prompt_console.has_focus_within:
                self._focus_now(self.model_table)

    @on(events.DescendantFocus)
    def _input_focused(self, event: events.DescendantFocus) -> None:
        """No input cursor blinks when ``cursor_blink`` is off (low redraw), in dialogs too."""
        if not self.cursor_blink and isinstance(event.widget, Input):
            event.widget.cursor_blink = False

    # -- lifecycle -------------------------------------------------------------------------

    def _start_background(self) -> None:
        """Sampler, downloads, change feed, discovery and update checks: started once the
        rows are on screen (none of them delays the first frame)."""
        if self._background_started:
            return
        self._background_started = True
        if self._start_sampler:
            self.sidebar.follow(lambda: self.sampler)
        self.downloads_panel.follow(downloads=self._watch_downloads, changes=self._watch_changes)
        if self._watch_folders:
            self._start_discovery()
        if self._check_updates:
            self.browser.check_updates()
            self.set_interval(UPDATE_CHECK_S, self.browser.check_updates, name="update-check")
        if self.settings.serve_with_dashboard:
            self.server.start()

    @work(thread=True, group="discovery", exit_on_error=False)
    def _start_discovery(self) -> None:
        """Scan the managed folders, then follow them (the watcher's own thread; building it
        imports the metadata readers: not on the event loop)."""
        if not self._shutting_down:
            wiring.watch_folders(self.services, lambda lines: self.post_message(LiveProblem(lines)))
        if self._shutting_down:  # the app ended meanwhile: on_unmount may have missed it
            wiring.stop_live(self.services)

    async def on_unmount(self) -> None:
        """Stop the download queue (running jobs stay queued for the next start) and the
        runtime (unloads every model)."""
        self._shutting_down = True
        await self.server.close()  # its open answers end before the runtime closes
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

    # -- rows ------------------------------------------------------------------------------

    @on(ModelsLoaded)
    def _models_loaded(self, message: ModelsLoaded) -> None:
        """The browser showed a new set of rows: mark on them what the runtime and the
        downloads know, and start the background work after the first frame."""
        if not self.ui_alive():
            return
        self.call_after_refresh(self._start_background)
        for view in self.downloads_panel.jobs.values():  # rows read again: jobs not done
            if view.state not in ("done", "cancelled"):  # (paused and failed ones too)
                self._mirror_job(view)
        for row in message.rows:
            if row.status == "loaded":
                self.prompt_console.set_model(row.name)
        self._mark_loaded_rows()
        self.models_ready.set()

    def _mark_loaded_rows(self) -> None:
        """Rows of models the runtime holds show "loaded" and the requests the API server
        answered with them (after a reload from the inventory)."""
        if not wiring.runtime_built(self.services):
            return
        table = self.model_table
        served = self.server_panel.per_model
        for row in list(table.all_rows.values()):
            loaded = row.model_id and self.services.runtime.is_loaded(row.model_id)
            count = served.get(row.model_id or "", 0)
            if (loaded and row.status != "loaded") or row.served != count:
                table.update_row(dataclasses.replace(
                    row, status="loaded" if loaded else row.status, served=count))

    @on(ResourcesSampled)
    def _resources_sampled(self, message: ResourcesSampled) -> None:
        """A sample the sidebar showed, bubbled up: the one-line form shows it too."""
        if self.ui_alive():
            self._main("#resource-line", ResourceLine).update_snapshot(message.snapshot)
            reclaim_ui.check_disk(self, message.snapshot)

    def action_reclaim(self) -> None:
        """Propose what to delete to get the models volume back above the low-disk level."""
        reclaim_ui.start(self)

    @on(InventoryChanged)
    def _inventory_changed(self) -> None:
        if self.ui_alive():
            self.browser.load_rows()

    @on(LiveProblem)
    def _live_problem(self, message: LiveProblem) -> None:
        title = "Inventory" if message.severity == "error" else "Discovery"
        for line in message.lines[:5]:
            self.notify(line, title=title, severity=message.severity, timeout=15)

    @on(ModelTable.Activated, "#models")
    def _row_activated(self, message: ModelTable.Activated) -> None:
        row = message.row
        if row.installed or row.status == "remote":  # a remote engine's model: no download
            self.load_row(row)
        elif row.status in ("queued", "downloading", "paused"):
            self.notify(f"{row.name} is {row.status}", severity="warning")
        elif len(row.quants) > 1:
            self.pick_quant(row)
        else:
            self.download_row(row, row.quant)

    # -- downloads: the panel's messages, and the table's download keys ----------------------

    @on(DownloadsPanel.JobChanged)
    def _job_changed(self, message: DownloadsPanel.JobChanged) -> None:
        """A job's view, bubbled up from the panel that showed it: mirror it on its row."""
        if self.ui_alive():
            self._mirror_job(message.view)

    def _mirror_job(self, view: JobView) -> None:
        """Show a job's state on its catalog row (not over an installed model's)."""
        table = self.model_table
        row = table.get_model_row(view.row_key) if view.row_key else None
        if row is not None and not (row.installed and view.state != "done"):
            status = row_status_for_job(view)
            table.update_row(dataclasses.replace(row, status=status, progress=view.fraction))

    @on(DownloadsPanel.JobFinished)
    @on(DownloadsPanel.JobFailed)
    @on(DownloadsPanel.JobStalled)
    @on(DownloadsPanel.JobWarned)
    def _job_transition(self, message: DownloadsPanel.JobMessage) -> None:
        """What a job did, told by the panel: alert (a finished download: rows read again)."""
        if not self.ui_alive():  # told while the app shuts down
            return
        view = message.view
        if isinstance(message, DownloadsPanel.JobFinished):
            self.alert(f"{view.name} downloaded", title="Download finished")
            self.browser.load_rows()
        elif isinstance(message, DownloadsPanel.JobFailed):
            self.alert(f"{view.name}: {view.error or 'failed'}", "Download failed", "error")
        elif isinstance(message, DownloadsPanel.JobStalled):
            self.alert(f"{view.name} stalled; retrying", "Download stalled", "warning")
        else:
            self.notify(f"{view.name}: {view.warning}", title="Download warning",
                        severity="warning", timeout=15)

    def action_download_key(self, action: str) -> None:
        """A download key outside the panel: the same action on the job of the table's
        selected row. Cancel and retry ask first (a letter typed on the table by mistake
        must not cost a download)."""
        row = self.model_table.current_row()
        job = self.downloads_panel.job_for_row(row.key) if row is not None else None
        if job is None:
            name = f" of {row.name}" if row is not None else ""
            self.notify(f"No download{name} to {action}", severity="warning")
            return
        self.downloads_panel.request(job.job_id, action, ask=action == "retry")

    def pick_quant(self, row: ModelRow) -> None:
        """A palette of the entry's quants with their sizes; picking one queues it."""
        self.search_commands(quant_choices(self, row),
                             placeholder=f"Which quant of {clean_line(row.name)}?")

    def download_row(self, row: ModelRow, quant: str | None) -> None:
        """Queue a download of a catalog row (the panel runs it)."""
        if row.entry_id is not None:
            self.notify(f"Queued {row.name} {quant or ''}".rstrip())
            self.downloads_panel.start_download(row.entry_id, quant)

    # -- runtime ---------------------------------------------------------------------------

    def follow_runtime(self) -> None:
        """Subscribe to the runtime's lifecycle events (once; builds the runtime)."""
        if self._runtime_unsubscribe is None:
            self._runtime_unsubscribe = wiring.subscribe_runtime(
                self.services, lambda event: self.post_message(RuntimeChanged(event))
            )

    def _row_of_model(self, model_id: str) -> ModelRow | None:
        return next(
            (r for r in self.model_table.all_rows.values() if r.model_id == model_id), None
        )

    def _model_name(self, model_id: str | None) -> str | None:
        row = self._row_of_model(model_id) if model_id else None
        return row.name if row is not None else model_id

    def load_row(self, row: ModelRow, force: bool = False, options: Any = None) -> None:
        """Load an installed model (an async worker; the runtime loads in its threads) with
        ``options``, else those remembered for it ("Load with…"), else :attr:`load_options`.
        The console's own answer is stopped first, as ``u`` does."""
        if row.model_id is None:
            return
        if row.status == "loaded" and row.model_id == self._active_model and options is None:
            self.notify(f"{row.name} is already loaded")
            self.show_console = True
            return
        answering = self._active_model if self.prompt_console.streaming else None
        if answering is not None:
            self.prompt_console.cancel_answer()
        self.follow_runtime()
        self._load_model(row, force, options, settle=answering)

    @work(exclusive=True, group="load", exit_on_error=False)
    async def _load_model(self, row: ModelRow, force: bool, options: Any = None,
                          settle: str | None = None, stop_busy: bool = False) -> None:
        """Load ``row``: after the console's cancelled answer on ``settle`` ends, and, with
        ``stop_busy``, once the busy models are unloaded (their answers stopped)."""
        from tui.runtime.errors import ModelBusyError, WontFitError

        assert row.model_id is not None
        if settle is not None:
            await wiring.settle(self.services, settle)
        if stop_busy:
            await wiring.unload_busy(self.services)
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
        except ModelBusyError as exc:
            self.post_message(ModelBusy(row.model_id, " ".join(exc.message.split()), row))
            return
        self._model_loaded(row.model_id, name)

    def _model_loaded(self, model_id: str, name: str) -> None:
        self._active_model = self._console_model = model_id
        self.prompt_console.use_model(model_id, name, self._load_text(model_id))
        self.notify(f"{name} loaded")

    def _load_text(self, model_id: str) -> str:
        """How the model was loaded, for the console's model line."""
        info = next((m for m in self.services.runtime.loaded() if m.id == model_id), None)
        return load_text(info, self._loaded_with.get(model_id)) if info is not None else ""

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

    @on(ModelBusy)
    def _model_busy(self, message: ModelBusy) -> None:
        """Other clients are answering: stopping them is the user's call."""
        reason = clean_line(message.reason.split(";")[0])
        row = message.row
        if row is None:
            name = clean_line(self._model_name(message.model_id) or message.model_id)
            question = f"{reason}.\nUnload {name} anyway? Those answers will be stopped."
            yes = "Unload anyway"
        else:
            question = (f"{reason}.\nLoad {clean_line(row.name)} anyway? The answers in "
                        "progress will be stopped.")
            yes = "Load anyway"

        def answered(stop: bool | None) -> None:
            if stop and row is None:
                self._unload_model(message.model_id, force=True)
            elif stop and row is not None:
                self._load_model(row, False, stop_busy=True)

        self.push_screen(ConfirmScreen(question, yes=yes, no="Cancel"), answered)

    @on(RuntimeChanged)
    def _runtime_changed(self, message: RuntimeChanged) -> None:
        """Rows and the console's label follow the runtime's events (never display text)."""
        if not self.ui_alive():
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
            self._console_model = event.model_id
            console.use_model(None, f"{name} (loading…)")
        elif state == "loaded":
            self._active_model = self._console_model = event.model_id
            console.use_model(event.model_id, name, self._load_text(event.model_id))
        elif state in ("unloaded", "failed"):
            if self._active_model == event.model_id:
                self._active_model = None
            if self._console_model == event.model_id:  # back to the model that answers
                self._console_model = self._active_model
                if self._active_model is None:
                    console.set_model(None)
                else:
                    console.use_model(self._active_model, self._model_name(self._active_model),
                                      self._load_text(self._active_model))
        # A failed load is reported by the load worker (won't fit → the force question).
        if state == "unloaded" and event.message not in ("unload all",):
            self.notify(f"{name} unloaded ({event.message})")

    def action_unload(self) -> None:
        """Unload the model under the cursor (or the one answering in the console); the
        console's own answer is stopped first, others' only if the user says so."""
        row = self.model_table.current_row()
        model_id = row.model_id if row is not None and row.status == "loaded" else None
        model_id = model_id or self._active_model
        if model_id is None:
            self.notify("No model is loaded", severity="warning")
            return
        self.prompt_console.cancel_answer()
        self._unload_model(model_id)

    @work(group="unload", exit_on_error=False)
    async def _unload_model(self, model_id: str, force: bool = False) -> None:
        from tui.runtime.errors import ModelBusyError

        try:
            await wiring.unload_model(self.services, model_id, force)
        except ModelBusyError as exc:
            self.post_message(ModelBusy(model_id, " ".join(exc.message.split())))

    # -- API server --------------------------------------------------------------------------

    def action_toggle_server(self) -> None:
        """Start/stop the API server (``modeldeck serve`` in the dashboard, same runtime)."""
        self.server.toggle()

    @property
    def api_server(self) -> Any:
        """The running API server's handle (None: off)."""
        return self.server.handle

    @property
    def closing(self) -> bool:
        """The app is shutting down (late events are dropped)."""
        return self._shutting_down

    @on(ServerPanel.Sampled)
    def _server_sampled(self, message: ServerPanel.Sampled) -> None:
        """Loaded rows show how many requests the server answered with them."""
        if not self.ui_alive():
            return
        self._mark_loaded_rows()

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
            ConfirmScreen(question, yes="Delete", no="Keep", details=message.lines,
                          destructive=True), answered
        )

    @work(thread=True, group="delete", exit_on_error=False)
    def _delete_model(self, model_id: str, name: str) -> None:
        freed, kept = wiring.delete_model(self.services, model_id)
        self.post_message(ModelDeleted(name, freed, kept))
        self.browser.load_rows()

    @on(ModelDeleted)
    def _model_deleted(self, message: ModelDeleted) -> None:
        self.notify(f"Deleted {message.name}, freed {formatting.size(message.freed_bytes)}",
                    markup=False)
        for line in message.kept:
            self.notify(line, severity="warning", markup=False)

    # -- add model / Hub search ------------------------------------------------------------

    def action_add_model(self, repo: str | None = None) -> None:
        """The add-custom-model modal (Hub repo, URL or local path)."""
        from tui.app.screens.add_model import AddModelScreen

        def done(entry_ids: list[str] | None) -> None:
            if entry_ids:
                self.notify(f"Added {', '.join(entry_ids)}")
                self.browser.load_rows()

        self.push_screen(AddModelScreen(self.services, repo=repo), done)

    def action_hub_search(self) -> None:
        """Search the Hub for GGUF repos; picking one opens the add modal on it."""
        from tui.app.screens.hub_search import HubSearchScreen

        def picked(repo: str | None) -> None:
            if repo:
                self.action_add_model(repo)

        self.push_screen(HubSearchScreen(), picked)

    # -- console ---------------------------------------------------------------------------

    @on(PromptConsole.AnswerDone, "#console")
    def _answer_done(self, message: PromptConsole.AnswerDone) -> None:
        """Show the answer's speed in the model's row."""
        speed = message.metrics.tokens_per_s
        row = self._row_of_model(message.model_id) if speed and self.ui_alive() else None
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
        self._to_console().show_saved_chats()

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
        from tui.app.screens import LoadOptionsScreen

        if not self.ui_alive() or isinstance(self.screen, LoadOptionsScreen):
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

    def action_help(self) -> None:
        """Show every binding (scrollable, and it says how)."""
        from tui.app.screens.help import HelpScreen, binding_rows, help_sections

        rows = binding_rows(self, help_sections(self))
        self.push_screen(HelpScreen(rows, ascii=self.settings.ascii))

    def action_filter(self) -> None:
        """Show and focus the filter line."""
        self.browser.show_filter()

    def action_clear_filter(self) -> None:
        """Clear and hide the filter, back to the table."""
        self.browser.leave_filter(clear=True)

    def action_focus_table(self) -> None:
        """Back to the table (Esc in the downloads panel), keeping the filter."""
        self._focus_now(self.model_table)

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
        choices = model_choices(self)
        if not choices:
            self.notify("No installed models yet", severity="warning")
            return
        self.search_commands(choices, placeholder="Load which model?")

    def get_key_display(self, binding: Binding) -> str:
        """Key names for the footer and help; plain ASCII in ASCII mode."""
        display = super().get_key_display(binding)
        if self.settings.ascii and not display.isascii():
            names = {"enter": "enter", "up": "up", "down": "down", "left": "left",
                     "right": "right"}
            keys = [k.strip() for k in binding.key.split(",")]
            display = ", ".join(names.get(k, k.replace("ctrl+", "^")) for k in keys)
        return display
