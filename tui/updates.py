"""Updates of models downloaded from the Hub: is there a newer commit, swap it in, roll back.

A Hub model follows a revision (``main``, a tag; a commit id pins it). :func:`check_updates`
asks the Hub which commit that revision points at now. An update is a download job
(``JobSpec.update_of``) that fetches only the files whose content changed into
``<root>/.modeldeck-update/<commit>/`` (``.part`` while they arrive); once every one of them is
verified, :func:`finish_update` swaps them in: each old file is hard-linked to
``<root>/.modeldeck-prev/<old commit>/<path>`` (kept, recorded with its identity), then the
new one is renamed over it, so at every moment the path holds either the old or the new file.
Unchanged files are not touched. The swaps are journalled in the inventory first, so an
interrupted update is finished by the next ``modeldeck update`` (:func:`resume_pending`).
:func:`rollback` swaps the kept files back the same way (the newer ones are kept in turn).
Only one previous commit is kept: the copies of an older one are deleted through
:func:`tui.inventory_ops.delete_recorded` (only files still as recorded).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.download.planner import KEPT_DIR, STAGE_DIR
from tui.download.verify import fsync_dir
from tui.errors import InvalidInputError
from tui.inventory_ops import delete_recorded, file_unchanged, remove_empty_dirs
from tui.layout import hub_root_of
from tui.registration import register_download
from tui.settings import Settings
from tui.store import Inventory, ModelRecord
from tui.store.history import HistoryStore, KeptFile

HUB_SOURCES = ("hf", "catalog")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(slots=True)
class UpdateCheck:
    """One Hub model against the Hub: ``current`` is None when the Hub could not say
    (``problem`` says why)."""

    model: ModelRecord
    repo: str
    tracked: str
    installed: str | None
    current: str | None = None
    problem: str | None = None

    @property
    def pinned(self) -> bool:
        """Follows a commit id: never outdated."""
        return bool(_COMMIT_RE.match(self.tracked.lower()))

    @property
    def outdated(self) -> bool:
        """The tracked revision points at another commit than the installed one."""
        return bool(self.current and self.installed and self.current != self.installed)

    @property
    def status(self) -> str:
        """``update available``, ``up to date``, ``pinned`` or the problem."""
        if self.problem:
            return self.problem
        if self.pinned:
            return "pinned"
        return "update available" if self.outdated else "up to date"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``outdated --json``)."""
        return {"id": self.model.id, "repo": self.repo, "tracked": self.tracked,
                "installed": self.installed, "current": self.current,
                "outdated": self.outdated, "status": self.status}


def model_root(settings: Settings, model: ModelRecord) -> Path | None:
    """``<models dir>/[<kind folder>/]<owner>/<repo>`` of a model ModelDeck downloaded from
    the Hub (every recorded file inside it), else None."""
    ref = model.source_ref or ""
    if model.source not in HUB_SOURCES or not _REPO_RE.match(ref) or ".." in ref:
        return None
    return hub_root_of(Path(settings.models_dir), ref, [f.path for f in model.files])


def hub_models(settings: Settings, inventory: Inventory) -> list[ModelRecord]:
    """Installed models downloaded from the Hub into the models dir, with a known commit."""
    return [m for m in inventory.list_models(status="installed")
            if m.revision and model_root(settings, m) is not None]


def tracked_revision(model: ModelRecord, history: HistoryStore, catalog: Any = None) -> str:
    """The branch, tag or commit ``model`` follows: as recorded at download, else its
    catalog entry's revision, else ``main``."""
    row = history.get(model.id)
    if row is not None and row.tracked:
        return row.tracked
    entry = catalog.get(model.catalog_id) if catalog is not None and model.catalog_id else None
    return getattr(entry, "revision", None) or "main"


def check_updates(settings: Settings, inventory: Inventory, hub: Any, catalog: Any = None,
                  models: list[ModelRecord] | None = None) -> list[UpdateCheck]:
    """Ask the Hub which commit each Hub model's revision points at (one call per repo and
    revision) and remember the answer (the dashboard's marker reads it).

    A repo the Hub no longer shows is reported on its row; not reaching the Hub raises the
    one-line :class:`~tui.download.errors.DownloadError`.
    """
    from tui.download.errors import GatedRepoError, RemoteNotFoundError

    history = HistoryStore(inventory.db)
    seen: dict[tuple[str, str], str | Exception] = {}
    out = []
    for model in hub_models(settings, inventory) if models is None else models:
        check = UpdateCheck(model=model, repo=str(model.source_ref),
                            tracked=tracked_revision(model, history, catalog),
                            installed=model.revision)
        if check.pinned:
            check.current = check.tracked.lower()
        else:
            key = (check.repo, check.tracked)
            if key not in seen:
                try:
                    seen[key] = hub.current_commit(check.repo, check.tracked)
                except (RemoteNotFoundError, GatedRepoError) as exc:
                    seen[key] = exc
            answer = seen[key]
            if isinstance(answer, Exception):
                check.problem = answer.message
            else:
                check.current = answer
                history.set_hub_commit(model.id, answer)
        out.append(check)
    return out


# -- swapping files ------------------------------------------------------------------------


def free_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``… : a folder name not taken yet."""
    candidate, n = base, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def make_dirs(inventory: Inventory, root: Path, folders: set[Path]) -> None:
    """Create ``folders`` (inside ``root``) and record the ones created as ModelDeck's."""
    created = []
    for folder in sorted(folders, key=lambda p: len(p.parts)):
        chain = [p for p in [folder, *folder.parents] if p.is_relative_to(root) and p != root]
        for p in reversed(chain):
            try:
                os.mkdir(p)
            except FileExistsError:
                continue
            st = os.lstat(p)
            created.append((str(p), st.st_dev, st.st_ino))
    if created:
        inventory.add_owned_dirs(created)


def finish_update(settings: Settings, inventory: Inventory, model_id: str, plan: Any,
                  files: list[tuple[Path, int, str | None]], verified: dict[Path, str]
                  ) -> list[ModelRecord]:
    """Swap an update job's verified staged ``files`` (path, size, sha256) into ``model_id``
    and record the new commit, keeping the replaced files for :func:`rollback`."""
    model = inventory.require_model(model_id)
    root = Path(plan.root)
    stage = root / STAGE_DIR / str(plan.revision)[:12]
    kept_dir = free_dir(root / KEPT_DIR / (model.revision or "unknown")[:12])
    swaps = []
    for path, size, sha in files:
        rel = Path(path).relative_to(stage)
        swaps.append({"final": str(root / rel), "staged": str(path), "kept": str(kept_dir / rel),
                      "size": size, "sha256": sha, "verified": verified.get(Path(path))})
    pending = {"commit": plan.revision, "swaps": swaps,
               "cleanup": sorted({str(p) for s in swaps
                                  for p in Path(s["staged"]).parents
                                  if p.is_relative_to(root / STAGE_DIR)})}
    return _run_swaps(settings, inventory, model, root, pending)


def rollback(settings: Settings, inventory: Inventory, model_id: str) -> tuple[str, int]:
    """Swap the kept files of the previous commit back in; returns (that commit, files
    swapped). The files it replaces are kept in turn (a second rollback goes forward)."""
    resume_pending(settings, inventory, model_id)
    model = inventory.require_model(model_id)
    root = model_root(settings, model)
    history = HistoryStore(inventory.db).get(model_id)
    if root is None or history is None or not history.previous_commit \
            or not history.previous_files:
        raise InvalidInputError(
            f"{model_id} has no previous commit to roll back to",
            hint="only a model updated with `modeldeck update` keeps one")
    recorded = {f.path: f for f in model.files}
    for kf in history.previous_files:
        if not file_unchanged(kf.as_model_file()):
            raise InvalidInputError(
                f"the kept copy {kf.kept} of {model_id} is gone or changed; cannot roll back",
                hint="nothing was changed")
        if kf.path not in recorded:
            raise InvalidInputError(f"{model_id} no longer has {kf.path}; cannot roll back")
    kept_dir = free_dir(root / KEPT_DIR / (model.revision or "unknown")[:12])
    swaps = [{"final": kf.path, "staged": kf.kept,
              "kept": str(kept_dir / Path(kf.path).relative_to(root)), "size": kf.size,
              "sha256": kf.sha256, "verified": kf.verified} for kf in history.previous_files]
    pending = {"commit": history.previous_commit, "swaps": swaps,
               "cleanup": sorted({str(p) for kf in history.previous_files
                                  for p in Path(kf.kept).parents
                                  if p.is_relative_to(root / KEPT_DIR)})}
    _run_swaps(settings, inventory, model, root, pending)
    return history.previous_commit, len(swaps)


def resume_pending(settings: Settings, inventory: Inventory, model_id: str) -> bool:
    """Finish an update or rollback of ``model_id`` that was interrupted mid-swap; True if
    there was one."""
    history = HistoryStore(inventory.db).get(model_id)
    if history is None or history.pending is None:
        return False
    model = inventory.require_model(model_id)
    root = model_root(settings, model)
    if root is None or not _valid_pending(history.pending, root):
        raise InvalidInputError(
            f"the unfinished update of {model_id} recorded in the inventory is damaged",
            hint=f"check its files, then `modeldeck rm {model_id}` and pull it again")
    _complete(settings, inventory, model, root, history.pending)
    return True


def _run_swaps(settings: Settings, inventory: Inventory, model: ModelRecord, root: Path,
               pending: dict[str, Any]) -> list[ModelRecord]:
    """Check every file first (nothing is swapped if one is not as recorded), journal the
    swaps, then carry them out and record the result."""
    recorded = {f.path: f for f in model.files}
    for s in pending["swaps"]:
        rec = recorded.get(s["final"])
        if os.path.lexists(s["final"]) and (rec is None or not file_unchanged(rec)):
            raise InvalidInputError(
                f"{s['final']} changed since ModelDeck recorded it; {model.id} was not changed",
                hint="move it away or `modeldeck rm` the model, then pull again")
        st = _lstat(s["staged"])
        if st is None or not stat.S_ISREG(st.st_mode):
            raise InvalidInputError(f"{s['staged']} is gone or not a file; {model.id} was not "
                                    "changed")
    make_dirs(inventory, root, {Path(s["kept"]).parent for s in pending["swaps"]})
    HistoryStore(inventory.db).set_pending(model.id, pending)
    return _complete(settings, inventory, model, root, pending)


def _complete(settings: Settings, inventory: Inventory, model: ModelRecord, root: Path,
              pending: dict[str, Any]) -> list[ModelRecord]:
    swaps = pending["swaps"]
    for s in swaps:  # idempotent: a swap done before an interruption is skipped
        final, staged, kept = Path(s["final"]), Path(s["staged"]), Path(s["kept"])
        st = _lstat(staged)
        if st is None:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInputError(f"{staged} is not a file; the update of {model.id} stops")
        if os.path.lexists(final) and not os.path.lexists(kept):
            try:
                os.link(final, kept)  # the old file stays at ``final`` until the rename
            except OSError:
                os.rename(final, kept)
        os.replace(staged, final)
    for folder in {Path(s["final"]).parent for s in swaps} | {Path(s["kept"]).parent
                                                             for s in swaps}:
        fsync_dir(folder)
    history = HistoryStore(inventory.db)
    before = history.get(model.id)
    old_kept = before.previous_files if before else []
    recorded = {f.path: f for f in model.files}
    kept = []
    for s in swaps:
        rec = recorded.get(s["final"])
        st = _lstat(s["kept"])
        if rec is None or st is None or not stat.S_ISREG(st.st_mode):
            continue
        kept.append(KeptFile(path=s["final"], kept=s["kept"], size=rec.size, sha256=rec.sha256,
                             dev=st.st_dev, ino=st.st_ino, mtime_ns=st.st_mtime_ns,
                             verified=rec.verified))
    new = {s["final"]: s for s in swaps}
    files = [(Path(f.path), *((new[f.path]["size"], new[f.path]["sha256"]) if f.path in new
                              else (f.size, f.sha256))) for f in model.files]
    verified = {Path(f.path): v for f in model.files
                if (v := (new[f.path]["verified"] if f.path in new else f.verified))}
    with inventory.db.write():
        records = register_download(
            inventory, model_root=root, files=files, source=model.source,
            source_ref=str(model.source_ref), revision=pending["commit"],
            catalog_id=model.catalog_id, name=model.name, verified=verified)
        history.set_previous(model.id, model.revision, kept)
    staged = {s["staged"] for s in swaps}
    delete_recorded(settings, inventory,
                    [f.as_model_file() for f in old_kept if f.kept not in staged])
    remove_empty_dirs(inventory, {Path(p) for p in pending.get("cleanup", [])})
    return records


def _lstat(path: str | Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _valid_pending(pending: dict[str, Any], root: Path) -> bool:
    """A journal read back from the inventory: every path inside the model's folder, the
    kept and staged copies inside ModelDeck's own sub-folders, every field of its type."""
    swaps, commit = pending.get("swaps"), pending.get("commit")
    if not isinstance(commit, str) or not _COMMIT_RE.match(commit) or not isinstance(swaps, list):
        return False
    own = (root / STAGE_DIR, root / KEPT_DIR)
    for s in swaps:
        if not isinstance(s, dict) or not all(isinstance(s.get(k), str)
                                              for k in ("final", "staged", "kept")):
            return False
        final, staged, kept = (Path(os.path.normpath(s[k])) for k in ("final", "staged", "kept"))
        if any(str(p) != s[k] for p, k in ((final, "final"), (staged, "staged"),
                                           (kept, "kept"))):
            return False
        if not (final.is_relative_to(root) and not final.is_relative_to(own[0])
                and not final.is_relative_to(own[1])):
            return False
        if not any(staged.is_relative_to(o) for o in own) or not kept.is_relative_to(own[1]):
            return False
        size, sha = s.get("size"), s.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return False
        if sha is not None and not (isinstance(sha, str) and _SHA256_RE.match(sha)):
            return False
    cleanup = pending.get("cleanup", [])
    return isinstance(cleanup, list) and all(
        isinstance(c, str) and any(Path(c).is_relative_to(o) for o in own) for c in cleanup)
