"""Text from files, servers and models made safe to show on a terminal.

Model and file names, GGUF / ``config.json`` strings, server error bodies, template errors
and streamed model text are untrusted: an ESC, OSC, CSI, BEL or C1 byte in them would be a
command to the terminal (clear the screen, set the clipboard, fake a hyperlink, retitle the
window), and a bidi override can make a name read as another. :func:`clean` (multi-line text)
and :func:`clean_line` (names, paths, errors) show every such character as a visible escape
instead, so the user sees that something was there:

* C0 controls, DEL and C1 controls as ``\\xNN`` (``\\x1b[2J`` prints as those 8 characters;
  ``\\t``, ``\\n`` and ``\\r`` by name);
* bidi embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069) and the line and
  paragraph separators (U+2028, U+2029) as ``\\uNNNN``;
* lone surrogates (a file name that is not valid UTF-8) as ``\\udcNN`` (printing them would
  raise ``UnicodeEncodeError``).

:func:`clean` keeps ``\\n`` and ``\\t``; :func:`clean_line` escapes them too. Both work
character by character, so cleaning a stream chunk by chunk gives the same text as cleaning
it whole (an escape sequence split across chunks is still neutralised). A backslash already in
the text is left as it is: the escapes are for a human to read, not to be parsed back.

No Rich markup is handled here (services import no Textual); the dashboard shows data with
``markup=False``, ``Text`` objects or :func:`tui.app.commands.literal`.
"""

from __future__ import annotations

import re
from typing import IO, Any

__all__ = ["CleanWriter", "clean", "clean_line"]

_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A))
_UNSAFE = (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *_BIDI, *range(0xD800, 0xE000))


def _escape(code: int) -> str:
    if code in _NAMED:
        return _NAMED[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_LINE_TABLE = {code: _escape(code) for code in _UNSAFE}
_TEXT_TABLE = {code: text for code, text in _LINE_TABLE.items() if code not in (0x09, 0x0A)}
_LINE_BAD = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_TEXT_BAD = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _sub(table: dict[int, str]) -> Any:
    return lambda match: table[ord(match.group())]


_LINE_SUB = _sub(_LINE_TABLE)
_TEXT_SUB = _sub(_TEXT_TABLE)


def clean(text: str) -> str:
    """Multi-line text (model output, a dialog's question) with ``\\n`` and ``\\t`` kept and
    every other control, bidi override or lone surrogate shown escaped."""
    if text.isprintable() or _TEXT_BAD.search(text) is None:  # the common case: no copy
        return text
    # translate() is fastest on ASCII; on other text only the matches are replaced
    return text.translate(_TEXT_TABLE) if text.isascii() else _TEXT_BAD.sub(_TEXT_SUB, text)


def clean_line(text: object, limit: int | None = None) -> str:
    """One line (a name, a path, an error): like :func:`clean`, newlines and tabs escaped too.

    ``limit`` cuts the result to that many characters, ending in ``…``.
    """
    text = text if isinstance(text, str) else str(text)
    if not text.isprintable() and _LINE_BAD.search(text) is not None:
        text = text.translate(_LINE_TABLE) if text.isascii() else _LINE_BAD.sub(_LINE_SUB, text)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


class CleanWriter:
    """A text stream that passes everything written through :func:`clean`.

    The CLI puts it over ``sys.stdout`` / ``sys.stderr`` for the run of a sub-command, as a
    net under the cleaning done where untrusted text is printed. ``raw`` is the stream below
    (for writers that emit their own escape sequences, like a Rich progress display).
    """

    def __init__(self, raw: IO[str]) -> None:
        self.raw = raw

    def write(self, text: str) -> int:
        self.raw.write(clean(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)
