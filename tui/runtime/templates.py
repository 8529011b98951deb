"""Chat templates rendered in Jinja2's immutable sandbox, bounded in time and size.

Templates render as transformers' ``apply_chat_template`` renders them (``render_chat``): the
same environment (``trim_blocks``, ``lstrip_blocks``, the ``loopcontrols`` extension, the
``{% generation %}`` tag, ``tojson`` as plain ``json.dumps`` with ``ensure_ascii``/``indent``/
``separators``/``sort_keys``, ``raise_exception``, ``strftime_now``, ``dict``, ``namespace``),
the same inputs (messages with ``None`` values dropped and reasoning aliased, ``tools``,
``documents``, every special token of the tokenizer, extra keyword arguments), all rebuilt out
of plain JSON types first.

A chat template shipped inside a model file is untrusted code (CVE-2024-34359: a GGUF template
escaping a plain ``jinja2.Environment``). Templates are only ever rendered here, with
:class:`jinja2.sandbox.ImmutableSandboxedEnvironment`; a template that reaches for
``__class__``/``__mro__``/``__subclasses__`` or mutates objects raises :class:`TemplateError`.

A template can also just never end, or build a string of gigabytes. Rendering is bounded, with
Jinja2's public sandbox hooks, and fails with a one-line :class:`TemplateError` when:

* it runs longer than ``seconds`` (:data:`RENDER_SECONDS`). It renders in the caller's thread; a
  watchdog thread raises an exception in it past the deadline (``PyThreadState_SetAsyncExc``,
  checked between two bytecodes, so it stops loops that call nothing), or as soon as an
  optional ``cancel`` event is set. Ctrl-C (``KeyboardInterrupt``) works during a render.
* its output, or any value it builds, would pass ``max_chars`` characters (:data:`MAX_CHARS`
  plus twice the conversation, for :func:`render_chat`). Sizes are estimated *before* the
  work: for ``*``, ``+``, ``%`` and ``**`` (``intercepted_binops``), ``~`` (the code
  generator), calls (``str`` methods: ``replace``, ``join``, ``format``, ``expandtabs``,
  ``translate``; any number argument over the limit is refused), the filters (those that can
  grow a value — ``join``, ``replace``, ``indent``, ``wordwrap``, ``format``, ``tojson``,
  ``sum`` — get their own estimate; every value passed to one is measured first), blocks and
  macros (``Environment.concat``) and values printed (``finalize``). ``range`` is the
  sandbox's (100,000 items), ``lipsum`` is capped at 10,000 words. Output is streamed with
  ``Template.generate()`` and counted as it comes.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import itertools
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MappingView, Sequence, Set
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tui.runtime.errors import TemplateError

__all__ = [
    "FALLBACK_TEMPLATE",
    "MAX_CHARS",
    "RENDER_SECONDS",
    "render_bounded",
    "render_chat",
    "render_template",
]

#: Used when a model ships no template: ChatML, which most instruction-tuned models understand.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

RENDER_SECONDS = 1.0  # a chat template renders in about a millisecond
MAX_CHARS = 1 << 20  # output and any value built (render_chat adds twice the conversation)
MAX_INT_BITS = 1 << 16  # integers of about 20,000 digits
BUILD_FACTOR = 32  # all the values a render builds: at most this many times its size limit
MAX_LIPSUM_WORDS = 10_000
_MAX_TEMPLATE_CHARS = 200_000
_WATCH_POLL = 0.05  # how often the watchdog looks at cancel events and deadlines
_HINT = "the model file's template is malicious or broken; pass another template"


class _TemplateRaised(Exception):
    """What ``raise_exception`` in a template raises (turned into :class:`TemplateError`)."""


class _Refused(Exception):
    """A size check refused an operation (turned into :class:`TemplateError`)."""


class _Overtime(BaseException):
    """Raised in the rendering thread by the watchdog (a BaseException: no template-level
    ``except Exception`` in Jinja2 swallows it)."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(str(message))


def _strftime_now(fmt: str) -> str:
    return _dt.datetime.now().strftime(str(fmt)[:200])


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | str | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """transformers' ``tojson``: plain ``json.dumps`` (no HTML escaping, keys in order)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


class _TemplateDict:
    """``dict`` in templates: builds dicts, and nothing of the type itself to reach for."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


# -- sizes -----------------------------------------------------------------------------------

_state = threading.local()  # limit and size cache of the render running in this thread


def _limit() -> int:
    return getattr(_state, "limit", MAX_CHARS)


def _refuse(what: str, size: int | float) -> _Refused:
    shown = f"{size:,} characters" if size != float("inf") else "an unbounded size"
    return _Refused(f"{what} would make {shown} (the limit is {_limit():,})")


def _size(value: Any, budget: int) -> int:
    """About how many characters ``str(value)`` has; counting stops past ``budget``.

    Containers are measured through their items (cached per render, by identity); objects of
    other types count as a short repr.
    """
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, float):
        return 24
    if isinstance(value, bytes | bytearray):
        return 4 * len(value) + 3
    if isinstance(value, Mapping):
        items: Iterable[Any] = itertools.chain.from_iterable(value.items())
    elif isinstance(value, Sequence | Set | MappingView):
        items = value
    else:
        return 64  # Undefined, loop, macro, namespace, an iterator: a short repr
    cache: dict[int, tuple[Any, int]] | None = getattr(_state, "sizes", None)
    if cache is not None and id(value) in cache:
        return cache[id(value)][1]
    total = 2
    for item in items:
        total += _size(item, budget - total) + 2
        if total > budget:
            return total  # a partial count: not cached (another budget may need more)
    if cache is not None:
        cache[id(value)] = (value, total)  # the value is kept: its id is not reused meanwhile
    return total


def _check(value: Any, what: str = "an operation") -> Any:
    """``value`` if it is within the limit (cheap: lengths only), else refuse. Its length is
    added to what the render built in all, which may not pass :data:`BUILD_FACTOR` times the
    limit (values held in a list, or made and dropped in a loop, count too)."""
    if isinstance(value, str | list | tuple | dict | bytes):
        size = len(value)
        if size > _limit():
            raise _Refused(f"{what} made a value of {size:,} (the limit is {_limit():,})")
        try:
            built = _state.built = _state.built + size
        except AttributeError:  # not rendering
            return value
        if built > BUILD_FACTOR * _state.limit:
            raise _Refused(f"values of {built:,} characters in all (the limit is "
                           f"{BUILD_FACTOR * _state.limit:,})")
    return value


def _check_str(value: Any, what: str = "printing a value") -> Any:
    """``value`` if ``str(value)`` is within the limit, else refuse (before converting)."""
    limit = _limit()
    size = _size(value, limit)
    if size > limit:
        raise _refuse(what, size)
    return value


def _check_arguments(args: Iterable[Any], kwargs: Mapping[str, Any], what: str) -> None:
    """No number over the limit (a width, a count), no value too long to print."""
    limit = _limit()
    for arg in itertools.chain(args, (v for k, v in kwargs.items() if not k.startswith("_"))):
        if isinstance(arg, int) and not isinstance(arg, bool):
            if abs(arg) > limit:
                raise _Refused(f"{what} was given the number {arg:,} (the limit is {limit:,})")
        elif not isinstance(arg, str | float):
            _check_str(arg, f"printing a value given to {what}")


_NUMBER = re.compile(r"\d+")


def _format_size(fmt: str, args: Any) -> int:
    """About the size of ``fmt % args`` / ``fmt.format(*args)``: the format, the values, and
    every number in the format taken as a width."""
    limit = _limit()
    widths = sum(int(n) for n in _NUMBER.findall(fmt[:10_000]) if len(n) < 12)
    return len(fmt) + _size(args, limit) + widths


def _materialize(value: Any) -> Any:
    """An iterator (a generator, ``map``) as a list, so it can be measured, its items measured
    as they come; anything else as is."""
    if not isinstance(value, Iterator):
        return value
    limit, total, items = _limit(), 0, []
    for item in value:
        total += _size(item, limit) + 2
        if total > limit:
            raise _refuse("a sequence", total)
        items.append(item)
    return items


# -- estimates of operations that grow values ---------------------------------------------


def _binop_size(operator: str, left: Any, right: Any) -> int | float:
    sized = str | list | tuple | bytes
    if operator == "*":
        seq, n = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(seq, sized) and isinstance(n, int):
            return len(seq) * max(0, n)
        if isinstance(left, int) and isinstance(right, int):
            bits = left.bit_length() + right.bit_length()
            return bits // 3 if bits <= MAX_INT_BITS else float("inf")
    elif operator == "+":
        if isinstance(left, sized) and isinstance(right, sized):
            return len(left) + len(right)
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            bits = right * left.bit_length()
            return bits // 3 if bits <= MAX_INT_BITS else float("inf")
    elif operator == "%" and isinstance(left, str):
        return _format_size(left, right)
    return 0


def _str_method(target: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
                ) -> tuple[int | float, tuple[Any, ...]]:
    """Estimated result size of ``target.name(*args)``, and the arguments to call it with."""
    if name == "replace" and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
        old, new = args[0], args[1]
        count = target.count(old) if old else len(target) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        return len(target) + count * max(0, len(new) - len(old)), args
    if name == "join" and args:
        items = _materialize(args[0])
        n = len(items) if hasattr(items, "__len__") else 0
        return _size(items, _limit()) + len(target) * n, (items, *args[1:])
    if name in ("format", "format_map"):
        return _format_size(target, (args, kwargs)), args
    if name == "expandtabs":
        size = args[0] if args and isinstance(args[0], int) else kwargs.get("tabsize", 8)
        return len(target) + target.count("\t") * max(0, int(size)), args
    if name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((_size(v, _limit()) for v in args[0].values()), default=1)
        return len(target) * max(1, longest), args
    return 0, args


def _filter_size(name: str, data: list[Any], kwargs: dict[str, Any]) -> int | float:
    """Estimated result size of the filters that can grow a value beyond their inputs."""
    limit = _limit()
    value = data[0] if data else None

    def arg(index: int, key: str, default: Any) -> Any:
        return data[index] if len(data) > index else kwargs.get(key, default)

    if name == "join":
        sep = str(arg(1, "d", ""))
        n = len(value) if hasattr(value, "__len__") else 0
        return _size(value, limit) + len(sep) * n
    if name == "replace" and isinstance(value, str):
        old, new = str(arg(1, "old", "")), str(arg(2, "new", ""))
        count = value.count(old) if old else len(value) + 1
        return len(value) + count * max(0, len(new) - len(old))
    if name == "indent" and isinstance(value, str):
        width = arg(1, "width", 4)
        pad = len(width) if isinstance(width, str) else max(0, int(width))
        return len(value) + (value.count("\n") + 1) * pad
    if name == "wordwrap" and isinstance(value, str):
        width = max(1, int(arg(1, "width", 79)))
        wrap = arg(3, "wrapstring", None) or "\n"
        return len(value) + (len(value) // width + value.count("\n") + 1) * len(str(wrap))
    if name == "format" and isinstance(value, str):
        return _format_size(value, (data[1:], kwargs))
    if name == "tojson":  # (value, ensure_ascii, indent, separators, sort_keys)
        indent, separators = arg(2, "indent", None), arg(3, "separators", None)
        pad = len(indent) if isinstance(indent, str) else (
            max(0, indent) if isinstance(indent, int) else 0)
        if pad > 16:
            return float("inf")
        seps = sum(_size(s, limit) for s in separators) if isinstance(
            separators, list | tuple) else 0
        return _size(value, limit) * (2 + pad + seps)
    if name == "pprint":
        return _size(value, limit) * 2
    if name == "sum":
        start = arg(2, "start", 0)
        # sum() of lists or strings copies the growing total at every step, in C
        return 0 if isinstance(start, int | float) else float("inf")
    return 0


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its arguments measured first and its result checked."""
    from jinja2.environment import Environment
    from jinja2.nodes import EvalContext
    from jinja2.runtime import Context

    plumbing = (Environment, EvalContext, Context)

    @functools.wraps(func)  # keeps jinja_pass_arg, so Jinja passes the same first argument
    def guarded(*args: Any, **kwargs: Any) -> Any:
        what = f"the {name} filter"
        skip = next((i for i, a in enumerate(args) if not isinstance(a, plumbing)), len(args))
        data = list(args[skip:])
        if data and isinstance(data[0], Iterator):
            data[0] = _materialize(data[0])  # measured, then passed on as an iterator still:
            args = (*args[:skip], iter(data[0]), *args[skip + 1 :])  # length(), tojson fail
        _check_arguments(data, kwargs, what)
        size = _filter_size(name, data, kwargs)
        if size > _limit():
            raise _refuse(what, size)
        return _check(func(*args, **kwargs), f"the result of {what}")

    return guarded


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    from jinja2.utils import generate_lorem_ipsum

    if n * max > MAX_LIPSUM_WORDS:
        raise _Refused(f"lipsum of {n:,} paragraphs of up to {max:,} words "
                       f"(at most {MAX_LIPSUM_WORDS:,} words)")
    return generate_lorem_ipsum(n, html, min, max)


# -- the environment -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment_class() -> Any:
    from jinja2 import nodes
    from jinja2.compiler import CodeGenerator
    from jinja2.exceptions import SecurityError
    from jinja2.ext import Extension, loopcontrols
    from jinja2.runtime import Namespace, markup_join
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _CodeGenerator(CodeGenerator):
        """Compiles ``a ~ b`` to a size-checked join (the sandbox has no hook for it)."""

        def visit_Concat(self, node: Any, frame: Any) -> None:
            escape = "context.eval_ctx.autoescape" if frame.eval_ctx.volatile else (
                "True" if frame.eval_ctx.autoescape else "False")
            self.write("environment.concat_values((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write(f"), {escape})")

    class _Namespace(Namespace):
        """``namespace()`` that, like transformers', stores no ``_``-prefixed attribute, and
        whose repr does not print its (possibly huge) attributes."""

        def __init__(*args: Any, **kwargs: Any) -> None:
            self, args = args[0], args[1:]  # Namespace's trick: namespace(self=...) works
            attrs = dict(*args, **kwargs)
            for name in attrs:
                _Namespace._check_name(name)
            Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            _Namespace._check_name(name)
            Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise SecurityError(f"namespace attribute {name[:40]!r} starts with '_'")

        def __repr__(self) -> str:
            return "<Namespace>"

    class _Generation(Extension):
        """``{% generation %}…{% endgeneration %}`` (transformers' tag marking what the
        assistant wrote): renders its body; no mask is computed here."""

        tags = frozenset({"generation"})

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_body")
            return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _body(self, caller: Callable[[], str]) -> str:
            return caller()

    class _BoundedSandbox(ImmutableSandboxedEnvironment):
        """Fails on the first unsafe attribute access instead of yielding an undefined, and
        checks sizes before the operations that can grow a value (see the module doc)."""

        code_generator_class = _CodeGenerator
        intercepted_binops = frozenset({"*", "+", "%", "**"})

        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r}")

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            size = _binop_size(operator, left, right)
            if size > _limit():
                raise _refuse(f"'{operator}'", size)
            return _check(super().call_binop(context, operator, left, right))

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            name = str(getattr(__obj, "__name__", type(__obj).__name__)).lstrip("_")
            what = f"{name}()"
            _check_arguments(args, kwargs, what)
            method = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped
            target = getattr(method, "__self__", None)
            if isinstance(target, str):
                size, args = _str_method(target, getattr(method, "__name__", ""), args, kwargs)
                if size > _limit():
                    raise _refuse(what, size)
            return _check(super().call(__context, __obj, *args, **kwargs), f"the result of {what}")

        @staticmethod
        def concat_values(values: tuple[Any, ...], escape: bool) -> str:
            """``a ~ b ~ …``, measured before it is built."""
            limit = _limit()
            size = sum(_size(v, limit) for v in values)
            if size > limit:
                raise _refuse("'~'", size)
            return _check(markup_join(values) if escape else "".join(map(str, values)))

    def bounded_concat(pieces: Iterable[str]) -> str:
        """``Environment.concat`` (blocks, macros, ``caller()``) with a running size check."""
        limit, total, parts = _limit(), 0, []
        for piece in pieces:
            total += len(piece)
            if total > limit:
                raise _refuse("a block or macro", total)
            parts.append(piece)
        return _check("".join(parts))

    def finalize(value: Any) -> Any:
        return _check_str(value)

    def make() -> Any:
        env = _BoundedSandbox(
            trim_blocks=True, lstrip_blocks=True, autoescape=False, keep_trailing_newline=False,
            finalize=finalize, extensions=[_Generation, loopcontrols],
        )
        env.concat = bounded_concat  # type: ignore[method-assign]
        env.globals.update(
            raise_exception=_raise_exception, strftime_now=_strftime_now, lipsum=_lipsum,
            namespace=_Namespace, dict=_TemplateDict(),
        )
        env.filters["tojson"] = _tojson
        env.filters = {name: _guarded_filter(name, f) for name, f in env.filters.items()}
        return env

    return make


@lru_cache(maxsize=32)
def _compile(source: str) -> Any:
    from jinja2 import TemplateSyntaxError

    env = _environment_class()()
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"chat template does not compile: {_short(exc.message)}") from None


# -- the watchdog ----------------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    thread_id: int
    deadline: float
    cancel: threading.Event | None
    sent: bool = False
    cancelled: bool = False


def _interrupt(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in a thread at its next bytecode (None: clear one still pending)."""
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


class _Watchdog:
    """One daemon thread that interrupts renders past their deadline or cancelled.

    Sending and disarming happen under one lock, and disarming clears an interrupt still
    pending, so an interrupt never lands outside the render it was meant for.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jobs: set[_Job] = set()
        self._thread: threading.Thread | None = None

    def arm(self, job: _Job) -> None:
        with self._cond:
            self._jobs.add(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="modeldeck-template-watchdog", daemon=True
                )
                self._thread.start()
            elif len(self._jobs) == 1:
                self._cond.notify()

    def disarm(self, job: _Job) -> None:
        with self._cond:
            self._jobs.discard(job)
            if job.sent:
                _interrupt(job.thread_id, None)
                job.sent = False

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._jobs:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                for job in self._jobs:
                    cancelled = job.cancel is not None and job.cancel.is_set()
                    if not job.sent and (cancelled or now >= job.deadline):
                        job.sent, job.cancelled = True, cancelled
                        _interrupt(job.thread_id, _Overtime)
                self._cond.wait(_WATCH_POLL)


_WATCHDOG = _Watchdog()


def _within(seconds: float, cancel: threading.Event | None, fn: Callable[[], str]) -> str:
    """``fn()`` in this thread, interrupted past ``seconds`` or when ``cancel`` is set."""
    job = _Job(threading.get_ident(), time.monotonic() + seconds, cancel)
    outcome: tuple[str | None, BaseException | None] | None = None
    while True:  # an interrupt may land anywhere until the job is disarmed: loop until it is
        try:
            if outcome is None:
                try:
                    _WATCHDOG.arm(job)
                    outcome = (fn(), None)
                except BaseException as exc:
                    outcome = (None, exc)
            _WATCHDOG.disarm(job)
            break
        except BaseException as exc:
            if outcome is None or (outcome[1] is None and not isinstance(exc, _Overtime)):
                outcome = (None, exc)  # e.g. Ctrl-C right after the render: raised below
    value, error = outcome
    if isinstance(error, _Overtime):
        if job.cancelled:
            raise TemplateError("chat template rendering was cancelled") from None
        raise TemplateError(
            f"chat template took longer than {seconds:g} s to render; stopped it",
            hint=_HINT,
        ) from None
    if error is not None:
        raise error
    assert value is not None
    return value


# -- rendering -------------------------------------------------------------------------------


def render_bounded(
    source: str,
    context: Mapping[str, Any],
    *,
    seconds: float = RENDER_SECONDS,
    max_chars: int = MAX_CHARS,
    cancel: threading.Event | None = None,
) -> str:
    """Render an untrusted Jinja2 template in the bounded sandbox (see the module doc)."""
    from jinja2 import TemplateError as JinjaError
    from jinja2.exceptions import SecurityError

    if len(source) > _MAX_TEMPLATE_CHARS:
        raise TemplateError("chat template is larger than 200k characters; refusing to render it")

    def render() -> str:
        _state.limit, _state.sizes, _state.built = max_chars, {}, 0
        try:
            parts, total = [], 0
            for piece in _compile(source).generate(**context):
                total += len(piece)
                if total > max_chars:
                    raise _refuse("the output", total)
                parts.append(piece)
            return "".join(parts)
        finally:
            del _state.limit, _state.sizes, _state.built

    try:
        return _within(seconds, cancel, render)
    except TemplateError:
        raise
    except _Refused as exc:
        raise TemplateError(f"chat template stopped: {_short(exc)}", hint=_HINT) from None
    except SecurityError as exc:
        raise TemplateError(
            f"chat template blocked by the sandbox (unsafe operation: {_short(exc)})", hint=_HINT
        ) from None
    except _TemplateRaised as exc:
        raise TemplateError(f"chat template refused the conversation: {_short(exc)}") from None
    except JinjaError as exc:
        raise TemplateError(f"chat template failed: {_short(exc)}") from None
    except RecursionError:
        raise TemplateError("chat template recursed too deeply") from None
    except MemoryError:
        raise TemplateError("chat template ran out of memory") from None
    except Exception as exc:  # template code can raise anything Python can (1/0, int('x'))
        raise TemplateError(f"chat template failed: {type(exc).__name__}: {_short(exc)}") from None


def render_template(source: str, **context: Any) -> str:
    """Render an untrusted Jinja2 template with the default bounds."""
    return render_bounded(source, context)


_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # the first wins
_REASONING_KEYS = frozenset(_REASONING_FIELDS)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> Any:
    """``value`` rebuilt out of plain JSON types (as transformers' ``_plain_template_data``):
    subclasses stripped to their base type, mappings to dicts, dataclasses and pydantic models
    to dicts, anything else to an inert ``"<TypeName>"``. A template sees no method of the
    caller's objects."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        return {k if type(k) is str else _plain(k): v if type(v) is str else _plain(v)
                for k, v in value.items()}
    if kind is list:
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    numpy = sys.modules.get("numpy")  # only if the caller has it: its scalars, by value
    if numpy is not None and isinstance(value, numpy.generic):
        return _plain(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    return f"<{kind.__name__}>"


def _plain_size(value: Any) -> int:
    """:func:`_size` of a value made by :func:`_plain` (quicker: exact types only)."""
    kind = type(value)
    if kind is str:
        return len(value)
    if kind is dict:
        return 2 + sum(_plain_size(k) + _plain_size(v) + 2 for k, v in value.items())
    if kind is list or kind is tuple:
        return 2 + sum(_plain_size(v) + 2 for v in value)
    if kind is int:
        return value.bit_length() // 3 + 2
    return 24


def _chat(messages: Sequence[Any]) -> list[dict[Any, Any]]:
    """The messages as ``apply_chat_template`` passes them: plain dicts without the keys whose
    value is ``None``, the reasoning also under ``thinking`` and ``reasoning_content``."""
    chat = []
    for index, message in enumerate(messages):
        plain = _plain(message)
        if not isinstance(plain, dict):
            raise TemplateError(
                f"message {index + 1} is a {type(message).__name__}, not a mapping of role and "
                "content"
            )
        if None in plain.values():
            plain = {k: v for k, v in plain.items() if v is not None}
        if not _REASONING_KEYS.isdisjoint(plain):
            reasoning = next(plain[k] for k in _REASONING_FIELDS if k in plain)
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        chat.append(plain)
    return chat


def _objects(values: Sequence[Any] | None, what: str) -> list[Any] | None:
    """``tools`` or ``documents``: None, or a list of JSON objects."""
    if values is None:
        return None
    plain = _plain(list(values))
    if not all(isinstance(v, dict) for v in plain):
        raise TemplateError(f"{what} must be JSON objects (dicts)")
    return plain


def render_chat(
    template: str | None,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    special_tokens: Mapping[str, str] | None = None,
    seconds: float = RENDER_SECONDS,
    cancel: threading.Event | None = None,
    **extra: Any,
) -> str:
    """Render ``messages`` with a model's chat template (or :data:`FALLBACK_TEMPLATE`) as
    transformers' ``apply_chat_template(..., tokenize=False)`` does.

    ``special_tokens`` are the tokenizer's (``bos_token``, ``eos_token``, ``unk_token``, …:
    its ``special_tokens_map``); ``extra`` keyword arguments reach the template too and win
    over them (``bos_token="<s>"``, ``enable_thinking=False``, ``date_string=…``). ``tools``
    (JSON schemas) and ``documents`` (``{"title", "text"}`` objects) are passed through.
    The size limit is :data:`MAX_CHARS` plus twice all of that; ``cancel`` (the generation's
    cancel event) stops a render in progress.
    """
    try:
        chat = _chat(messages)
        tools_, documents_ = _objects(tools, "tools"), _objects(documents, "documents")
        extra_, special = _plain(extra), _plain(dict(special_tokens or {}))
    except RecursionError:
        raise TemplateError("the conversation is nested too deeply (or contains itself)") from None
    context = {
        **special,
        **extra_,
        "messages": chat,
        "tools": tools_,
        "documents": documents_,
        "add_generation_prompt": add_generation_prompt,
    }
    size = _plain_size((chat, tools_, documents_, extra_))
    return render_bounded(
        template or FALLBACK_TEMPLATE, context, seconds=seconds, max_chars=MAX_CHARS + 2 * size,
        cancel=cancel,
    )


def _short(exc: BaseException | str, limit: int = 160) -> str:
    from tui.terminal_text import clean_line

    return clean_line(" ".join(str(exc).split()), limit)
