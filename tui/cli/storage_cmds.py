"""``modeldeck organize``, ``pin`` / ``unpin`` and ``reclaim``: the models dir by kind, and
disk space freed by policy."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tui import formatting as fmt
from tui.errors import InvalidInputError
from tui.terminal_text import clean_line


def register(sub: Any) -> None:
    """Add ``organize``, ``pin``, ``unpin`` and ``reclaim``."""
    p = sub.add_parser(
        "organize", help="move installed models into their kind folder (llm/, lora/, …)",
        description="Propose moving each installed model ModelDeck recorded inside the models "
        "dir into <models dir>/<kind folder>/, then (after asking) rename its files there; "
        "never a loaded model or one being downloaded, never across volumes, never over an "
        "existing file.")
    p.add_argument("--dry-run", action="store_true", help="only list the moves")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_organize)

    for name, pinned in (("pin", True), ("unpin", False)):
        p = sub.add_parser(
            name, help="keep a model from `reclaim`" if pinned else "let `reclaim` propose "
            "a model again")
        p.add_argument("model_id")
        p.set_defaults(func=cmd_pin, pinned=pinned)

    p = sub.add_parser(
        "reclaim", help="free disk space: orphans, duplicates, least recently used models",
        description="Propose, until the target is met, partial downloads whose job is gone, "
        "duplicate copies (keeping the one used last) and the least recently used models "
        "(never a pinned or loaded one, or one being downloaded); list them with the bytes "
        "each really frees, ask, and delete them through the safe delete path.")
    p.add_argument("--free", required=True, metavar="SIZE", help="how much to free, e.g. 50G")
    p.add_argument("--dry-run", action="store_true", help="only list the proposal")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_reclaim)


def _confirm(question: str, what: str) -> bool:
    if not sys.stdin.isatty():
        raise InvalidInputError(f"refusing to {what} without confirmation", hint="pass -y")
    return input(question).strip().lower() in ("y", "yes")


# -- organize ------------------------------------------------------------------------------


def cmd_organize(args: argparse.Namespace, ctx: Any) -> int:
    """``modeldeck organize``: list the moves, ask, rename."""
    from tui.in_use import busy_ids, loaded_ids
    from tui.organize import finish_moves, organize, plan_organize

    services = ctx.services
    settings, inventory = services.settings, services.inventory
    for line in finish_moves(settings, inventory):
        print(f"modeldeck: {line}", file=sys.stderr)
    moves = plan_organize(settings, inventory, loaded=loaded_ids(services),
                          busy=busy_ids(services))
    todo = [m for m in moves if m.pairs]
    for m in moves:
        if not m.pairs:
            print(clean_line(f"stays  {m.model.id}: {m.note}"))
    for m in todo:
        print(clean_line(f"move   {m.model.id} ({m.model.kind}, {fmt.size(m.size)})"))
        for src, dst in m.pairs:
            print(clean_line(f"         {src} -> {dst}"))
        if m.left:
            print(clean_line(f"         leaves {len(m.left)} file(s) ModelDeck did not record "
                             f"where they are, e.g. {m.left[0]}"))
    if not todo:
        print("nothing to move: every model ModelDeck can move is in its kind folder")
        return 0
    print(f"{len(todo)} model{'s' if len(todo) != 1 else ''} to move "
          f"({sum(len(m.pairs) for m in todo)} files, renamed in place on this volume)")
    if args.dry_run:
        print("dry run: nothing moved")
        return 0
    if not args.yes and not _confirm("Move? [y/N] ", "move models"):
        print("Nothing moved.")
        return 1
    organize(settings, inventory, todo)
    failed = [m for m in todo if not m.done]
    for m in failed:
        print(clean_line(f"not moved: {m.model.id}: {m.note}"), file=sys.stderr)
    moved = len(todo) - len(failed)
    print(f"moved {moved} model{'s' if moved != 1 else ''}")
    return 1 if failed else 0


# -- pin / unpin ---------------------------------------------------------------------------


def cmd_pin(args: argparse.Namespace, ctx: Any) -> int:
    """``modeldeck pin <id>`` / ``unpin <id>``."""
    from tui.store.pins import set_pinned

    set_pinned(ctx.services.db, args.model_id, args.pinned)
    shown = clean_line(args.model_id)
    print(f"pinned {shown}: `reclaim` never proposes it" if args.pinned
          else f"unpinned {shown}")
    return 0


# -- reclaim -------------------------------------------------------------------------------


def cmd_reclaim(args: argparse.Namespace, ctx: Any) -> int:
    """``modeldeck reclaim --free SIZE``: list the proposal and its total, ask, delete."""
    from tui.reclaim import carry_out, describe, propose
    from tui.settings import parse_rate

    try:
        target = parse_rate(args.free)
    except ValueError as exc:
        raise InvalidInputError(f"--free: {exc}") from None
    if target <= 0:
        raise InvalidInputError("--free must be more than 0 (e.g. --free 50G)")
    services = ctx.services
    proposal = propose(services, target)
    for line in describe(proposal):
        print(clean_line(line))
    if not proposal.candidates:
        print(f"nothing to reclaim: no orphan, duplicate or unpinned unused model frees space "
              f"(asked {fmt.size(target)})")
        return 1
    n = len(proposal.candidates)
    print(f"{n} item{'s' if n != 1 else ''}, {fmt.size(proposal.total)} of "
          f"{fmt.size(target)} asked")
    if not proposal.met:
        print(f"only {fmt.size(proposal.available)} can be freed (pinned, loaded and "
              "downloading models are kept); the list above frees that much")
    if args.dry_run:
        print("dry run: nothing deleted")
        return 0
    if not args.yes and not _confirm("Delete these? [y/N] ", "delete models"):
        print("Nothing deleted.")
        return 1
    done = carry_out(services, proposal)
    for c in done:
        if c.note:
            print(clean_line(f"{'kept' if not c.done else 'note'} {c.what}: {c.note}"))
    freed = sum(c.size for c in done if c.done)
    went = sum(1 for c in done if c.done)
    print(f"deleted {went} item{'s' if went != 1 else ''}, freed {fmt.size(freed)}")
    return 0
