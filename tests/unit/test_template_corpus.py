"""llama.cpp's corpus of real chat templates renders exactly as transformers renders it.

Every template in ``tests/data/chat_templates`` (see its README) is rendered for a set of
conversation shapes with :func:`tui.runtime.templates.render_chat` and with transformers' own
``apply_chat_template(..., tokenize=False)`` on a tokenizer with special tokens; the two must
agree exactly: the same text, or both refusing the conversation (a template that raises for a
shape it does not support). ``strftime_now`` reads the clock: a pair rendered across midnight
is rendered again.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from tui.runtime.errors import TemplateError
from tui.runtime.templates import render_chat

CORPUS = Path(__file__).resolve().parents[1] / "data" / "chat_templates"
TEMPLATES = sorted(CORPUS.glob("*.jinja"))

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city, now.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"],
                         "description": "Temperature unit"},
            },
            "required": ["city"],
        },
    },
}
CALL = {"id": "call_0001", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}}}
SYSTEM = {"role": "system", "content": "You are brief. Answer in <b>one</b> line & no more."}
USER = {"role": "user", "content": "What's the weather in Zürich? 🌦 \"quoted\""}
ASSISTANT = {"role": "assistant", "content": "Sunny, 21 °C."}
CALLING = {"role": "assistant", "content": None, "tool_calls": [CALL]}
RESULT = {"role": "tool", "tool_call_id": "call_0001", "name": "get_weather",
          "content": '{"temperature": 21, "sky": "sunny"}'}
DOCUMENTS = [{"title": "Alps", "text": "Zürich lies north of the Alps."},
             {"title": "Lakes", "text": "Lake Zürich is 40 km long."}]

#: name: (messages, keyword arguments of render_chat)
SHAPES: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {
    "system+user": ([SYSTEM, USER], {}),
    "system+user, no generation prompt": ([SYSTEM, USER], {"add_generation_prompt": False}),
    "user only": ([USER], {}),
    "multi-turn": ([SYSTEM, USER, ASSISTANT, {"role": "user", "content": "And tomorrow?"}], {}),
    "ends with the assistant": ([USER, ASSISTANT], {"add_generation_prompt": False}),
    "tools offered": ([SYSTEM, USER], {"tools": [WEATHER]}),
    "tool call and result": ([USER, CALLING, RESULT], {"tools": [WEATHER]}),
    "tool call, empty content": ([USER, {**CALLING, "content": ""}, RESULT, ASSISTANT],
                                 {"tools": [WEATHER], "add_generation_prompt": False}),
    "tool call, string arguments": (
        [USER, {**CALLING, "tool_calls": [
            {**CALL, "function": {**CALL["function"], "arguments": '{"city": "Zürich"}'}}]},
         RESULT, ASSISTANT], {"tools": [WEATHER], "add_generation_prompt": False}),
    "documents": ([USER], {"documents": DOCUMENTS}),
    "content parts": ([{"role": "user", "content": [{"type": "text", "text": "Hi, "},
                                                    {"type": "text", "text": "again."}]}], {}),
    "reasoning": ([USER, {**ASSISTANT, "reasoning_content": "The user wants weather."},
                   {"role": "user", "content": "Thanks!"}], {}),
    "thinking off": ([SYSTEM, USER], {"enable_thinking": False}),
    "extra variables": ([SYSTEM, USER], {"functions": '[{"name": "get_weather"}]',
                                         "datetime": "2026-01-02", "date_string": "2 Jan 2026"}),
}


@pytest.fixture(scope="module")
def reference() -> Any:
    """transformers' own renderer: ``apply_chat_template`` of a tokenizer with ``SPECIAL``."""
    pytest.importorskip("transformers", reason="transformers renders the reference")
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL.values())}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")), **SPECIAL
    )


def transformers_render(tokenizer: Any, template: str, messages: list[dict[str, Any]],
                        kwargs: dict[str, Any]) -> str | None:
    """The reference text, or None when the template raises for this conversation."""
    from jinja2 import TemplateError as JinjaError

    kwargs = {"add_generation_prompt": True, **kwargs}
    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             **kwargs)
    except (JinjaError, TypeError, ValueError, KeyError, AttributeError, IndexError):
        return None


def ours(template: str, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> str | None:
    try:
        return render_chat(template, messages, special_tokens=SPECIAL, **kwargs)
    except TemplateError:
        return None


def compare(tokenizer: Any, template: str) -> dict[str, str]:
    """``{shape: outcome}``: "match", "both raise", or what differs."""
    outcomes = {}
    for name, (messages, kwargs) in SHAPES.items():
        for _ in range(2):  # once more if the date changed in between (strftime_now)
            day = dt.date.today()
            expected = transformers_render(tokenizer, template, messages, kwargs)
            got = ours(template, messages, kwargs)
            if day == dt.date.today():
                break
        if expected == got:
            outcomes[name] = "both raise" if got is None else "match"
        elif got is None:
            outcomes[name] = "only ours raises"
        elif expected is None:
            outcomes[name] = "only transformers raises"
        else:
            at = next(i for i, (a, b) in enumerate(zip(expected + "\0", got + "\0",
                                                       strict=False)) if a != b)
            outcomes[name] = f"differs at {at}: {expected[at:at + 40]!r} vs {got[at:at + 40]!r}"
    return outcomes


def test_the_corpus_is_there() -> None:
    assert len(TEMPLATES) >= 70, f"{len(TEMPLATES)} templates in {CORPUS}"


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_renders_as_transformers(reference: Any, path: Path) -> None:
    outcomes = compare(reference, path.read_text(encoding="utf-8"))
    differences = {k: v for k, v in outcomes.items() if v not in ("match", "both raise")}
    assert not differences
    assert "match" in outcomes.values()  # every template renders some conversation
