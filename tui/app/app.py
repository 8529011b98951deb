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
from textual.reactive import reactive
from textual.widgets import Footer, Input, Static
from textual.worker import Worker, WorkerState

from tui.app import wiring
from tui.app.commands import ModelDeckCommands
from tui.app.messages import (
    AnswerFinished,
    AnswerStarted,
    JobUpdated,
    ModelDeleted,
    ModelsLoaded,
    ResourcesSampled,
    RowsChanged,
    TokensArrived,
)
from tui.app.paths import styles_dir
from tui.app.screens import ConfirmScreen, HelpScreen, TextPromptScreen, binding_rows
from tui.app.views import JobView, MetricsView, ModelRow, format_size, row_status_for_job
from tui.app.widgets import (
    DownloadsPanel,
    ModelTable,
    PromptConsole,
    PromptInput,
    ResourceLine,
    ResourceSidebar,
)

if TYPE_CHECKING:
    from tui.resources.types import Snapshot
    from tui.services import Services

THEMES = {"dark": "textual-dark", "light": "textual-light"}
TOKEN_FLUSH_S = 1 / 30  # console redraw rate while streaming


class SamplerLike(Protocol):
    """What the sidebar needs from :class:`~tui.resources.ResourceSampler` (fakes in tests)."""

    interval: float

    async def run(self, callback: Callable[[Snapshot], object]) -> None: ...

    def history_of(self, name: str) -> list[float]: ...


class FilterInput(Input):
    """The filter line above the table; Esc clears it."""

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
    ) -> None:
        super().__init__()
        self.services = services
        self.settings = services.settings
        self._sampler = sampler
        self._clock = clock
        self._now = now or time.time
        self._start_sampler = start_sampler
        self._watch_downloads = watch_downloads
        blink = self.CURSOR_BLINK if cursor_blink is None else cursor_blink
        self.cursor_blink = blink and not self.settings.low_redraw
        if self.settings.low_redraw:
            self.animation_level = "none"
        self.theme = THEMES.get(self.settings.theme, "textual-dark")
        self.models_ready = asyncio.Event()
        self._job_states: dict[str, str] = {}
        self._pending_tokens: list[str] = []
        self._flush_timer: Any = None
        self._background_started = False

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        ascii = self.settings.ascii
        yield ResourceLine("", id="resource-line")
        with Horizontal(id="body"):
            with Vertical(id="main"):
                filter_input = FilterInput(placeholder="Filter models (Esc clears)", id="filter")
                filter_input.cursor_blink = self.cursor_blink
                yield filter_input
                yield ModelTable(now=self._now, id="models")
                yield Static("", id="table-status", markup=False)
                yield DownloadsPanel(clock=self._clock, ascii=ascii, id="downloads")
                yield PromptConsole(cursor_blink=self.cursor_blink, id="console")
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
                self.prompt_console.prompt_input.focus()
            elif self.prompt_console.has_focus_within:
                self.model_table.focus()

    # -- workers ---------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="rows", exit_on_error=False)
    def _load_rows(self) -> None:
        """Read catalog + inventory (blocking SQLite) and post the rows."""
        self.post_message(ModelsLoaded(wiring.load_rows(self.services)))

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

    async def on_unmount(self) -> None:
        """Stop the download queue on exit; running jobs stay queued for the next start."""
        if self._watch_downloads:
            try:
                await wiring.stop_downloads(self.services)
            except Exception as exc:  # exiting anyway: log, do not raise
                self.log.error(f"stopping downloads failed: {exc!r}")

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

    @on(ModelsLoaded)
    def _models_loaded(self, message: ModelsLoaded) -> None:
        self.call_after_refresh(self._start_background)
        self.model_table.set_rows(message.rows)
        self._update_table_status()
        for row in message.rows:
            if row.status == "loaded":
                self.prompt_console.set_model(row.name)
        self.models_ready.set()

    @on(RowsChanged)
    def _rows_changed(self, message: RowsChanged) -> None:
        self.model_table.update_rows(message.rows)

    @on(ResourcesSampled)
    def _resources_sampled(self, message: ResourcesSampled) -> None:
        self.sidebar.update_snapshot(message.snapshot, message.history)
        self.query_one("#resource-line", ResourceLine).update_snapshot(message.snapshot)

    @on(JobUpdated)
    def _job_updated(self, message: JobUpdated) -> None:
        self.apply_job(message.view)

    def apply_job(self, view: JobView) -> None:
        """Show a job in the panel, mirror it on its table row, alert on transitions."""
        self.downloads_panel.update_job(view)
        table = self.model_table
        row = table.get_model_row(view.row_key) if view.row_key else None
        if row is not None and not (row.installed and view.state != "done"):
            status = row_status_for_job(view)
            table.update_row(dataclasses.replace(row, status=status, progress=view.fraction))
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

    def alert(self, message: str, title: str = "", severity: str = "information") -> None:
        """A notification, plus the terminal bell when ``settings.bell`` is on."""
        self.notify(message, title=title, severity=severity)  # type: ignore[arg-type]
        if self.settings.bell:
            self.bell()

    @on(ModelTable.ViewChanged, "#models")
    def _view_changed(self, message: ModelTable.ViewChanged) -> None:
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
            f"{text} | {description}" if description else text, layout=False
        )

    @on(ModelTable.Activated, "#models")
    def _row_activated(self, message: ModelTable.Activated) -> None:
        row = message.row
        if row.installed:
            self.load_row(row)
        else:
            self.download_row(row, row.quant)

    def load_row(self, row: ModelRow) -> None:
        """Load an installed model (in a thread)."""
        if row.model_id is None:
            return
        self.notify(f"Loading {row.name}…")
        self._load_model(row.model_id)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load_model(self, model_id: str) -> None:
        name = wiring.load_model(self.services, model_id)
        self.call_from_thread(self._model_loaded, name)

    def _model_loaded(self, name: str) -> None:
        self.prompt_console.set_model(name)
        self.notify(f"{name} loaded")

    def download_row(self, row: ModelRow, quant: str | None) -> None:
        """Queue a download of a catalog row (in a thread)."""
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

    @on(ModelTable.DeleteRequested, "#models")
    def _delete_requested(self, message: ModelTable.DeleteRequested) -> None:
        row = message.row
        size = format_size(row.size_bytes) or "unknown space"
        question = f"Delete {row.name}?\nThis frees {size} on the models volume."

        def answered(yes: bool | None) -> None:
            if yes and row.model_id:
                self._delete_model(row.model_id, row.name)

        self.push_screen(ConfirmScreen(question, yes="Delete", no="Keep"), answered)

    @work(thread=True, group="delete", exit_on_error=False)
    def _delete_model(self, model_id: str, name: str) -> None:
        freed = wiring.delete_model(self.services, model_id)
        self.post_message(ModelDeleted(name, freed))
        self.post_message(ModelsLoaded(wiring.load_rows(self.services)))

    @on(ModelDeleted)
    def _model_deleted(self, message: ModelDeleted) -> None:
        self.notify(f"Deleted {message.name}, freed {format_size(message.freed_bytes) or '0B'}")

    # -- console ---------------------------------------------------------------------------

    @on(PromptConsole.Submitted, "#console")
    def _prompt_submitted(self, message: PromptConsole.Submitted) -> None:
        self.prompt_console.start_answer(message.prompt)
        row = next(
            (r for r in self.model_table.all_rows.values() if r.status == "loaded"), None
        )
        self._generate(row.model_id if row else None, message.prompt, message.system_prompt)

    @work(exclusive=True, group="generate", exit_on_error=False)
    async def _generate(self, model_id: str | None, prompt: str, system_prompt: str) -> None:
        """Stream an answer; tokens are batched to :data:`TOKEN_FLUSH_S`."""
        self.post_message(AnswerStarted())
        try:
            metrics = await wiring.generate(
                self.services, model_id, prompt, system_prompt, self._queue_tokens
            )
        except wiring.NotWired as exc:
            self._flush_tokens()
            self.post_message(AnswerFinished(MetricsView(), error=str(exc)))
            return
        self._flush_tokens()
        self.post_message(AnswerFinished(metrics))

    def _queue_tokens(self, text: str) -> None:
        """Collect tokens; one :class:`TokensArrived` per flush interval."""
        self._pending_tokens.append(text)
        if self._flush_timer is None:
            self._flush_timer = self.set_timer(TOKEN_FLUSH_S, self._flush_tokens)

    def _flush_tokens(self) -> None:
        self._flush_timer = None
        if self._pending_tokens:
            text = "".join(self._pending_tokens)
            self._pending_tokens.clear()
            self.post_message(TokensArrived(text))

    @on(TokensArrived)
    def _tokens_arrived(self, message: TokensArrived) -> None:
        self.prompt_console.append_tokens(message.text)

    @on(AnswerFinished)
    def _answer_finished(self, message: AnswerFinished) -> None:
        if self.prompt_console.streaming:
            self.prompt_console.finish_answer(message.metrics, message.error)

    @on(PromptConsole.CancelRequested, "#console")
    def _cancel_requested(self) -> None:
        self.workers.cancel_group(self, "generate")
        wiring.cancel_generation(self.services)
        self._flush_tokens()
        self.prompt_console.finish_answer(MetricsView(cancelled=True))

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
        ]

    def action_help(self) -> None:
        """Show every binding."""
        self.push_screen(HelpScreen(binding_rows(self, self.help_sections())))

    def action_filter(self) -> None:
        """Show and focus the filter line."""
        filter_input = self.query_one("#filter", FilterInput)
        filter_input.add_class("-active")
        filter_input.focus()

    def action_clear_filter(self) -> None:
        """Clear and hide the filter, back to the table."""
        filter_input = self.query_one("#filter", FilterInput)
        filter_input.value = ""
        filter_input.remove_class("-active")
        self.model_table.filter_text = ""
        self.model_table.focus()

    def action_focus_table(self) -> None:
        """Back to the table, keeping the filter."""
        filter_input = self.query_one("#filter", FilterInput)
        if not filter_input.value:
            filter_input.remove_class("-active")
        self.model_table.focus()

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
            [(f"Load {r.name}", partial(self.load_row, r), r.quant or "") for r in rows],
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
        ]
        for row in self.model_table.all_rows.values():
            if row.installed:
                commands.append((f"Load {row.name}", partial(self.load_row, row), "Load model"))
            elif row.entry_id is not None:
                for quant in row.quants or (row.quant,):
                    label = f"Download {row.name} {quant or ''}".rstrip()
                    size = format_size(row.size_bytes) if quant == row.quant else ""
                    commands.append((label, partial(self.download_row, row, quant), size))
        return commands
