"""Modal screens."""

from tui.app.screens.add_model import AddModelScreen
from tui.app.screens.chat_list import ChatListScreen
from tui.app.screens.confirm import ConfirmScreen
from tui.app.screens.gen_params import GenParamsScreen, describe_params
from tui.app.screens.help import HelpScreen, binding_rows
from tui.app.screens.hub_search import HubSearchScreen
from tui.app.screens.load_options import LoadOptionsScreen
from tui.app.screens.text_prompt import TextPromptScreen

__all__ = [
    "AddModelScreen",
    "ChatListScreen",
    "ConfirmScreen",
    "GenParamsScreen",
    "HelpScreen",
    "HubSearchScreen",
    "LoadOptionsScreen",
    "TextPromptScreen",
    "binding_rows",
    "describe_params",
]
