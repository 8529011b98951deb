"""Checks of what a client sends, before anything is looked up: ids, keep-alive durations."""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

from tui.errors import InvalidInputError
from tui.terminal_text import clean_line

MAX_ID_CHARS = 200
MAX_KEEP_ALIVE = 365 * 24 * 3600.0
_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_JOB_RE = re.compile(r"^[0-9a-f]{4,64}$")


def _id_char(ch: str) -> bool:
    return ch in "._-" or unicodedata.category(ch)[0] in "LNM"


def check_model_id(text: Any, what: str = "model") -> str:
    """A ModelDeck model id as ids are made (letters, digits and marks of any script,
    ``. _ -``; never a path): returned as is, or InvalidInputError naming the problem."""
    if not isinstance(text, str) or not text:
        raise InvalidInputError(f"{what} must be a model id (see GET /v1/models)")
    if len(text) > MAX_ID_CHARS or text.startswith(".") or not all(_id_char(c) for c in text):
        raise InvalidInputError(
            f"{clean_line(text, 80)!r} is not a ModelDeck model id (letters, digits, '.', '_' "
            "and '-'; never a path)", hint="see GET /v1/models for the ids")
    return text


def check_job_id(text: str) -> str:
    """A download job id (or a unique prefix of at least 4 of its hex digits)."""
    if not _JOB_RE.match(text):
        raise InvalidInputError(f"{clean_line(text, 80)!r} is not a download job id",
                                hint="see GET /api/downloads")
    return text


def parse_keep_alive(value: Any) -> float | None:
    """Ollama's ``keep_alive``: seconds as a number, or ``"30s"``, ``"5m"``, ``"1h"``; 0
    unloads the model once idle, a negative value keeps it loaded. None: not given."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInputError("keep_alive must be a duration such as 300, '5m' or -1")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match is None:
            raise InvalidInputError(
                f"keep_alive {clean_line(value, 40)!r} is not a duration (300, '30s', '5m', "
                "'1h', 0 or -1)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise InvalidInputError("keep_alive must be a duration such as 300, '5m' or -1")
    if not math.isfinite(seconds):
        raise InvalidInputError("keep_alive must be a finite duration")
    if seconds < 0:
        return -1.0
    return min(seconds, MAX_KEEP_ALIVE)
