"""The command palette: every dashboard command, built from the App's public methods."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.markup import escape

from tui.app.views import format_size
from tui.terminal_text import clean_line

if TYPE_CHECKING:
    from collections.abc import Callable

    from tui.app.app import ModelDeckApp
    from tui.app.views import ModelRow

MAX_HITS = 200
Command = tuple[str, "Callable[[], object]", str]  # (label, callback, help)


def literal(text: str) -> str:
    """``text`` (a model name, a path) for a place that parses Textual markup, such as a
    command-palette label: one line, controls escaped, ``[bold]`` shown as typed."""
    return escape(clean_line(text))


def palette_commands(app: ModelDeckApp) -> list[Command]:
    """Everything the command palette offers: panels, theme, dialogs, and a Load or Download
    command per model (one per quant of a catalog entry)."""
    ellipsis = "..." if app.settings.ascii else "…"
    commands: list[Command] = [
        ("Toggle sidebar", app.action_toggle_sidebar, "Show/hide resources"),
        ("Toggle downloads", app.action_toggle_downloads, "Show/hide the downloads panel"),
        ("Toggle console", app.action_toggle_console, "Show/hide the prompt console"),
        ("Stop API server" if app.api_server is not None else "Start API server",
         app.action_toggle_server, "OpenAI-compatible API on this runtime (serve_host:port)"),
        ("Switch theme", app.action_toggle_theme, "Dark / light"),
        ("Installed only", app.model_table.action_toggle_installed, "Status filter"),
        ("Help", app.action_help, "All key bindings"),
        ("Add model", app.action_add_model, "Hub repo, URL or local file"),
        ("Search the Hub", app.action_hub_search, "GGUF repos on Hugging Face"),
        ("Unload model", app.action_unload, "Free the loaded model's memory"),
        ("Clear finished downloads", app.downloads_panel.action_clear_finished,
         "Forget done and cancelled jobs"),
        ("Generation parameters" + ellipsis, app.action_edit_gen_params,
         "Temperature, top_p, max tokens, seed, stop"),
        ("New chat", app.action_new_chat, "A new conversation in the console"),
        ("Clear chat", app.action_clear_chat, "Empty the console's conversation"),
        ("Open chat" + ellipsis, app.action_open_chat, "Saved conversations with the loaded model"),
        ("Load with" + ellipsis, app.action_load_with,
         "Context length, GPU layers, threads (remembered per model)"),
        ("Reclaim disk space" + ellipsis, app.action_reclaim,
         "Orphans, duplicates, least recently used models (F)"),
    ]
    entries = app.catalog_entries
    for row in app.model_table.all_rows.values():
        if row.installed:
            commands.append((literal(f"Load {row.name}"), partial(app.load_row, row), "Load model"))
        elif row.entry_id is not None:
            entry = entries.get(row.entry_id)
            for quant in row.quants or (row.quant,):
                label = literal(f"Download {row.name} {quant or ''}".rstrip())
                size = format_size(entry.size_for(quant) if entry and quant else None)
                size = size or (format_size(row.size_bytes) if quant == row.quant else "")
                commands.append((label, partial(app.download_row, row, quant), size))
    return commands


def model_choices(app: ModelDeckApp) -> list[Command]:
    """The quick switch (ctrl+o): a Load command per installed model."""
    return [(literal(f"Load {row.name}"), partial(app.load_row, row), literal(row.quant or ""))
            for row in app.model_table.all_rows.values() if row.installed]


def quant_choices(app: ModelDeckApp, row: ModelRow) -> list[Command]:
    """A Download command per quant of a catalog row, with its size."""
    entry = app.catalog_entries.get(row.entry_id) if row.entry_id else None
    return [(literal(f"Download {row.name} {quant}"), partial(app.download_row, row, quant),
             format_size(entry.size_for(quant) if entry is not None else None))
            for quant in row.quants]


class ModelDeckCommands(Provider):
    """Every dashboard command; built once per palette opening from the App's state."""

    async def startup(self) -> None:
        """Collect the commands (rows are read on the event loop; no I/O)."""
        app = cast("ModelDeckApp", self.app)
        self._commands: list[Command] = palette_commands(app)

    async def discover(self) -> Hits:
        """The panel and theme commands (not the per-model ones) when nothing is typed."""
        for text, callback, help_text in self._commands:
            if not text.startswith(("Load ", "Download ")):
                yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        """Fuzzy-match every command."""
        matcher = self.matcher(query)
        count = 0
        for text, callback, help_text in self._commands:
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(callback), help=help_text)
                count += 1
                if count >= MAX_HITS:
                    return
