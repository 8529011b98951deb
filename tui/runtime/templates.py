"""Chat templates rendered in Jinja2's immutable sandbox.

A chat template shipped inside a model file is untrusted code (CVE-2024-34359: a GGUF template
escaping a plain ``jinja2.Environment``). Templates are only ever rendered here, with
:class:`jinja2.sandbox.ImmutableSandboxedEnvironment`; a template that reaches for
``__class__``/``__mro__``/``__subclasses__`` or mutates objects raises :class:`TemplateError`.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from tui.runtime.errors import TemplateError

__all__ = ["FALLBACK_TEMPLATE", "render_chat", "render_template"]

#: Used when a model ships no template: ChatML, which most instruction-tuned models understand.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_MAX_TEMPLATE_CHARS = 200_000


class _TemplateRaised(Exception):
    """What ``raise_exception`` in a template raises (turned into :class:`TemplateError`)."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(str(message))


def _strftime_now(fmt: str) -> str:
    return _dt.datetime.now().strftime(str(fmt))


def _environment_class() -> Any:
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _StrictSandbox(ImmutableSandboxedEnvironment):
        """Fails on the first unsafe attribute access instead of yielding an undefined."""

        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r}")

    return _StrictSandbox


@lru_cache(maxsize=32)
def _compile(source: str) -> Any:
    from jinja2 import TemplateSyntaxError

    env = _environment_class()(
        trim_blocks=True, lstrip_blocks=True, autoescape=False, keep_trailing_newline=False
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"chat template does not compile: {exc.message}") from None


def render_template(source: str, **context: Any) -> str:
    """Render an untrusted Jinja2 template in the immutable sandbox."""
    from jinja2 import TemplateError as JinjaError
    from jinja2.exceptions import SecurityError

    if len(source) > _MAX_TEMPLATE_CHARS:
        raise TemplateError("chat template is larger than 200k characters; refusing to render it")
    template = _compile(source)
    try:
        return template.render(**context)
    except SecurityError as exc:
        raise TemplateError(
            f"chat template blocked by the sandbox (unsafe operation: {_short(exc)})",
            hint="the model file's template is malicious or broken; pass another template",
        ) from None
    except _TemplateRaised as exc:
        raise TemplateError(f"chat template refused the conversation: {_short(exc)}") from None
    except JinjaError as exc:
        raise TemplateError(f"chat template failed: {_short(exc)}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise TemplateError(f"chat template failed: {type(exc).__name__}: {_short(exc)}") from None
    except RecursionError:
        raise TemplateError("chat template recursed too deeply") from None


def render_chat(
    template: str | None,
    messages: Sequence[Mapping[str, str]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Render ``messages`` with a model's chat template (or :data:`FALLBACK_TEMPLATE`)."""
    plain = [{"role": str(m["role"]), "content": str(m.get("content", ""))} for m in messages]
    return render_template(
        template or FALLBACK_TEMPLATE,
        messages=plain,
        bos_token=bos_token,
        eos_token=eos_token,
        add_generation_prompt=add_generation_prompt,
        tools=None,
        documents=None,
        **dict(extra or {}),
    )


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
