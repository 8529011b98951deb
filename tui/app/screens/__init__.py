"""Modal screens."""

from tui.app.screens.confirm import ConfirmScreen
from tui.app.screens.help import HelpScreen, binding_rows
from tui.app.screens.text_prompt import TextPromptScreen

__all__ = ["ConfirmScreen", "HelpScreen", "TextPromptScreen", "binding_rows"]
