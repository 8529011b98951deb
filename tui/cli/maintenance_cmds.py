"""``modeldeck prune``: tidying up what downloads left behind."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tui import formatting as fmt
from tui.errors import InvalidInputError
from tui.terminal_text import clean_line


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``prune``."""
    p = sub.add_parser(
        "prune", help="remove leftovers: orphan partials and locks, failed jobs, unused entries",
        description="List (and after asking, remove) partial downloads and lock files whose "
        "job is gone, failed jobs with their partials, and custom catalog entries nothing "
        "uses. Only files ModelDeck's downloads name that way, never a folder tree.")
    p.add_argument("--dry-run", action="store_true", help="only list what would go")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prune)


# -- prune ---------------------------------------------------------------------------------


def cmd_prune(args: argparse.Namespace, ctx: Any) -> int:
    """``modeldeck prune``: list each item and its bytes, ask, remove through safe deletes."""
    from tui.maintenance import plan_prune, prune

    services = ctx.services
    items = plan_prune(services)
    total = sum(i.size for i in items)
    if args.json and (args.dry_run or not items):
        ctx.print_json({"items": [_item(i) for i in items], "bytes": total, "removed": False})
        return 0
    if not items:
        print("nothing to prune")
        return 0
    if not args.json:
        for i in items:
            print(clean_line(f"{i.kind:<12} {_bytes(i.size):>10}  {i.what}"))
        print(f"{len(items)} item{'s' if len(items) != 1 else ''}, {fmt.size(total)}")
    if args.dry_run:
        print("dry run: nothing removed")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidInputError("refusing to prune without confirmation", hint="pass -y")
        if input("Remove? [y/N] ").strip().lower() not in ("y", "yes"):
            print("Nothing removed.")
            return 1
    items = prune(services, items)
    done = [i for i in items if i.done]
    if args.json:
        ctx.print_json({"items": [_item(i) for i in items], "bytes": sum(i.size for i in done),
                        "removed": True})
        return 0
    for i in items:
        if not i.done:
            print(clean_line(f"kept {i.kind} {i.what}: {i.note}"))
    print(f"removed {len(done)} item{'s' if len(done) != 1 else ''}, freed "
          f"{fmt.size(sum(i.size for i in done))}")
    return 0


def _item(i: Any) -> dict[str, Any]:
    return {"kind": i.kind, "what": i.what, "bytes": i.size, "removed": i.done,
            "note": i.note or None}


def _bytes(n: int) -> str:
    return fmt.size(n) if n else "-"
