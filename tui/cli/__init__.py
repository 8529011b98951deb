"""The ``modeldeck`` command: with no sub-command it starts the dashboard.

Each sub-command lives in a module of this package exposing ``register(subparsers)``; a
handler has the signature ``handler(args, ctx) -> int`` (exit code) and reports bad input by
raising :class:`tui.errors.ModelDeckError`, which :func:`main` prints as one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tui import __version__
from tui.cli.context import Context
from tui.errors import ModelDeckError

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``modeldeck`` console script."""
    parser = build_parser()
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
        return int(args.func(args, ctx) or 0)
    except ModelDeckError as exc:
        print(f"modeldeck: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("modeldeck: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        ctx.close()
