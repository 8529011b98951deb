"""The backends render chat templates with every special token of the model.

llama.cpp: the GGUF's ``tokenizer.ggml.*_token_id`` texts from the real vocabulary.
transformers: the tokenizer's ``special_tokens_map``, and the very text of its own
``apply_chat_template(..., tokenize=False)``, tools included, in our bounded sandbox.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tui.runtime.types import LoadOptions, ModelSpec

from tests.support.tiny_models import tiny_gguf, tiny_transformers

TOKENS = ("[{{ bos_token }}|{{ eos_token }}|{{ unk_token }}|{{ pad_token }}|{{ eot_token }}|"
          "{{ mask_token is defined }}]")
TEMPLATE = (
    TOKENS + "{% if tools %}{{ tools|tojson }}{% endif %}"
    "{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
MESSAGES = [{"role": "user", "content": "héllo <b>"}]
TOOLS = [{"type": "function", "function": {"name": "now", "parameters": {}}}]


def test_llama_cpp_passes_the_gguf_special_tokens() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is needed to load a GGUF")
    from tui.runtime.backends.llama_cpp import LlamaCppBackend

    # the tiny vocabulary: <unk> 0, <s> 1, </s> 2, …, <|im_start|> 259, <|im_end|> 260
    path = tiny_gguf(chat_template=TEMPLATE,
                     extra_kv=(("pad_token_id", 259), ("eot_token_id", 260)))
    spec = ModelSpec(id="tiny", kind="gguf", name="tiny", path=Path(path))
    backend = LlamaCppBackend(spec, LoadOptions(), n_gpu_layers=0, n_ctx=256)
    backend.load()
    try:
        assert backend.render_prompt(MESSAGES, tools=TOOLS) == (
            "[<s>|</s>|<unk>|<|im_start|>|<|im_end|>|False]"
            '[{"type": "function", "function": {"name": "now", "parameters": {}}}]'
            "user: héllo <b></s>assistant:"
        )
        tokens = backend.prompt_tokens(MESSAGES)  # the texts tokenize as the tokens
        assert {2, 259, 260} <= set(tokens)
    finally:
        backend.close()


def test_transformers_renders_as_apply_chat_template() -> None:
    pytest.importorskip("torch", reason="the transformers backend needs torch")
    pytest.importorskip("transformers", reason="the transformers backend needs transformers")
    from tui.runtime.backends.transformers import TransformersBackend

    folder = tiny_transformers(chat_template=TEMPLATE)
    spec = ModelSpec(id="hf", kind="safetensors", name="hf", path=Path(folder))
    backend = TransformersBackend(spec, LoadOptions(), n_ctx=512)
    backend.load()
    try:
        tok = backend.tokenizer
        for kwargs in ({}, {"tools": TOOLS}, {"add_generation_prompt": False}):
            expected = tok.apply_chat_template(
                MESSAGES, tokenize=False, **{"add_generation_prompt": True, **kwargs}
            )
            assert backend.render_prompt(MESSAGES, **kwargs) == expected
        assert backend.render_prompt(MESSAGES).startswith("[<s>|</s>|<unk>|")
    finally:
        backend.close()
