"""Operations on installed models that touch both disk and database: remove, reconcile.

Removal deletes exactly the files recorded for a model, never a folder tree. Each recorded
path must still be the regular file ModelDeck recorded (same size, and same inode or mtime
where those were recorded) inside a managed folder; anything else there now (a folder, a
FIFO, a device, a symlink to elsewhere, another file) is refused with a reason and left alone.
A folder goes only if ModelDeck created it and it is empty afterwards. In the Hugging Face
cache a model's snapshot links go with the blobs nothing else links to, and a revision the
model fills completely goes through huggingface_hub's own ``delete_revisions`` (snapshot,
refs, blobs), so ``scan_cache_dir()`` finds the cache consistent afterwards.

:func:`plan_removal` only looks; the CLI and the dashboard show its :func:`describe` lines
before asking. Bytes count as freed only when the data really goes (a file with other hard
links, or a blob another snapshot still uses, is not freed).

Deletion is crash-safe: the row is first marked ``deleting`` (committed), then the files are
removed, then the row. A crash in between leaves a ``deleting`` row that :func:`reconcile`
finishes at the next start under the same rules. Refused paths do not keep the row: the files
that may go go, the row goes, and each refused path is reported on its own line.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from tui import formatting as fmt
from tui.discovery import hf_cache_dir, roots_for
from tui.metadata.files import is_regular_file
from tui.settings import Settings
from tui.store import Inventory, ModelFile, ModelRecord
from tui.store.history import HistoryStore
from tui.terminal_text import clean_line

_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symlink",
}


@dataclass(slots=True)
class PlannedFile:
    """One recorded file of a model and what removing the model does to it."""

    path: Path
    action: str  # "delete", "missing" (already gone, nothing to do) or "refuse"
    size: int = 0  # bytes it holds now (a Hugging Face cache link: its blob's)
    freed: bool = False  # deleting it really frees ``size`` bytes
    note: str = ""  # why it is refused, or why its bytes are not freed
    ident: tuple[int, int, int] | None = None  # lstat (dev, ino, type) the plan saw
    nlink: int = 1
    real: Path | None = None  # cache link: its path with the cache folder resolved
    blob: Path | None = None  # cache link: the repo's blob entry it points at
    blob_goes: bool = False  # cache link: the blob is deleted too (nothing else uses it)


@dataclass(slots=True)
class RemovalPlan:
    """What removing a model deletes, keeps and frees (after :func:`remove_model`: did)."""

    model: ModelRecord
    files: list[PlannedFile] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # ModelDeck's, empty afterwards
    revisions: list[tuple[Path, str]] = field(default_factory=list)  # (cached repo, commit)
    notes: list[str] = field(default_factory=list)
    forget_only: bool = False  # files lie outside the managed folders: only the row goes

    @property
    def to_delete(self) -> list[PlannedFile]:
        """Files that are (or were) deleted."""
        return [f for f in self.files if f.action == "delete"]

    @property
    def refused(self) -> list[PlannedFile]:
        """Recorded paths left alone, each with its reason in ``note``."""
        return [f for f in self.files if f.action == "refuse"]

    @property
    def freed_bytes(self) -> int:
        """Bytes really freed: files whose data goes with them."""
        return sum(f.size for f in self.to_delete if f.freed)


def plan_removal(settings: Settings, inventory: Inventory, model_id: str) -> RemovalPlan:
    """Work out what removing ``model_id`` deletes, keeps and frees; changes nothing."""
    return _plan(settings, inventory, inventory.require_model(model_id))


def remove_model(settings: Settings, inventory: Inventory, model_id: str) -> RemovalPlan:
    """Delete a model's files and its row. Returns the plan as carried out."""
    plan = plan_removal(settings, inventory, model_id)
    inventory.set_status(model_id, "deleting")
    _carry_out(plan, inventory)
    inventory.delete_model(model_id)
    return plan


def describe(plan: RemovalPlan) -> list[str]:
    """One line per file, refused path, folder and cache entry the removal touches."""
    if plan.forget_only:
        return [f"{shown(plan.model.path)}: outside the managed folders; its files stay"]
    lines = []
    for f in plan.files:
        if f.action == "delete":
            why = f"  (not freed: {f.note})" if f.note else ""
            lines.append(f"delete {fmt.size(f.size):>10}  {shown(f.path)}{why}")
        elif f.action == "missing":
            lines.append(f"gone   {'-':>10}  {shown(f.path)}  (already gone)")
    lines += [f"rmdir  {'-':>10}  {shown(d)}  (ModelDeck's folder, empty then)"
              for d in plan.folders]
    lines += plan.notes
    lines += [refusal(f) for f in plan.refused]
    return lines


def summary(plan: RemovalPlan) -> str:
    """The plan in one sentence."""
    if plan.forget_only:
        return f"Forget {plan.model.id}: its files are outside the managed folders and stay."
    n = len(plan.to_delete)
    text = f"Delete {plan.model.id}: {n} file{'s' if n != 1 else ''}, frees " \
           f"{fmt.size(plan.freed_bytes)}"
    if plan.refused:
        text += f"; {len(plan.refused)} path{'s' if len(plan.refused) != 1 else ''} kept"
    return text + "."


def refusal(f: PlannedFile) -> str:
    """The line that says why a recorded path is not deleted."""
    return f"not deleted: {shown(f.path)}: {f.note}"


def shown(path: Path | str) -> str:
    """A path safe to print on one line (control characters escaped)."""
    return clean_line(str(path))


# -- planning ------------------------------------------------------------------------------


def _plan(settings: Settings, inventory: Inventory, model: ModelRecord) -> RemovalPlan:
    plan = RemovalPlan(model=model)
    roots = [_resolve(r.path) for r in roots_for(settings)]
    main = Path(model.path)
    if not any(_real(main).is_relative_to(r) for r in roots):
        plan.forget_only = True
        return plan
    cache = _resolve(hf_cache_dir())
    history = HistoryStore(inventory.db).get(model.id)
    kept = [f.as_model_file() for f in history.previous_files] if history else []
    plan.files = [_check(f, roots, cache) for f in [*model.files, *kept]]
    shared = inventory.file_owners([f.path for f in model.files], exclude=model.id)
    for f in plan.files:  # a file two models record (a shared projector) stays for the other
        if f.action == "delete" and str(f.path) in shared:
            f.action, f.freed = "refuse", False
            f.note = f"also a file of {shown(shared[str(f.path)])}, which needs it; not deleted"
    _account_hard_links(plan)
    _account_cache(plan)
    plan.folders = _empty_folders(plan, inventory.owned_dirs(), roots)
    return plan


def file_unchanged(rec: ModelFile) -> bool:
    """True if ``rec.path`` is still the regular file ModelDeck recorded (size and identity,
    see :func:`_changed`); never follows a symlink."""
    try:
        st = os.lstat(rec.path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and _changed(rec, st) is None


def delete_recorded(settings: Settings, inventory: Inventory, files: list[ModelFile]
                    ) -> list[PlannedFile]:
    """Delete recorded files that belong to no model row (an update's kept copies) under the
    same rules as :func:`remove_model`: each must still be the file recorded, inside a managed
    folder; folders ModelDeck created go when empty. Returns what happened to each."""
    roots = [_resolve(r.path) for r in roots_for(settings)]
    cache = _resolve(hf_cache_dir())
    planned = [_check(f, roots, cache) for f in files]
    _account_hard_links(RemovalPlan(model=ModelRecord("", "", "", "", ""), files=planned))
    for f in planned:
        if f.action == "delete":
            _unlink_checked(f)
    remove_empty_dirs(inventory, {p for f in planned if f.action == "delete"
                                  for p in f.path.parents}, roots)
    return planned


def remove_empty_dirs(inventory: Inventory, folders: set[Path] | list[Path],
                      roots: list[Path] | None = None) -> list[Path]:
    """Remove those of ``folders`` that ModelDeck created (same folder still) and that are
    empty, deepest first; never a managed root. Returns the folders removed."""
    owned = inventory.owned_dirs()
    roots = roots or []
    removed = []
    for folder in sorted(folders, key=lambda p: -len(p.parts)):
        if str(folder) not in owned or _resolve(folder) in roots:
            continue
        try:
            st = os.lstat(folder)
            if stat.S_ISDIR(st.st_mode) and st.st_ino == owned[str(folder)][1]:
                os.rmdir(folder)  # only ever removes an empty folder
                removed.append(folder)
        except OSError:
            continue
    if removed:
        inventory.forget_owned_dirs([str(p) for p in removed])
    return removed


def _real(path: Path) -> Path:
    """``path`` with its folder resolved (through symlinks) but not its last part."""
    return _resolve(path.parent) / path.name


def _resolve(path: Path) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(Path(path).expanduser()))


def _refuse(path: Path, why: str) -> PlannedFile:
    return PlannedFile(path, "refuse", note=why)


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _check(rec: ModelFile, roots: list[Path], cache: Path) -> PlannedFile:
    """Is the recorded path still the file ModelDeck recorded, and may it go?"""
    path = Path(rec.path)
    if not path.is_absolute() or ".." in path.parts or path.name in ("", ".", ".."):
        return _refuse(path, "not a plain absolute path; not deleted")
    where = _real(path)  # its real place, through symlinked folders
    if where in roots:
        return _refuse(path, "is a managed folder itself; not deleted")
    if not any(where.is_relative_to(r) for r in roots):
        return _refuse(path, "outside the folders ModelDeck manages; not deleted")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return PlannedFile(path, "missing")
    except OSError as exc:
        return _refuse(path, f"cannot be checked ({exc.strerror}); not deleted")
    repo = _cached_repo(where, cache)
    snapshot = _snapshot_of(where, cache)
    if repo is not None and snapshot is None:
        return _refuse(path, "inside a Hugging Face cache repo but not in a snapshot (its blobs "
                             "go only with their snapshot links); not deleted")
    if stat.S_ISLNK(st.st_mode):
        if snapshot is None:
            return _refuse(path, f"is now a symlink (to {shown(_readlink(path))}); not deleted")
        return _check_cache_link(path, where, rec, st, snapshot[0])
    if not stat.S_ISREG(st.st_mode):
        return _refuse(path, f"is now {_kind(st.st_mode)}, not a file; not deleted")
    changed = _changed(rec, st)
    if changed:
        return _refuse(path, f"changed since ModelDeck recorded it ({changed}); not deleted")
    return PlannedFile(path, "delete", size=st.st_size, ident=_ident(st), nlink=st.st_nlink)


def _check_cache_link(
    path: Path, where: Path, rec: ModelFile, st: os.stat_result, repo: Path
) -> PlannedFile:
    """A snapshot entry: a symlink to ``<repo>/blobs/<hash>``, nothing else."""
    target = _readlink(path)
    blob = Path(os.path.normpath(where.parent / target))
    if blob.parent != repo / "blobs":
        return _refuse(path, f"is a symlink to {shown(target)}, outside its cached repo's "
                             "blobs; not deleted")
    try:
        bst = os.lstat(blob)
    except FileNotFoundError:  # a broken link: removing it repairs the cache
        return PlannedFile(path, "delete", ident=_ident(st), real=where, blob=blob,
                           note="blob already gone")
    except OSError as exc:
        return _refuse(path, f"its blob cannot be checked ({exc.strerror}); not deleted")
    if not (stat.S_ISREG(bst.st_mode) or stat.S_ISLNK(bst.st_mode)):
        return _refuse(path, f"its blob is {_kind(bst.st_mode)}; not deleted")
    try:
        full = os.stat(path)
    except OSError as exc:
        return _refuse(path, f"its blob cannot be read ({exc.strerror}); not deleted")
    changed = _changed(rec, full)
    if changed:
        return _refuse(path, f"changed since ModelDeck recorded it ({changed}); not deleted")
    return PlannedFile(path, "delete", size=full.st_size, ident=_ident(st), real=where,
                       nlink=bst.st_nlink if stat.S_ISREG(bst.st_mode) else 0, blob=blob)


def _changed(rec: ModelFile, st: os.stat_result) -> str | None:
    """Why ``st`` is not the file recorded in ``rec``, or None.

    The size must match. Where an identity was recorded the device and inode must match, or
    else the mtime (device and inode numbers can change when a volume is mounted again).
    """
    if st.st_size != rec.size:
        return f"{st.st_size} bytes, recorded {rec.size}"
    if rec.ino is None or (st.st_dev, st.st_ino) == (rec.dev, rec.ino):
        return None
    if rec.mtime_ns is not None and st.st_mtime_ns == rec.mtime_ns:
        return None
    return "a different file is at this path now"


def _ident(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_dev, st.st_ino, stat.S_IFMT(st.st_mode))


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _cached_repo(where: Path, cache: Path) -> Path | None:
    """The cached repo folder (``<cache>/models--owner--name``) ``where`` is inside, if any."""
    if not where.is_relative_to(cache):
        return None
    parts = where.relative_to(cache).parts
    if len(parts) < 2 or parts[0].split("--")[0] not in ("models", "datasets", "spaces"):
        return None
    return cache / parts[0]


def _snapshot_of(where: Path, cache: Path) -> tuple[Path, str] | None:
    """(cached repo folder, commit) if ``where`` is inside ``<cache>/<repo>/snapshots/<c>/``."""
    repo = _cached_repo(where, cache)
    parts = where.relative_to(repo).parts if repo else ()
    if repo is None or len(parts) < 3 or parts[0] != "snapshots":
        return None
    return repo, parts[1]


def _account_hard_links(plan: RemovalPlan) -> None:
    """A plain file frees its bytes only when its last name goes."""
    remaining: dict[tuple[int, int], int] = {}
    for f in plan.to_delete:
        if f.blob is None and f.ident is not None:
            remaining[f.ident[:2]] = remaining.get(f.ident[:2], 0) + 1
    for f in plan.to_delete:
        if f.blob is not None or f.ident is None:
            continue
        key = f.ident[:2]
        remaining[key] -= 1
        others = f.nlink - 1 - remaining[key]
        f.freed = others == 0 and remaining[key] == 0
        if others > 0:
            f.note = f"{others} other hard link{'s keep' if others > 1 else ' keeps'} the data"
        elif remaining[key] > 0:
            f.note = "another name of it in this model goes too"


def _account_cache(plan: RemovalPlan) -> None:
    """Hugging Face cache links: which blobs go, and which revisions go whole."""
    by_repo: dict[Path, list[PlannedFile]] = {}
    for f in plan.to_delete:
        if f.blob is not None:
            by_repo.setdefault(f.blob.parent.parent, []).append(f)
    for repo, links in by_repo.items():
        going = {f.real for f in links}
        kept = {blob for link, blob in _snapshot_links(repo).items() if link not in going}
        seen: set[Path] = set()
        for f in links:
            f.blob_goes = f.blob not in kept and f.note != "blob already gone"
            first = f.blob not in seen
            seen.add(f.blob)  # type: ignore[arg-type]
            if not f.blob_goes:
                f.note = f.note or "its blob is still used by another snapshot"
            elif f.nlink == 0:  # the repo's blob entry links into the cache-wide store
                f.note = "shared blob store; huggingface_hub frees it"
            elif f.nlink > 1:
                f.note = "its blob has other hard links"
            elif not first:
                f.note = "same blob as another file of this model"
            f.freed = f.blob_goes and f.nlink == 1 and first
        _whole_revisions(plan, repo, links)


def _whole_revisions(plan: RemovalPlan, repo: Path, links: list[PlannedFile]) -> None:
    """Revisions of ``repo`` this model fills completely go through huggingface_hub."""
    refused = {_real(f.path) for f in plan.refused}
    commits = {f.real.relative_to(repo / "snapshots").parts[0] for f in links if f.real}
    if any(p.name.endswith(".incomplete") for p in _listdir(repo / "blobs")):
        return  # another download is writing into this repo: touch only our own entries
    ours = {f.real for f in links}
    snapshots = _listdir(repo / "snapshots")
    for commit in sorted(commits):
        snap = repo / "snapshots" / commit
        entries = _snapshot_entries(snap)
        if entries is None or not entries <= ours or any(p.is_relative_to(snap) for p in refused):
            continue
        plan.revisions.append((repo, commit))
        refs = sorted(r for r, c in _refs(repo).items() if c == commit)
        what = f"Hugging Face cache: revision {commit[:12]}"
        if refs:
            what += f" and ref{'s' if len(refs) > 1 else ''} {', '.join(refs)}"
        if len(snapshots) == 1:
            what += f", with the cached repo folder {shown(repo.name)} (its last revision)"
        plan.notes.append(what)


def _listdir(folder: Path) -> list[Path]:
    try:
        return [folder / n for n in os.listdir(folder)]
    except OSError:
        return []


def _snapshot_entries(snap: Path) -> set[Path] | None:
    """Every non-folder entry under a snapshot (symlinks to folders count as entries)."""
    out: set[Path] = set()
    stack = [snap]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(Path(e.path))
                    else:
                        out.add(Path(e.path))
        except OSError:
            return None
    return out


def _snapshot_links(repo: Path) -> dict[Path, Path]:
    """Every snapshot symlink of a cached repo and the blob entry it points at."""
    out: dict[Path, Path] = {}
    for dirpath, dirs, files in os.walk(repo / "snapshots"):
        for name in files + dirs:
            link = Path(dirpath) / name
            if link.is_symlink():
                out[link] = Path(os.path.normpath(link.parent / _readlink(link)))
    return out


def _refs(repo: Path) -> dict[str, str]:
    """ref name -> commit for a cached repo's ``refs`` folder."""
    out: dict[str, str] = {}
    base = repo / "refs"
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            p = Path(dirpath) / name
            try:
                out[p.relative_to(base).as_posix()] = p.read_text(errors="replace")[:100].strip()
            except OSError:
                continue
    return out


def _empty_folders(
    plan: RemovalPlan, owned: dict[str, tuple[int, int]], roots: list[Path]
) -> list[Path]:
    """Folders ModelDeck created that hold nothing once the model's files are gone."""
    going = {f.path for f in plan.to_delete}
    candidates: set[Path] = set()
    for f in plan.to_delete:
        for parent in f.path.parents:
            if str(parent) not in owned or _resolve(parent) in roots:
                break
            candidates.add(parent)
    removed: list[Path] = []
    for folder in sorted(candidates, key=lambda p: -len(p.parts)):  # deepest first
        try:
            st = os.lstat(folder)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_ino != owned[str(folder)][1]:
            continue
        if all(p in going or p in removed for p in _listdir(folder)):
            removed.append(folder)
    return removed


# -- carrying out --------------------------------------------------------------------------


def _carry_out(plan: RemovalPlan, inventory: Inventory) -> None:
    """Delete what the plan says, checking each path again just before it goes."""
    if plan.forget_only:
        return
    freeing = {f.blob: f.nlink for f in plan.to_delete if f.blob is not None and f.freed}
    done: set[Path] = set()
    for repo, commit in plan.revisions:
        done |= _delete_revision(plan, repo, commit)
    cache_repos: set[Path] = set()
    for f in plan.to_delete:
        if f.path in done:
            continue
        _unlink_checked(f)
        if f.blob is not None and f.action == "delete":
            cache_repos.add(f.blob.parent.parent)
    for repo in cache_repos:
        _delete_blobs(repo, [f for f in plan.to_delete if f.blob is not None
                             and f.blob.parent.parent == repo and f.path not in done])
    # A blob two revisions' links of this model share goes with the last link, whichever
    # step removed it: its bytes count once.
    for blob in freeing:
        links = [f for f in plan.to_delete if f.blob == blob]
        if links and not any(f.freed for f in links) and not os.path.lexists(blob):
            links[0].freed, links[0].note = True, ""
    removed = []
    owned = inventory.owned_dirs()
    for folder in plan.folders:
        try:
            st = os.lstat(folder)
            if stat.S_ISDIR(st.st_mode) and st.st_ino == owned.get(str(folder), (0, -1))[1]:
                os.rmdir(folder)  # only ever removes an empty folder
                removed.append(str(folder))
        except OSError:
            continue
    plan.folders = [Path(p) for p in removed]
    if removed:
        inventory.forget_owned_dirs(removed)


def _recheck(f: PlannedFile) -> tuple[os.stat_result | None, tuple[str, str] | None]:
    """The path's lstat now, and (action, note) if it is no longer what the plan saw."""
    try:
        st = os.lstat(f.path)
    except FileNotFoundError:
        return None, ("missing", "")
    except OSError as exc:
        return None, ("refuse", f"cannot be checked ({exc.strerror}); not deleted")
    if _ident(st) != f.ident or (
        f.real is not None and Path(os.path.normpath(f.real.parent / _readlink(f.path))) != f.blob
    ):
        return st, ("refuse", "changed while it was being deleted; not deleted")
    return st, None


def _unlink_checked(f: PlannedFile) -> None:
    st, problem = _recheck(f)
    if problem is not None or st is None:
        f.action, f.note = problem or ("missing", "")
        f.freed = False
        return
    try:
        os.unlink(f.path)
    except FileNotFoundError:
        f.action, f.freed, f.note = "missing", False, ""
        return
    except OSError as exc:
        f.action, f.freed, f.note = "refuse", False, f"could not be deleted ({exc.strerror})"
        return
    if f.blob is None:
        f.freed = st.st_nlink == 1
        if not f.freed and not f.note:
            f.note = "other hard links keep the data"


def _delete_blobs(repo: Path, links: list[PlannedFile]) -> None:
    """Remove the blobs the plan said go, if no snapshot links to them any more."""
    kept = set(_snapshot_links(repo).values())
    for f in links:
        if f.action != "delete" or not f.blob_goes or f.blob in kept:
            f.freed = False
            continue
        try:
            bst = os.lstat(f.blob)  # type: ignore[arg-type]
            if not (stat.S_ISREG(bst.st_mode) or stat.S_ISLNK(bst.st_mode)):
                f.freed = False
                continue
            os.unlink(f.blob)  # type: ignore[arg-type]
        except OSError:
            pass  # gone already, or another file of this model took it with it
        f.freed = f.freed and not os.path.lexists(f.blob)  # type: ignore[arg-type]


def _delete_revision(plan: RemovalPlan, repo: Path, commit: str) -> set[Path]:
    """Delete a whole cached revision with huggingface_hub; the paths it took, or none."""
    from huggingface_hub import scan_cache_dir

    snap = repo / "snapshots" / commit
    links = [f for f in plan.to_delete if f.real is not None and f.real.is_relative_to(snap)]
    ours = {f.real for f in links}
    try:
        info = scan_cache_dir(repo.parent)
    except Exception:  # the cache cannot be read as a whole: fall back to our own entries
        return set()
    cached = next((r for r in info.repos if r.repo_path == repo), None)
    rev = next((v for v in cached.revisions if v.commit_hash == commit), None) if cached else None
    if rev is None or not {Path(x.file_path) for x in rev.files} <= ours:
        return set()
    if any(_recheck(f)[1] for f in links) or _snapshot_entries(snap) != ours:
        return set()  # something changed: the per-file path checks and reports each entry
    try:
        info.delete_revisions(commit).execute()
    except OSError:
        pass  # what it could not delete is reported below
    for f in links:
        if os.path.lexists(f.path):
            f.action, f.freed, f.note = "refuse", False, "huggingface_hub could not delete it"
        else:
            f.freed = f.freed and f.blob is not None and not os.path.lexists(f.blob)
    return {f.path for f in links}


# -- reconcile -----------------------------------------------------------------------------


@dataclass(slots=True)
class ReconcileReport:
    """What start-up reconciliation changed."""

    finished_deletes: list[str] = field(default_factory=list)
    marked_missing: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # one line per path left alone
    finished_moves: list[str] = field(default_factory=list)  # `organize` moves a crash cut


def reconcile(settings: Settings, inventory: Inventory) -> ReconcileReport:
    """Bring rows in line with the disk after a crash or outside changes.

    Moves ``modeldeck organize`` left half done are finished first
    (:func:`tui.organize.finish_moves`). Rows left ``deleting`` are finished under the same
    rules as :func:`remove_model`;
    installed rows whose files are gone become ``missing``; ``missing`` rows whose files are
    back become ``installed`` again.
    """
    from tui.organize import finish_moves

    report = ReconcileReport(finished_moves=finish_moves(settings, inventory))
    for model in inventory.list_models():
        if model.status == "deleting":
            plan = _plan(settings, inventory, model)
            _carry_out(plan, inventory)
            inventory.delete_model(model.id)
            report.finished_deletes.append(model.id)
            report.refused += [refusal(f) for f in plan.refused]
            continue
        # A FIFO or device now at a recorded path is not the model (and is never opened).
        present = all(is_regular_file(f.path) for f in model.files) and (
            is_regular_file(model.path) or os.path.isdir(model.path)
        )
        if model.status == "installed" and not present:
            inventory.set_status(model.id, "missing")
            report.marked_missing.append(model.id)
        elif model.status == "missing" and present:
            inventory.set_status(model.id, "installed")
            report.restored.append(model.id)
    return report
