"""The ``modeldeck`` command: with no sub-command it starts the dashboard.

Each sub-command lives in a module of this package exposing ``register(subparsers)``; a
handler has the signature ``handler(args, ctx) -> int`` (exit code) and reports bad input by
raising :class:`tui.errors.ModelDeckError`, which :func:`main` prints as one line on stderr.

While a sub-command runs, ``sys.stdout`` and ``sys.stderr`` pass through
:class:`tui.terminal_text.CleanWriter`: whatever a handler prints, no control character or
escape sequence from a file, a server or a model reaches the terminal raw (handlers also clean
single-line fields with :func:`tui.terminal_text.clean_line`, which escapes newlines too).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Iterator, Sequence

from tui import __version__
from tui.cli.context import Context
from tui.errors import ModelDeckError
from tui.terminal_text import CleanWriter, clean_line

# Modules that add sub-commands; a missing optional one is skipped.
COMMAND_MODULES = (
    "tui.cli.inventory_cmds",
    "tui.cli.download_cmds",
    "tui.cli.runtime_cmds",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="modeldeck",
        description="Terminal dashboard and CLI for AI models on GPU machines.",
    )
    parser.add_argument("--version", action="version", version=f"modeldeck {__version__}")
    parser.add_argument(
        "--models-dir", help="models directory (overrides MODELDECK_MODELS_DIR and config)"
    )
    parser.add_argument("--state-dir", help="state directory (inventory database, job state)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


@contextlib.contextmanager
def _clean_output() -> Iterator[None]:
    """``sys.stdout`` / ``sys.stderr`` through :class:`CleanWriter` (restored afterwards)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = CleanWriter(saved[0]), CleanWriter(saved[1])
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``modeldeck`` console script."""
    parser = build_parser()
    with _clean_output():  # argparse echoes arguments in its errors
        args = parser.parse_args(argv)
    overrides = {}
    if args.models_dir:
        overrides["models_dir"] = args.models_dir
    if args.state_dir:
        overrides["state_dir"] = args.state_dir
    ctx = Context(overrides=overrides)
    try:
        if args.command is None:
            from tui.cli.launch import launch_app

            return launch_app(ctx)
        with _clean_output():
            return int(args.func(args, ctx) or 0)
    except ModelDeckError as exc:
        print(f"modeldeck: error: {clean_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("modeldeck: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        ctx.close()
