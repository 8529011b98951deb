"""Modal screens, each imported when first asked for (``from tui.app.screens import X``): the
dashboard's first frame does not wait for dialogs nobody opened yet."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tui.app.screens.add_model import AddModelScreen
    from tui.app.screens.chat_list import ChatListScreen
    from tui.app.screens.confirm import ConfirmScreen
    from tui.app.screens.gen_params import GenParamsScreen, describe_params
    from tui.app.screens.help import HelpScreen, binding_rows, help_sections
    from tui.app.screens.hub_search import HubSearchScreen
    from tui.app.screens.job_detail import JobDetailScreen
    from tui.app.screens.load_options import LoadOptionsScreen
    from tui.app.screens.text_prompt import TextPromptScreen

_WHERE = {
    "AddModelScreen": "add_model",
    "ChatListScreen": "chat_list",
    "ConfirmScreen": "confirm",
    "GenParamsScreen": "gen_params",
    "HelpScreen": "help",
    "HubSearchScreen": "hub_search",
    "JobDetailScreen": "job_detail",
    "LoadOptionsScreen": "load_options",
    "TextPromptScreen": "text_prompt",
    "binding_rows": "help",
    "describe_params": "gen_params",
    "help_sections": "help",
}

__all__ = [
    "AddModelScreen",
    "ChatListScreen",
    "ConfirmScreen",
    "GenParamsScreen",
    "HelpScreen",
    "HubSearchScreen",
    "JobDetailScreen",
    "LoadOptionsScreen",
    "TextPromptScreen",
    "binding_rows",
    "describe_params",
    "help_sections",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
