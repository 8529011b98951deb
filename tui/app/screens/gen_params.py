"""The generation-parameters modal: temperature, top_p, max tokens, seed and stop strings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from tui.runtime.types import GenParams

MAX_TEMPERATURE = 2.0
MAX_SEED = 2**32 - 1  # llama.cpp takes a 32-bit seed

# (field, label, hint): the modal's rows, in Tab order.
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("temperature", "Temperature", "0 to 2, 0 = greedy"),
    ("top_p", "Top p", "above 0, at most 1"),
    ("max_tokens", "Max tokens", "1 or more"),
    ("seed", "Seed", "blank = random"),
    ("stop", "Stop strings", "comma-separated"),
)

_ESCAPES = {"n": "\n", "t": "\t", ",": ",", "\\": "\\"}


class ParamError(ValueError):
    """A bad field: ``field`` names it, the message says what is allowed (one line)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_stop(text: str) -> tuple[str, ...]:
    """Comma-separated stop strings: ``\\n`` (newline), ``\\t``, ``\\,`` (a comma) and
    ``\\\\`` are escapes; spaces around each string are dropped, and so are empty strings.

    Raises :class:`ParamError` for an unknown escape or a trailing backslash.
    """
    items: list[str] = []
    current: list[tuple[str, bool]] = []  # (character, escaped)
    chars = iter(text)
    for char in chars:
        if char == "\\":
            nxt = next(chars, None)
            if nxt is None or nxt not in _ESCAPES:
                raise ParamError(
                    "stop", "stop strings: after a backslash use n, t, a comma or \\\\"
                )
            current.append((_ESCAPES[nxt], True))
        elif char == ",":
            items.append(_finish(current))
            current = []
        else:
            current.append((char, False))
    items.append(_finish(current))
    return tuple(item for item in items if item)


def _finish(chars: list[tuple[str, bool]]) -> str:
    """One stop string: unescaped spaces around it dropped (an escaped newline is kept)."""
    start, end = 0, len(chars)
    while start < end and chars[start][0].isspace() and not chars[start][1]:
        start += 1
    while end > start and chars[end - 1][0].isspace() and not chars[end - 1][1]:
        end -= 1
    return "".join(char for char, _ in chars[start:end])


def format_stop(stop: Iterable[str]) -> str:
    """The inverse of :func:`parse_stop` (what the field shows)."""
    out = []
    for item in stop:
        text = item.replace("\\", "\\\\").replace(",", "\\,")
        text = text.replace("\n", "\\n").replace("\t", "\\t")
        out.append(text)
    return ", ".join(out)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None  # no nan/inf


def _whole(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def parse_params(values: Mapping[str, str]) -> GenParams:
    """Build :class:`GenParams` from the fields' text. Raises :class:`ParamError` naming the
    first bad field, with one line that says what is allowed."""
    temperature = _number(values.get("temperature", "").strip())
    if temperature is None or not 0 <= temperature <= MAX_TEMPERATURE:
        raise ParamError("temperature", "temperature must be between 0 and 2 (0 = greedy)")
    top_p = _number(values.get("top_p", "").strip())
    if top_p is None or not 0 < top_p <= 1:
        raise ParamError("top_p", "top_p must be above 0 and at most 1")
    max_tokens = _whole(values.get("max_tokens", "").strip())
    if max_tokens is None or max_tokens < 1:
        raise ParamError("max_tokens", "max tokens must be a whole number of at least 1")
    seed_text = values.get("seed", "").strip()
    seed = _whole(seed_text) if seed_text else None
    if seed_text and (seed is None or not 0 <= seed <= MAX_SEED):
        raise ParamError("seed", f"seed must be a whole number (0 to {MAX_SEED}) or blank")
    stop = parse_stop(values.get("stop", ""))
    return GenParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=stop,
                     seed=seed)


def field_values(params: GenParams) -> dict[str, str]:
    """The text each field shows for ``params``."""
    return {
        "temperature": f"{params.temperature:g}",
        "top_p": f"{params.top_p:g}",
        "max_tokens": str(params.max_tokens),
        "seed": "" if params.seed is None else str(params.seed),
        "stop": format_stop(params.stop),
    }


def describe_params(params: GenParams) -> str:
    """``temperature 0 | top_p 0.95 | max 64 tokens`` (+ seed and stop strings when set)."""
    parts = [
        f"temperature {params.temperature:g}",
        f"top_p {params.top_p:g}",
        f"max {params.max_tokens} token{'' if params.max_tokens == 1 else 's'}",
    ]
    if params.seed is not None:
        parts.append(f"seed {params.seed}")
    if params.stop:
        parts.append(f"stop {format_stop(params.stop)}")
    return " | ".join(parts)


class GenParamsScreen(ModalScreen[GenParams | None]):
    """Edit the sampling parameters of the console's answers.

    Dismisses with the new :class:`GenParams` (Enter in any field or ctrl+s), or None (Esc).
    A bad value is named in a one-line error and the modal stays open.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+r", "defaults", "Defaults"),
        # Priority: the focus moves before the next key is handed out, so keys typed right
        # after Tab (a fast typist, a paste of keys over SSH) land in the next field.
        Binding("tab", "app.focus_next", "Next field", show=False, priority=True),
        Binding("shift+tab", "app.focus_previous", "Previous field", show=False,
                priority=True),
    ]
    AUTO_FOCUS = "#params-temperature"

    def __init__(self, params: GenParams | None = None) -> None:
        super().__init__()
        self.params = params or GenParams()

    def compose(self) -> ComposeResult:
        values = field_values(self.params)
        with Vertical(id="params-dialog", classes="dialog"):
            yield Static("Generation parameters", id="params-title")
            for name, label, hint in FIELDS:
                with Horizontal(classes="params-row"):
                    yield Label(label, classes="params-label")
                    yield Input(values[name], id=f"params-{name.replace('_', '-')}",
                                classes="params-input", compact=True)
                    yield Label(hint, classes="params-hint")
            yield Static("", id="params-error", markup=False)
            yield Static(
                "Tab: next field | Enter or ctrl+s: save | Esc: cancel\n"
                "ctrl+r: defaults | in stop strings \\n = newline, \\, = comma",
                classes="dialog-hint", markup=False,
            )

    def field(self, name: str) -> Input:
        """The input of parameter ``name`` (``temperature``, ``top_p`` …)."""
        return self.query_one(f"#params-{name.replace('_', '-')}", Input)

    def values(self) -> dict[str, str]:
        """The fields' current text."""
        return {name: self.field(name).value for name, _, _ in FIELDS}

    def show_error(self, text: str) -> None:
        """One line under the fields (blank clears it)."""
        self.query_one("#params-error", Static).update(text)

    @on(Input.Submitted, ".params-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    @on(Input.Changed, ".params-input")
    def _changed(self) -> None:
        self.show_error("")

    def action_save(self) -> None:
        """Validate and dismiss with the parameters; on a bad value, say what is allowed."""
        try:
            params = parse_params(self.values())
        except ParamError as exc:
            self.show_error(str(exc))
            self.field(exc.field).focus()
            return
        self.dismiss(params)

    def action_defaults(self) -> None:
        """Fill every field with the runtime's defaults (saved only with Enter / ctrl+s)."""
        for name, value in field_values(GenParams()).items():
            self.field(name).value = value
