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
import errno
import importlib
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from tui import __version__
from tui.cli.context import Context
from tui.download.errors import redact
from tui.errors import ModelDeckError
from tui.store.health import store_error
from tui.terminal_text import CleanWriter, clean_line

# Modules that add sub-commands; a missing optional one is skipped.
COMMAND_MODULES = (
    "tui.cli.inventory_cmds",
    "tui.cli.download_cmds",
    "tui.cli.runtime_cmds",
    "tui.cli.maintenance_cmds",
    "tui.cli.serve_cmds",
    "tui.cli.remote_cmds",
    "tui.cli.storage_cmds",
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
    if args.models_dir is not None:
        overrides["models_dir"] = args.models_dir
    if args.state_dir is not None:
        overrides["state_dir"] = args.state_dir
    ctx = Context(overrides=overrides)
    try:
        if args.command is None:
            from tui.cli.launch import launch_app

            return launch_app(ctx)
        with _clean_output():
            return int(args.func(args, ctx) or 0)
    except ModelDeckError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print("modeldeck: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except sqlite3.Error as exc:  # a query outside Database.read/write: still one line
        path = ctx.settings.db_path if "settings" in ctx.__dict__ else Path("modeldeck.db")
        return _fail(str(store_error(exc, path)))
    except OSError as exc:
        return _fail(_os_error(exc))
    except Exception as exc:  # the last resort: one line, the traceback only when asked
        if os.environ.get("MODELDECK_DEBUG"):
            raise
        text = redact(" ".join(f"{type(exc).__name__}: {exc}".split()))[:300]
        return _fail(f"internal error: {text} (run with MODELDECK_DEBUG=1 for the traceback)",
                     prefix="modeldeck")
    finally:
        with contextlib.suppress(Exception):
            ctx.close()


def _fail(message: str, code: int = 1, *, prefix: str = "modeldeck: error") -> int:
    print(f"{prefix}: {clean_line(message)}", file=sys.stderr)
    return code


def _os_error(exc: OSError) -> str:
    """One line for a file-system error: what, where, and what to do."""
    where = f" {exc.filename}" if exc.filename else ""
    what = exc.strerror or str(exc)
    if exc.errno == errno.EROFS:
        hint = ("that file system is read-only; point MODELDECK_MODELS_DIR / "
                "MODELDECK_STATE_DIR at a writable one")
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = "check the permissions, or point ModelDeck at folders you own"
    elif exc.errno == errno.ENOSPC:
        hint = "free some space"
    else:
        hint = "check the path and try again"
    return " ".join(f"{what}:{where} ({hint})".split())
