"""Modal screens."""

from tui.app.screens.add_model import AddModelScreen
from tui.app.screens.confirm import ConfirmScreen
from tui.app.screens.gen_params import GenParamsScreen, describe_params
from tui.app.screens.help import HelpScreen, binding_rows, help_sections
from tui.app.screens.hub_search import HubSearchScreen
from tui.app.screens.job_detail import JobDetailScreen
from tui.app.screens.text_prompt import TextPromptScreen

__all__ = [
    "AddModelScreen",
    "ConfirmScreen",
    "GenParamsScreen",
    "HelpScreen",
    "HubSearchScreen",
    "JobDetailScreen",
    "TextPromptScreen",
    "binding_rows",
    "describe_params",
    "help_sections",
]
