"""The add-custom-model modal: a Hub repo (pick GGUF files), a direct URL (a CivitAI model URL
is downloaded from CivitAI), or a local path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import (
    Button,
    Checkbox,
    Input,
    SelectionList,
    Static,
    TabbedContent,
    TabPane,
)
from textual.widgets.selection_list import Selection

from tui.app import wiring
from tui.app.views import format_size
from tui.terminal_text import clean_line

if TYPE_CHECKING:
    from tui.services import Services


@dataclass(frozen=True, slots=True)
class FileChoice:
    """One GGUF file of a Hub listing, with its quant, size and fit estimate."""

    path: str
    quant: str | None
    size: int | None
    fit: str = ""


def one_line(exc: BaseException) -> str:
    """An error as one line (ModelDeck errors already are)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    from tui.errors import ModelDeckError

    return first if isinstance(exc, ModelDeckError) else f"{type(exc).__name__}: {first}"


def gguf_choices(listing: Any, fit: Any = None) -> list[FileChoice]:
    """The listing's GGUF files grouped by quant (quant order, then path), with fit labels.

    ``fit(size, quant) -> str`` gives the short fit verdict (blank when unknown).
    """
    out: list[FileChoice] = []
    for quant, files in sorted(listing.quants().items(), key=lambda kv: str(kv[0])):
        for f in sorted(files, key=lambda f: f.path):
            label = fit(f.size, quant) if fit is not None and f.size else ""
            out.append(FileChoice(f.path, quant, f.size, label))
    return out


def fit_estimator(services: Services) -> Any:
    """``fit(size, quant) -> "gpu"|"part"|"cpu"|"no"|""`` against the runtime's memory probe."""
    from tui.runtime.fit import bits_per_weight, check_fit, estimate_from_catalog

    snapshot = services.runtime.memory_probe()

    def fit(size: int, quant: str | None) -> str:
        bits = bits_per_weight(quant) or 16.0
        params = int(size * 8 / bits)
        estimate = estimate_from_catalog(params, quantization=quant, weights_bytes=size)
        return wiring.FIT_SHORT.get(check_fit(estimate, snapshot).verdict, "")

    return fit


class AddModelScreen(ModalScreen[list[str] | None]):
    """Add a custom model; dismisses with the new catalog entry ids (None when cancelled).

    Blocking work (Hub listing, catalog and inventory writes) runs in thread workers that
    post messages back; errors are shown inline as one line and change nothing.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    class Listed(Message):
        """A Hub listing arrived."""

        def __init__(self, repo: str, choices: list[FileChoice]) -> None:
            super().__init__()
            self.repo = repo
            self.choices = choices

    class Failed(Message):
        """Something went wrong (one line)."""

        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    class Added(Message):
        """Entries were added."""

        def __init__(self, entry_ids: list[str], download: bool) -> None:
            super().__init__()
            self.entry_ids = entry_ids
            self.download = download

    def __init__(self, services: Services, *, repo: str | None = None) -> None:
        super().__init__()
        self.services = services
        self.initial_repo = repo or ""
        self.listed_repo: str | None = None
        self.choices: list[FileChoice] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="add-dialog", classes="dialog"):
            yield Static("Add a model", id="add-title")
            with TabbedContent(id="add-tabs"):
                with TabPane("Hub repo", id="tab-hub"):
                    with Horizontal(classes="add-row"):
                        yield Input(self.initial_repo, placeholder="owner/name (Enter lists files)",
                                    id="add-repo")
                        yield Button("List", id="add-list")
                    yield SelectionList[int](id="add-files")
                    with Horizontal(classes="add-row"):
                        yield Checkbox("Download now", True, id="add-download")
                        yield Button("Add selected", id="add-hub-ok", variant="primary")
                with TabPane("URL", id="tab-url"):
                    yield Input(placeholder="https://host/path/model.gguf or a CivitAI model URL",
                                id="add-url")
                    yield Input(placeholder="sha256 (optional)", id="add-sha")
                    with Horizontal(classes="add-row"):
                        yield Checkbox("Download now", True, id="add-url-download")
                        yield Button("Add URL", id="add-url-ok", variant="primary")
                with TabPane("Local path", id="tab-local"):
                    yield Input(placeholder="/path/to/model.gguf or a model folder",
                                id="add-path")
                    yield Button("Register", id="add-local-ok", variant="primary")
            yield Static("", id="add-error", markup=False)
            yield Static("Tab/arrows to move | space selects | Esc cancels", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#add-repo", Input).focus()
        if self.initial_repo:
            self._list(self.initial_repo)

    # -- helpers ---------------------------------------------------------------------------

    def show_error(self, text: str) -> None:
        """One line under the tabs."""
        self.query_one("#add-error", Static).update(clean_line(text))
        self.set_class(bool(text), "-error")

    # -- Hub repo --------------------------------------------------------------------------

    @on(Input.Submitted, "#add-repo")
    @on(Button.Pressed, "#add-list")
    def _list_pressed(self) -> None:
        self._list(self.query_one("#add-repo", Input).value)

    def _list(self, repo: str) -> None:
        self.show_error("")
        self.query_one("#add-files", SelectionList).clear_options()
        self.query_one("#add-files", SelectionList).loading = True
        self._fetch(repo.strip())

    @work(thread=True, exclusive=True, group="add-list", exit_on_error=False)
    def _fetch(self, repo: str) -> None:
        try:
            listing = wiring.list_repo(repo)
            choices = gguf_choices(listing, fit_estimator(self.services))
        except Exception as exc:  # shown inline; nothing changed
            self.post_message(self.Failed(one_line(exc)))
            return
        self.post_message(self.Listed(listing.repo, choices))

    @on(Listed)
    def _listed(self, message: Listed) -> None:
        files = self.query_one("#add-files", SelectionList)
        files.loading = False
        self.listed_repo = message.repo
        self.choices = message.choices
        if not message.choices:
            self.show_error(f"{message.repo} has no GGUF files")
            return
        paths = [clean_line(c.path) for c in message.choices]  # file names from the Hub
        width = max(map(len, paths))
        files.add_options(
            Selection(  # Content, not str: a str prompt would be parsed as markup
                Content(f"{clean_line(c.quant or '?'):<8} {paths[i]:<{width}} "
                        f"{format_size(c.size):>6} {c.fit}"),
                i,
            )
            for i, c in enumerate(message.choices)
        )
        files.highlighted = 0
        files.focus()

    @on(Button.Pressed, "#add-hub-ok")
    def _add_hub(self) -> None:
        picked = [self.choices[i] for i in self.query_one("#add-files", SelectionList).selected]
        if self.listed_repo is None or not picked:
            self.show_error("list a repo and select at least one file (space)")
            return
        download = self.query_one("#add-download", Checkbox).value
        repo = self.listed_repo
        self._apply(lambda: wiring.add_hf_files(
            self.services, repo, [(c.path, c.quant) for c in picked]), download)

    # -- URL / local -----------------------------------------------------------------------

    @on(Input.Submitted, "#add-url,#add-sha")
    @on(Button.Pressed, "#add-url-ok")
    def _add_url(self) -> None:
        url = self.query_one("#add-url", Input).value
        sha = self.query_one("#add-sha", Input).value
        download = self.query_one("#add-url-download", Checkbox).value
        if self._pull_civitai(url):
            return
        self._apply(lambda: [wiring.add_url(self.services, url, sha)], download)

    def _pull_civitai(self, text: str) -> bool:
        """Queue a CivitAI model URL (or ``civitai:ID[@VER]``) as a download: True if it was
        one (the dialog closes; a bad one shows its error)."""
        from tui.civitai.client import parse_ref
        from tui.download.sources import JobSpec

        try:
            ref = parse_ref(text)
            if ref is None:
                return False
            self.services.downloads.enqueue(
                JobSpec(kind="civitai", civitai_model=ref[0], civitai_version=ref[1]))
        except Exception as exc:  # one line; nothing queued
            self.show_error(one_line(exc))
            return True
        self.app.notify(f"Downloading civitai:{ref[0]}" + (f"@{ref[1]}" if ref[1] else ""))
        self.dismiss([])
        return True

    @on(Input.Submitted, "#add-path")
    @on(Button.Pressed, "#add-local-ok")
    def _add_local(self) -> None:
        path = self.query_one("#add-path", Input).value.strip()
        if not path:
            self.show_error("give a .gguf file or a model folder")
            return
        self._apply(lambda: [wiring.add_local(self.services, path)], False)

    def _apply(self, add: Any, download: bool) -> None:
        self.show_error("")
        self._run_add(add, download)

    @work(thread=True, exclusive=True, group="add-apply", exit_on_error=False)
    def _run_add(self, add: Any, download: bool) -> None:
        try:
            ids = add()
        except Exception as exc:  # validation and I/O errors: inline, nothing written
            self.post_message(self.Failed(one_line(exc)))
            return
        self.post_message(self.Added(ids, download))

    @on(Added)
    def _added(self, message: Added) -> None:
        if message.download:
            for entry_id in message.entry_ids:
                try:
                    wiring.start_download(self.services, entry_id, None)
                except Exception as exc:
                    self.app.notify(one_line(exc), title="Download not queued", severity="error")
        self.dismiss(message.entry_ids)

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        self.query_one("#add-files", SelectionList).loading = False
        self.show_error(message.error)
