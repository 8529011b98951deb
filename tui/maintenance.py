"""``modeldeck prune``: what ModelDeck left behind that nothing uses any more.

* partial downloads (``<dest>.part``) under the models dir whose job is gone;
* lock files (``<dest>.lock`` under the models dir, ``<state dir>/jobs/<id>.lock``) that
  nobody holds and whose job is gone or ended;
* failed jobs (their record and their partials);
* custom catalog entries that no model and no job refers to.

Only names ModelDeck's downloads make are considered: a file at the top of the models dir,
inside a hidden folder (other than ModelDeck's own update folders) or inside a Hugging Face
cache folder (``models--…``) is never touched, nor a symlink, folder or device. Each item is
checked again just before it goes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.download.partials import (
    LOCK,
    PART,
    allocated,
    is_lock_file,
    partial_kept_for,
    remove_lock_file,
    unlink_unlocked,
)
from tui.download.planner import KEPT_DIR, STAGE_DIR
from tui.download.progress import TERMINAL_STATES

_OWN_HIDDEN = (STAGE_DIR, KEPT_DIR)


@dataclass(slots=True)
class PruneItem:
    """One thing ``prune`` removes: ``kind`` is ``partial``, ``lock``, ``failed job`` or
    ``custom entry``; ``what`` the path or id shown; ``size`` the bytes it frees."""

    kind: str
    what: str
    size: int = 0
    path: Path | None = None
    seen: os.stat_result | None = None
    key: str | None = None  # job or entry id
    done: bool = False
    note: str = ""


def plan_prune(services: Any) -> list[PruneItem]:
    """Everything :func:`prune` would remove now; changes nothing."""
    settings = services.settings
    downloads = services.downloads
    jobs = downloads.jobs
    items: list[PruneItem] = []
    failed = [j for j in jobs.list() if j.state == "failed"]
    planned = jobs.dests()
    for job in failed:
        size = 0
        for f in job.files:
            part = Path(f.dest + PART)
            st = _lstat(part)
            if f.state != "installed" and st is not None and stat.S_ISREG(st.st_mode) \
                    and not partial_kept_for(f.dest, jobs=jobs, inventory=services.inventory,
                                             exclude=job.id, root=Path(settings.models_dir)):
                size += allocated(st)
        items.append(PruneItem("failed job", f"{job.id} {job.name}", size, key=job.id))
    for path, st in _walk(Path(settings.models_dir)):
        if path.name.endswith(PART):
            dest = str(path)[: -len(PART)]
            if dest in planned or services.inventory.find_by_path(str(path)) is not None:
                continue
            if _held(Path(dest + LOCK)):
                continue
            items.append(PruneItem("partial", str(path), allocated(st), path=path, seen=st))
        elif path.name.endswith(LOCK) and is_lock_file(path, st) and not _held(path):
            items.append(PruneItem("lock", str(path), 0, path=path, seen=st))
    ended = {j.id for j in jobs.list() if j.state in TERMINAL_STATES}
    known = {j.id for j in jobs.list()}
    job_locks = Path(settings.state_dir) / "jobs"
    for path, st in _entries(job_locks):
        job_id = path.name[: -len(LOCK)]
        if path.name.endswith(LOCK) and (job_id not in known or job_id in ended) \
                and is_lock_file(path, st) and not _held(path):
            items.append(PruneItem("lock", str(path), 0, path=path, seen=st))
    used = {m.catalog_id for m in services.inventory.list_models() if m.catalog_id}
    used |= {j.spec.catalog_id for j in jobs.list() if j.spec.catalog_id}
    for entry in services.catalog.custom():
        if entry.id not in used:
            items.append(PruneItem("custom entry", f"{entry.id} ({entry.source})", key=entry.id))
    return items


def prune(services: Any, items: list[PruneItem]) -> list[PruneItem]:
    """Remove ``items`` (from :func:`plan_prune`), each checked again; ``done`` / ``size``
    say what really went, ``note`` why an item stayed."""
    for item in items:
        if item.kind == "failed job":
            try:
                job = services.downloads.jobs.require(str(item.key))
            except Exception:
                item.note = "gone already"
                continue
            if job.state != "failed":
                item.note = f"now {job.state}; kept"
                continue
            item.size = services.downloads.forget(job.id)
            item.done = True
        elif item.kind == "partial":
            assert item.path is not None and item.seen is not None
            dest = str(item.path)[: -len(PART)]
            if dest in services.downloads.jobs.dests():
                item.note = "a job uses it now; kept"
                continue
            freed = unlink_unlocked(item.path, Path(dest), item.seen)
            item.done = freed > 0 or not os.path.lexists(item.path)
            item.size = freed
            item.note = "" if item.done else "in use or changed; kept"
        elif item.kind == "lock":
            assert item.path is not None and item.seen is not None
            item.done = remove_lock_file(item.path, item.seen)
            item.note = "" if item.done else "in use or changed; kept"
        elif item.kind == "custom entry":
            still_unused = all(m.catalog_id != item.key
                               for m in services.inventory.list_models())
            if still_unused and services.inventory.remove_custom(str(item.key)):
                item.done = True
            else:
                item.note = "in use now; kept"
    return items


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _entries(folder: Path) -> list[tuple[Path, os.stat_result]]:
    """Regular files directly in ``folder``."""
    out = []
    try:
        with os.scandir(folder) as it:
            for e in it:
                st = _lstat(Path(e.path))
                if st is not None and stat.S_ISREG(st.st_mode):
                    out.append((Path(e.path), st))
    except OSError:
        pass
    return out


def _walk(root: Path) -> list[tuple[Path, os.stat_result]]:
    """Regular files at least one folder deep under ``root`` (where downloads go), never
    following symlinks, skipping hidden folders other than ModelDeck's own and Hugging Face
    cache folders."""
    out = []
    for dirpath, dirs, files in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirs[:] = [d for d in dirs if (not d.startswith(".") or d in _OWN_HIDDEN)
                   and not d.startswith(("models--", "datasets--", "spaces--"))]
        if here == root:
            continue
        for name in files:
            if not name.endswith((PART, LOCK)):
                continue
            st = _lstat(here / name)
            if st is not None and stat.S_ISREG(st.st_mode):
                out.append((here / name, st))
    return out


def _held(lock: Path) -> bool:
    """Someone holds the flock on ``lock`` (a download runs); False if there is no file."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)
    return False
