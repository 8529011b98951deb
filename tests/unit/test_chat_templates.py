"""What a chat template sees and can use, as in transformers' ``apply_chat_template``.

The corpus test (:mod:`tests.unit.test_template_corpus`) compares whole renders of real
templates; these pin each piece down on its own: the ``loopcontrols`` extension, the
``{% generation %}`` tag, ``tojson`` and its keyword arguments, ``tools``/``documents``, special
tokens and extra variables, messages rebuilt out of plain data, and one clear line for a
conversation that is not one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tui.runtime.backends.llama_cpp import MAX_TOKEN_CHARS, gguf_special_tokens
from tui.runtime.errors import TemplateError
from tui.runtime.templates import render_chat

USER = [{"role": "user", "content": "hi"}]


def render(source: str, messages: Any = USER, **kwargs: Any) -> str:
    return render_chat(source, messages, **kwargs)


def test_loop_controls() -> None:
    source = ("{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
              "{{ m.content }}{% if loop.index >= 3 %}{% break %}{% endif %}{% endfor %}")
    messages = [{"role": "system", "content": "S"}] + [{"role": "user", "content": c}
                                                        for c in "abc"]
    assert render(source, messages) == "ab"


def test_generation_tag_renders_its_body() -> None:
    source = ("{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}"
              "[{{ m.content }}]{% endgeneration %}{% else %}{{ m.content }}{% endif %}"
              "{% endfor %}")
    messages = [*USER, {"role": "assistant", "content": "yo"}]
    assert render(source, messages) == "hi[yo]"


def test_tojson_as_transformers() -> None:
    """No HTML escaping, keys in their order, non-ASCII kept; its keyword arguments work."""
    value = {"b": "<é & 'x'>", "a": [1, 2]}
    messages = [{"role": "user", "content": value}]
    source = "{{ messages[0].content|tojson }}"
    assert render(source, messages) == '{"b": "<é & \'x\'>", "a": [1, 2]}'
    assert render("{{ messages[0].content|tojson(ensure_ascii=True) }}", messages) == (
        '{"b": "<\\u00e9 & \'x\'>", "a": [1, 2]}')
    assert render("{{ messages[0].content|tojson(indent=2, sort_keys=True) }}", messages) == (
        '{\n  "a": [\n    1,\n    2\n  ],\n  "b": "<é & \'x\'>"\n}')
    assert render("{{ messages[0].content|tojson(separators=(',', ':')) }}", messages) == (
        '{"b":"<é & \'x\'>","a":[1,2]}')
    assert render("{{ messages[0].content|tojson(indent='\t') }}", messages).startswith(
        '{\n\t"b"')


def test_tools_documents_and_extra_variables_reach_the_template() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    documents = [{"title": "T", "text": "body"}]
    source = ("{{ tools|map(attribute='function')|map(attribute='name')|join }}|"
              "{{ documents[0].title }}|{{ enable_thinking }}|{{ add_generation_prompt }}|"
              "{{ tools is none }}")
    assert render(source, tools=tools, documents=documents, enable_thinking=False) == (
        "f|T|False|True|False")
    assert render("{{ tools is none }}{{ documents is none }}", add_generation_prompt=False) == (
        "TrueTrue")


def test_special_tokens_and_extra_keyword_arguments() -> None:
    """Every special token is a variable; an extra keyword argument wins (as in
    transformers, where kwargs override ``special_tokens_map``); a missing one is undefined."""
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
               "pad_token": "<pad>", "image_token": "<img>"}
    source = ("{{ bos_token }}{{ eos_token }}{{ unk_token }}{{ pad_token }}{{ image_token }}"
              "{{ mask_token is defined }}")
    assert render(source, special_tokens=special) == "<s></s><unk><pad><img>False"
    assert render("{{ bos_token }}", special_tokens=special, bos_token="[B]") == "[B]"


def test_messages_as_apply_chat_template_passes_them() -> None:
    """``None`` values dropped (an OpenAI assistant turn with ``content: null``), reasoning
    also under ``thinking``/``reasoning_content``, tool calls and content parts kept."""
    call = {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "assistant", "content": "ok", "reasoning": "because"},
    ]
    source = ("{% for m in messages %}{{ m.content is defined }},{{ m.content|map(attribute="
              "'text')|join if m.content is not string else m.content }},"
              "{{ m.tool_calls[0].function.arguments|tojson if m.tool_calls else '' }},"
              "{{ m.thinking }}/{{ m.reasoning_content }};{% endfor %}")
    assert render(source, messages) == (
        "True,ab,,/;False,,{\"x\": 1},/;True,ok,,because/because;")


class Role(str):
    """A str subclass with a method a template must not reach."""

    def dangerous(self) -> str:
        return "called"


@dataclasses.dataclass
class Part:
    type: str
    text: str


def test_only_plain_data_reaches_the_template() -> None:
    """Subclasses are stripped to their base type, dataclasses become dicts, other objects an
    inert ``<TypeName>``; the caller's messages are not modified."""
    messages = [{"role": Role("user"), "content": [Part("text", "hi")], "extra": object()}]
    source = ("{{ messages[0].role.dangerous is defined }}|{{ messages[0].content[0].text }}|"
              "{{ messages[0].extra }}")
    assert render(source, messages) == "False|hi|<object>"
    assert isinstance(messages[0]["role"], Role) and isinstance(messages[0]["content"][0], Part)


def test_dict_and_namespace_as_in_transformers() -> None:
    source = ("{% set d = dict(a=1) %}{{ d.a }}{{ dict.fromkeys(['x'], 2).x }}"
              "{% set ns = namespace(n=1) %}{% set ns.n = ns.n + 1 %}{{ ns.n }}")
    assert render(source) == "122"
    for hostile in ("{% set ns = namespace(_x=1) %}", "{% set ns = namespace() %}"
                    "{% set ns._x = 1 %}", "{{ dict.__call__.__globals__ }}"):
        with pytest.raises(TemplateError, match="sandbox"):
            render(hostile)


@pytest.mark.parametrize(
    ("messages", "kwargs", "expected"),
    [
        (["hi"], {}, "message 1 is a str, not a mapping of role and content"),
        ([*USER, None], {}, "message 2 is a NoneType, not a mapping"),
        (USER, {"tools": ["get_weather"]}, "tools must be JSON objects"),
        (USER, {"tools": {"type": "function"}}, "tools must be JSON objects"),
        (USER, {"documents": "text"}, "documents must be JSON objects"),
    ],
)
def test_a_conversation_that_is_not_one(messages: Any, kwargs: dict[str, Any],
                                        expected: str) -> None:
    with pytest.raises(TemplateError, match=expected) as info:
        render("{{ messages }}", messages, **kwargs)
    assert "\n" not in str(info.value)


def test_a_conversation_that_contains_itself() -> None:
    message: dict[str, Any] = {"role": "user"}
    message["content"] = [message]
    with pytest.raises(TemplateError, match="nested too deeply"):
        render("{{ messages }}", [message])


# -- special tokens of a GGUF -------------------------------------------------------------------

VOCAB = ["<unk>", "<s>", "</s>", "<pad>", "<|eot_id|>", "<sep>", "x" * (MAX_TOKEN_CHARS + 1), ""]


def test_gguf_special_tokens_named_as_transformers_names_them() -> None:
    metadata = {
        "tokenizer.ggml.bos_token_id": "1", "tokenizer.ggml.eos_token_id": "2",
        "tokenizer.ggml.unknown_token_id": "0", "tokenizer.ggml.padding_token_id": "3",
        "tokenizer.ggml.eot_token_id": "4", "tokenizer.ggml.seperator_token_id": "5",
        "tokenizer.ggml.model": "llama", "general.name": "x",
    }
    assert gguf_special_tokens(metadata, len(VOCAB), VOCAB.__getitem__) == {
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
        "eot_token": "<|eot_id|>", "sep_token": "<sep>",
    }


def test_gguf_special_tokens_trust_nothing() -> None:
    """Ids that are not numbers of the vocabulary, empty and over-long texts are left out."""
    metadata = {
        "tokenizer.ggml.bos_token_id": "99", "tokenizer.ggml.eos_token_id": "-1",
        "tokenizer.ggml.pad_token_id": "three", "tokenizer.ggml.mask_token_id": "1" * 5000,
        "tokenizer.ggml.cls_token_id": "6", "tokenizer.ggml.sep_token_id": "7",
        "tokenizer.ggml.Bad-Name_token_id": "1", "tokenizer.ggml.eot_token_id": 4,
    }
    asked: list[int] = []

    def text(token: int) -> str:
        asked.append(token)
        return VOCAB[token]

    assert gguf_special_tokens(metadata, len(VOCAB), text) == {"eot_token": "<|eot_id|>"}
    assert all(0 <= t < len(VOCAB) for t in asked)
