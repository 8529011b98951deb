"""Untrusted chat templates are bounded in time and size, and Ctrl-C works while they render.

Every hostile template must end with one :class:`TemplateError` line (no raw exception, no
control character), without building anything big (traced memory stays small). Renders run
in a guard thread joined with a generous timeout, so a regression fails instead of hanging;
nothing asserts a speed.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tui.errors import ModelDeckError
from tui.runtime.templates import FALLBACK_TEMPLATE, MAX_CHARS, render_chat

from tests.support.checks import REPO, assert_no_control_chars, tree_digest

pytestmark = pytest.mark.timeout(120)

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
BIG = "{% set s = 'a' * 1000000 %}"
NESTED = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"

HOSTILE = {
    "nested loops of 10^10": NESTED,
    "busy nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}"
                         "{% set x = i * j %}{% endfor %}{% endfor %}",
    "str * 2e9": "{{ 'a' * 2000000000 }}",
    "2e9 * str": "{{ 2000000000 * 'a' }}",
    "list * 2e9": "{{ [1] * 2000000000 }}",
    "lipsum(10**7)": "{{ lipsum(10**7) }}",
    "lipsum(100000)": "{{ lipsum(100000) }}",
    "huge range": "{{ range(10**10)|list }}",
    "+ doubling": "{% set ns = namespace(s='ab') %}{% for i in range(100) %}"
                  "{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "~ doubling": "{% set ns = namespace(s='ab') %}{% for i in range(100) %}"
                  "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "int squaring": "{% set ns = namespace(x=10) %}{% for i in range(64) %}"
                    "{% set ns.x = ns.x * ns.x %}{% endfor %}",
    "join of a huge list": BIG + "{{ ([s] * 1000)|join }}",
    "join with a huge separator": "{{ range(100000)|join('x' * 1000000) }}",
    "str.join of a generator": BIG + "{{ ''.join(range(100000)|map('string')|map('replace', "
                               "'1', s)) }}",
    "replace filter": "{% set s = 'a' * 100000 %}{{ s|replace('a', s) }}",
    "str.replace": "{% set s = 'a' * 100000 %}{{ s.replace('a', s) }}",
    "str.translate": "{% set s = 'a' * 100000 %}{{ s.translate({97: s}) }}",
    "str.expandtabs": "{% set s = '\t' * 100000 %}{{ s.expandtabs(100000) }}",
    "center filter": "{{ 'a'|center(2000000000) }}",
    "str.ljust": "{{ 'a'.ljust(2000000000) }}",
    "% width": "{{ '%2000000000s' % 'a' }}",
    "format width": "{{ '{:2000000000}'.format('a') }}",
    "format filter": "{{ '%2000000000s'|format('a') }}",
    "indent with a huge prefix": "{% set s = '\n' * 100000 %}{{ s|indent('x' * 100000) }}",
    "wordwrap with a huge wrapstring": "{% set s = 'a ' * 100000 %}"
                                       "{{ s|wordwrap(2, wrapstring='x' * 100000) }}",
    "tojson indent": "{{ messages|tojson(indent=1000000) }}",
    "tojson string indent": "{{ [[[[1]]]]|tojson(indent=' ' * 100000) }}",
    "tojson separators": "{{ range(100000)|list|tojson(separators=('x' * 100000, ':')) }}",
    "tojson ensure_ascii": "{% set s = '\U0001F600' * 500000 %}{{ s|tojson(ensure_ascii=true) }}",
    "generation block": BIG + "{% generation %}{% for i in range(100000) %}{{ s }}{% endfor %}"
                        "{% endgeneration %}",
    "loop with continue": "{% for i in range(100000) %}{% for j in range(100000) %}"
                          "{% continue %}{% endfor %}{% endfor %}",
    "sum of lists": "{{ ([[1]] * 100000)|sum(start=[]) }}",
    "macro output": BIG + "{% macro m() %}{% for i in range(100000) %}{{ s }}{% endfor %}"
                    "{% endmacro %}{{ m() }}",
    "set block": BIG + "{% set x %}{% for i in range(100000) %}{{ s }}{% endfor %}{% endset %}",
    "plain output": BIG + "{% for i in range(100000) %}{{ s }}{% endfor %}",
    "printing a huge list": BIG + "{{ [s] * 1000000 }}",
    "string filter of a huge list": BIG + "{{ ([s] * 1000000)|string }}",
    "namespace repr": BIG + "{% set ns = namespace(x=[s] * 1000000) %}{{ ns }}",
    "distinct big items in a list": BIG + "{{ (range(100000)|map('string')|map('replace', '1', "
                                    "s)|list)|length }}",
    "loop.length over big items": BIG + "{% for x in range(100000)|map('string')|map('replace', "
                                  "'1', s) %}{{ loop.length }}{% endfor %}",
    "big values made and dropped": BIG + "{% for i in range(100000) %}{% set x = s ~ i %}"
                                   "{% endfor %}",
    "deep recursion": "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "division by zero": "{{ 1 / 0 }}",
}


def guarded(fn: Callable[[], Any], timeout: float = 30.0) -> tuple[Any, BaseException | None, int]:
    """``fn()`` in a daemon thread under tracemalloc: (result, exception, peak bytes traced).

    The join is a guard against a hang (the assertion), not a measurement of speed.
    """
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    tracemalloc.start()
    try:
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        thread.join(timeout)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not thread.is_alive(), f"still rendering after {timeout} s"
    return box.get("value"), box.get("error"), peak


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_template_ends_with_one_clear_error(source: str) -> None:
    """Each ends with a TemplateError (the time limit shortened to keep the tier fast; the
    default 1 s is what the CLI tests below run with)."""
    from tui.runtime.errors import TemplateError

    value, error, peak = guarded(lambda: render_chat(source, MESSAGES, seconds=0.3))
    assert isinstance(error, TemplateError), f"{error!r} / {value!r:.80}"
    text = str(error)
    assert "\n" not in text and text.startswith("chat template")
    assert_no_control_chars(text)
    assert peak < 64 << 20, f"peak {peak >> 20} MiB"


def test_a_cancel_event_stops_a_render() -> None:
    from tui.runtime.templates import render_bounded

    cancel = threading.Event()
    cancel.set()
    _value, error, _peak = guarded(lambda: render_bounded(NESTED, {}, seconds=600, cancel=cancel))
    assert "chat template rendering was cancelled" in str(error)


def test_the_next_render_is_unaffected() -> None:
    """A render stopped by the watchdog leaves no interrupt behind for the thread's next
    work, and ordinary templates still work afterwards."""

    def twice() -> tuple[str, str]:
        from tui.runtime.errors import TemplateError

        with pytest.raises(TemplateError, match=r"took longer than 0\.3 s"):
            render_chat(NESTED, MESSAGES, seconds=0.3)
        first = render_chat(None, MESSAGES)
        total = 0
        for i in range(300_000):  # bytecode, where a stray interrupt would land
            total += i
        return first, str(total)

    value, error, _peak = guarded(twice)
    assert error is None and value[0].endswith("<|im_start|>assistant\n")


def test_ordinary_templates_render_as_in_the_plain_sandbox() -> None:
    """The bounds change nothing for real templates (Llama 3, ChatML, macros, namespace,
    loop variables, ``~``, filters, ``%``, ``tojson``), nor for a long conversation."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    llama3 = (
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
        "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
        "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
        "{% endif %}"
    )
    rich = (
        "{% macro turn(m) %}[{{ m.role|upper }}] {{ m.content ~ '!' }}{% endmacro %}"
        "{% set ns = namespace(n=0, seen=[]) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
        "{{ turn(m) }}{% if not loop.last %}|{% endif %}{% endfor %}"
        "{{ '%d turns, %s' % (ns.n, messages|map(attribute='role')|join(',')) }}"
        "{{ messages|tojson }}{{ '{:>6}'.format('x') }}{{ 'a b'.replace(' ', '_') }}"
        "{{ ['x'] * 3 }}{{ 2 ** 10 }}{{ lipsum(1, html=false)|wordcount > 0 }}"
        "{{ nothing|default('d') }}{{ 'xy'|center(6) }}{{ 'l1\nl2'|indent(2, true) }}"
    )
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = functools.partial(json.dumps, ensure_ascii=False)  # transformers'
    long = [{"role": "user", "content": "w " * (MAX_CHARS // 2)}] * 2  # 2 MiB of conversation
    for source, messages in ((llama3, MESSAGES), (FALLBACK_TEMPLATE, MESSAGES), (rich, MESSAGES),
                             (FALLBACK_TEMPLATE, long)):
        context = dict(messages=messages, bos_token="<s>", eos_token="</s>",
                       add_generation_prompt=True, tools=None, documents=None)
        expected = env.from_string(source).render(**context)
        assert render_chat(source, messages, bos_token="<s>", eos_token="</s>") == expected


def test_sandbox_escapes_still_blocked() -> None:
    from tui.runtime.errors import TemplateError

    for attack in ("{{ ''.__class__.__mro__[1].__subclasses__() }}",
                   "{{ cycler.__init__.__globals__.os }}",
                   "{% set x = messages.append({'role': 'x'}) %}",
                   "{{ namespace.__init__.__globals__ }}"):
        with pytest.raises(TemplateError) as info:
            render_chat(attack, MESSAGES)
        assert isinstance(info.value, ModelDeckError) and "\n" not in str(info.value)


# -- Ctrl-C -----------------------------------------------------------------------------------

SCRIPT = """
import sys
from tui.runtime.templates import render_bounded
try:  # the signal may come as soon as the line is out: catch it from there on
    print("rendering", flush=True)
    render_bounded(sys.argv[1], {}, seconds=600)
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_ctrl_c_interrupts_a_render_in_the_main_thread() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, NESTED], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "rendering\n"
        time.sleep(0.3)  # well into the render (it runs for ever): the signal must stop it
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and err == "interrupted\n"


@pytest.fixture
def slow_model(tmp_path: Path) -> Path:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is needed to load a GGUF")
    from tests.support.tiny_models import make_tiny_gguf

    return make_tiny_gguf(tmp_path / "user" / "slow.gguf", chat_template=NESTED)


def cli_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "models").mkdir(exist_ok=True)
    env = child_env()
    env.update(MODELDECK_MODELS_DIR=str(tmp_path / "models"),
               MODELDECK_STATE_DIR=str(tmp_path / "state"),
               MODELDECK_CONFIG=str(tmp_path / "none.toml"))
    return env


def test_cli_run_with_a_looping_template(slow_model: Path, tmp_path: Path) -> None:
    """``modeldeck run`` on a GGUF whose template loops 10^10 times: one error line."""
    env = cli_env(tmp_path)
    before = tree_digest(tmp_path, skip=(tmp_path / "state",))
    proc = subprocess.run([sys.executable, "-m", "tui", "run", str(slow_model), "-p", "hi"],
                          capture_output=True, text=True, env=env, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("loaded slow.gguf") and len(lines) == 2
    assert lines[1].startswith("modeldeck: error: chat template took longer than 1 s")
    assert proc.stdout == ""
    assert tree_digest(tmp_path, skip=(tmp_path / "state",)) == before


def test_cli_ctrl_c_during_rendering(slow_model: Path, tmp_path: Path) -> None:
    """Ctrl-C while the template renders (in the runtime's thread): out at once, one line."""
    proc = subprocess.Popen([sys.executable, "-m", "tui", "run", str(slow_model), "-p", "hi"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(tmp_path))
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("loaded slow.gguf")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and err == "modeldeck: interrupted\n"
