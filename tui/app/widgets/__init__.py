"""Dashboard widgets."""

from tui.app.widgets.downloads_panel import DownloadRow, DownloadsPanel
from tui.app.widgets.model_browser import FilterInput, ModelBrowser
from tui.app.widgets.model_list import ModelList, ModelTable
from tui.app.widgets.prompt_console import PromptConsole, PromptInput
from tui.app.widgets.resource_sidebar import ResourceLine, ResourceSidebar
from tui.app.widgets.server_panel import ServerPanel

__all__ = [
    "DownloadRow",
    "DownloadsPanel",
    "FilterInput",
    "ModelBrowser",
    "ModelList",
    "ModelTable",
    "PromptConsole",
    "PromptInput",
    "ResourceLine",
    "ResourceSidebar",
    "ServerPanel",
]
