"""Chats with a model: conversations, fitting them into the context, saving them (no Textual)."""

from tui.chat.options import OptionError, describe_load, parse_load_options
from tui.chat.session import ChatSession, ContextFullError, Trimmed, answer_reserve
from tui.chat.store import ChatStore, ConversationInfo

__all__ = [
    "ChatSession",
    "ChatStore",
    "ContextFullError",
    "ConversationInfo",
    "OptionError",
    "Trimmed",
    "answer_reserve",
    "describe_load",
    "parse_load_options",
]
