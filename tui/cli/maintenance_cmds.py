"""``modeldeck prune``, ``outdated`` and ``update``: tidying up and keeping Hub models current."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tui import formatting as fmt
from tui.errors import InvalidInputError
from tui.terminal_text import clean_line


def register(sub: Any) -> None:
    """Add ``prune``, ``outdated`` and ``update``."""
    p = sub.add_parser(
        "prune", help="remove leftovers: orphan partials and locks, failed jobs, unused entries",
        description="List (and after asking, remove) partial downloads and lock files whose "
        "job is gone, failed jobs with their partials, and custom catalog entries nothing "
        "uses. Only files ModelDeck's downloads name that way, never a folder tree.")
    p.add_argument("--dry-run", action="store_true", help="only list what would go")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "outdated", help="Hub models whose revision points at a newer commit",
        description="Compare each model downloaded from the Hub with the commit its revision "
        "(main, a tag) points at now.")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_outdated)

    p = sub.add_parser(
        "update", help="fetch the changed files of a Hub model's newer commit (or roll back)",
        description="Download only the files whose content changed, verify all of them, then "
        "swap them in; the replaced files are kept for `update --rollback`.")
    p.add_argument("model_id")
    p.add_argument("--rollback", action="store_true",
                   help="swap the previous commit's kept files back in")
    p.add_argument("--json", action="store_true", help="JSON output (progress events, result)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_update)


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


# -- outdated ------------------------------------------------------------------------------


def cmd_outdated(args: argparse.Namespace, ctx: Any) -> int:
    """``modeldeck outdated``: installed vs current commit of each Hub model."""
    from tui.updates import check_updates

    services = ctx.services
    checks = check_updates(services.settings, services.inventory, services.downloads.hub,
                           services.catalog)
    if args.json:
        ctx.print_json([c.to_dict() for c in checks])
        return 0
    if not checks:
        print("no models downloaded from the Hub")
        return 0
    rows = [[c.model.id, c.repo, c.tracked, _short(c.installed), _short(c.current), c.status]
            for c in checks]
    print(fmt.table(["ID", "REPO", "TRACKS", "INSTALLED", "HUB", "STATUS"], rows))
    outdated = [c for c in checks if c.outdated]
    if outdated:
        print(f"\n{len(outdated)} of {len(checks)} can be updated: "
              f"modeldeck update {clean_line(outdated[0].model.id)}")
    return 0


def _short(commit: str | None) -> str:
    return commit[:7] if commit else "-"


# -- update --------------------------------------------------------------------------------


def cmd_update(args: argparse.Namespace, ctx: Any) -> int:
    """``modeldeck update <id> [--rollback]``."""
    from tui.updates import model_root, resume_pending, rollback, tracked_revision

    services = ctx.services
    settings, inventory = services.settings, services.inventory
    model = inventory.require_model(args.model_id)
    shown = clean_line(model.id)
    if resume_pending(settings, inventory, model.id):
        print(f"finished the interrupted update of {shown}")
        model = inventory.require_model(model.id)
        for job in services.downloads.list_jobs():  # the job that stopped mid-swap
            if job.spec.update_of == model.id and job.state == "failed":
                services.downloads.forget(job.id)
    if args.rollback:
        before = model.revision
        commit, swapped = rollback(settings, inventory, model.id)
        if args.json:
            ctx.print_json({"id": model.id, "from": before, "to": commit, "swapped": swapped})
        else:
            print(f"rolled {shown} back from commit {_short(before)} to {_short(commit)} "
                  f"({swapped} file{'s' if swapped != 1 else ''} swapped; "
                  f"`modeldeck update --rollback {shown}` goes forward again)")
        return 0
    root = model_root(settings, model)
    if root is None or not model.revision:
        raise InvalidInputError(f"{model.id} was not downloaded from the Hub by ModelDeck; "
                                "nothing to update")
    from tui.store.history import HistoryStore

    tracked = tracked_revision(model, HistoryStore(inventory.db), services.catalog)
    downloads = services.downloads
    current = downloads.hub.current_commit(str(model.source_ref), tracked)
    if current == model.revision:
        if args.json:
            ctx.print_json({"id": model.id, "from": model.revision, "to": current,
                            "fetched": []})
        else:
            print(f"{shown} is up to date (commit {_short(current)} of {clean_line(tracked)})")
        return 0
    job_id = _update_job(downloads, model, root, tracked)
    from tui.cli.download_cmds import run_jobs

    code = run_jobs(ctx, [job_id], json_mode=args.json, quiet=args.quiet, report_done=False)
    if code != 0:
        return code
    job = downloads.get_job(job_id)
    after = inventory.require_model(model.id)
    fetched = [f.path for f in job.files]
    if args.json:
        ctx.print_json({"id": model.id, "from": model.revision, "to": after.revision,
                        "fetched": fetched})
    elif after.revision != model.revision:
        size = sum(f.size or 0 for f in job.files)
        kept = len(model.files) - len(fetched)
        print(f"updated {shown} from commit {_short(model.revision)} to "
              f"{_short(after.revision)}: {len(fetched)} file{'s' if len(fetched) != 1 else ''} "
              f"fetched ({fmt.size(size)}), {kept} unchanged; "
              f"`modeldeck update --rollback {shown}` goes back")
    downloads.forget(job_id)
    return 0


def _update_job(downloads: Any, model: Any, root: Path, tracked: str) -> str:
    """The job that updates ``model``: an unfinished one for it (resumed), else a new one."""
    from tui.download.sources import JobSpec

    spec = JobSpec(
        kind="hf", repo=model.source_ref, revision=tracked, catalog_id=model.catalog_id,
        files=sorted(Path(f.path).relative_to(root).as_posix() for f in model.files),
        name=f"update {model.id}", update_of=model.id,
    )
    for job in downloads.list_jobs():
        if job.spec.update_of == model.id and job.state not in ("done", "cancelled"):
            if job.state in ("paused", "failed"):
                downloads.resume(job.id)
            return job.id
    return downloads.enqueue(spec)
