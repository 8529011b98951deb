"""``modeldeck organize``: move installed models into their kind folder (:mod:`tui.layout`).

Only models whose every recorded file is still the file ModelDeck recorded, inside the models
dir (not in a Hugging Face cache), shared with no other model, not loaded, not being downloaded
or updated and without an update's kept copies are moved. Each file moves by ``os.rename`` on
one volume (a cross-device move is refused, never copied), never over an existing path.

Crash-safe: a model's moves are recorded (``model_moves``) before the first rename; the paths
in the inventory change in one transaction with the removal of that record. A record left by a
crash is finished by :func:`finish_moves` (called from :func:`tui.inventory_ops.reconcile`):
the files not moved yet are moved, then the paths are committed; if a file cannot be moved,
the ones moved go back and the record goes.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tui.discovery import hf_cache_dir
from tui.inventory_ops import file_unchanged, remove_empty_dirs, shown
from tui.layout import hub_root_of, kind_folder, kind_folders
from tui.settings import Settings
from tui.store import Inventory, ModelRecord
from tui.store.history import HistoryStore

Rename = Callable[[str, str], None]
HUB_SOURCES = ("hf", "catalog")


@dataclass(slots=True)
class Move:
    """One model's move: ``pairs`` of (from, to) files; ``note`` why it stays, if it does."""

    model: ModelRecord
    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    new_path: Path | None = None
    note: str = ""
    done: bool = False
    left: list[Path] = field(default_factory=list)  # files it did not record, which stay
    base: Path = Path("/")  # the models dir the move is inside

    @property
    def size(self) -> int:
        return sum(f.size for f in self.model.files)


def plan_organize(settings: Settings, inventory: Inventory, *, loaded: set[str] = frozenset(),
                  busy: set[str] = frozenset()) -> list[Move]:
    """Each installed model not in its kind folder: its moves, or why it stays (``note``).
    Changes nothing."""
    history = HistoryStore(inventory.db)
    out = []
    for model in inventory.list_models(status="installed"):
        move = _plan_one(model, _base(settings))
        if move is None:
            continue
        if not move.note:
            move.note = _why_not(move, inventory, history, loaded, busy)
        if move.note:
            move.pairs = []
        out.append(move)
    return out


def _plan_one(model: ModelRecord, base: Path) -> Move | None:
    """The move of one model to its kind folder; None when it is there already or is not
    ModelDeck's to move (outside the models dir, in the Hugging Face cache)."""
    paths = [Path(f.path) for f in model.files]
    if model.source == "hf-cache" or not paths:
        return None
    real_base, cache = _resolve(base), _resolve(hf_cache_dir())
    real = [_resolve(p.parent) / p.name for p in paths]
    if not all(p.is_relative_to(base) for p in paths) or not all(
            p.is_relative_to(real_base) for p in real) or any(
            p.is_relative_to(cache) for p in real):
        return None
    main = Path(model.path)
    target = base / kind_folder(model.kind)
    root = hub_root_of(base, model.source_ref or "", [str(p) for p in paths]) \
        if model.source in HUB_SOURCES and model.source_ref else None
    if root is not None:  # <models>/[<folder>/]<owner>/<repo>/… → <models>/<folder>/<owner>/…
        dest_root = target / root.relative_to(root.parent.parent)
    else:
        parts = main.relative_to(base).parts if main.is_relative_to(base) else ()
        root = base / parts[0] if len(parts) > 1 and parts[0] in kind_folders() else base
        dest_root = target
    if root == dest_root:
        return None
    if not main.is_relative_to(root) or not all(p.is_relative_to(root) for p in paths):
        return Move(model, note=f"its files are not all inside {shown(root)}; left alone")
    pairs = [(p, dest_root / p.relative_to(root)) for p in paths]
    move = Move(model, pairs, new_path=dest_root / main.relative_to(root), base=base)
    folder = root if root != base else (main if main.is_dir() else None)
    if folder is not None:
        move.left = _unrecorded(folder, set(paths))
    return move


def _unrecorded(folder: Path, recorded: set[Path], limit: int = 100) -> list[Path]:
    """Files in ``folder`` (not following symlinks, not ModelDeck's hidden folders) that are
    not in ``recorded``: they stay where they are. At most ``limit``."""
    from tui.download.planner import KEPT_DIR, STAGE_DIR

    out: list[Path] = []
    for dirpath, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if d not in (STAGE_DIR, KEPT_DIR)]
        out += [Path(dirpath) / n for n in files if Path(dirpath) / n not in recorded]
        if len(out) >= limit:
            return out[:limit]
    return out


def _base(settings: Settings) -> Path:
    """The models dir as an absolute path (symlinks kept, as recorded paths keep them)."""
    return Path(os.path.abspath(Path(settings.models_dir).expanduser()))


def _why_not(move: Move, inventory: Inventory, history: HistoryStore, loaded: set[str],
             busy: set[str]) -> str:
    model = move.model
    if model.id in loaded:
        return "loaded; unload it first"
    if model.id in busy:
        return "a download or an update writes to it; wait for it"
    row = history.get(model.id)
    if row is not None and (row.previous_files or row.pending):
        return "keeps an update's previous files (for `update --rollback`); left where it is"
    shared = inventory.file_owners([f.path for f in model.files], exclude=model.id)
    if shared:
        return f"shares {shown(next(iter(shared)))} with {shown(next(iter(shared.values())))}"
    for f in model.files:
        if not file_unchanged(f):
            return f"{shown(f.path)} is not the file ModelDeck recorded; left alone"
    return _target_problem(move)


def _target_problem(move: Move) -> str:
    """Why the files cannot go to their new places (taken, or a folder on the way leads out
    of the models dir through a symlink), else ""."""
    real_base = _resolve(move.base)
    for _, dst in move.pairs:
        if os.path.lexists(dst):
            return f"{shown(dst)} exists already; not overwriting it"
        there = next((p for p in dst.parents if os.path.lexists(p)), move.base)
        if not _resolve(there).is_relative_to(real_base):
            return f"{shown(there)} leads out of the models dir; not moving files there"
    return ""


# -- carrying out --------------------------------------------------------------------------


def organize(settings: Settings, inventory: Inventory, moves: list[Move],
             rename: Rename | None = None) -> list[Move]:
    """Carry out ``moves`` (from :func:`plan_organize`), one model at a time; ``done`` says
    which moved, ``note`` why one did not (nothing of it changed then)."""
    for move in moves:
        if not move.pairs or move.done:
            continue
        changed = next((f.path for f in move.model.files if not file_unchanged(f)), None)
        problem = _target_problem(move) or (
            f"{shown(changed)} changed since the plan; left alone" if changed else "")
        if problem:
            move.note = problem
            continue
        _record(inventory, move)
        try:
            make_dirs(inventory, _base(settings), {dst.parent for _, dst in move.pairs})
            _rename_all(move.pairs, rename or os.rename)
        except OSError as exc:
            _forget(inventory, move.model.id)
            _tidy(settings, inventory, [(dst, dst) for _, dst in move.pairs])
            move.note = _failure(exc)
            continue
        _commit(inventory, move.model.id, move.pairs, move.new_path)
        _tidy(settings, inventory, move.pairs)
        move.done = True
    return moves


def _rename_all(pairs: list[tuple[Path, Path]], rename: Rename) -> None:
    """Rename each pair, never over an existing path; on a failure the renamed ones go back."""
    done: list[tuple[Path, Path]] = []
    try:
        for src, dst in pairs:
            if os.path.lexists(dst):
                raise FileExistsError(errno.EEXIST, "exists already", str(dst))
            rename(str(src), str(dst))
            done.append((src, dst))
    except OSError:
        for src, dst in reversed(done):
            if not os.path.lexists(src):
                os.rename(dst, src)
        raise


def _failure(exc: OSError) -> str:
    if exc.errno == errno.EXDEV:
        return ("its kind folder is on another volume; not moved (ModelDeck only renames, "
                "never copies and deletes)")
    where = f": {shown(exc.filename)}" if exc.filename else ""
    return f"not moved: {exc.strerror or exc}{where}"


def _record(inventory: Inventory, move: Move) -> None:
    data = {"pairs": [[str(s), str(d)] for s, d in move.pairs],
            "path": str(move.new_path) if move.new_path else None}
    with inventory.db.write() as tx:
        tx.execute("INSERT OR REPLACE INTO model_moves (model_id, moves, created_at) "
                   "VALUES (?, ?, ?)", (move.model.id, json.dumps(data), time.time()))


def _forget(inventory: Inventory, model_id: str) -> None:
    with inventory.db.write() as tx:
        tx.execute("DELETE FROM model_moves WHERE model_id = ?", (model_id,))


def _commit(inventory: Inventory, model_id: str, pairs: list[tuple[Path, Path]],
            new_path: Path | None) -> None:
    """The new paths in the inventory and the move record gone, in one transaction."""
    with inventory.db.write() as tx:
        for src, dst in pairs:
            # a discovery pass that saw the new file first registered it under another id
            tx.execute("DELETE FROM models WHERE path = ? AND id != ? AND source = 'scan'",
                       (str(dst), model_id))
            tx.execute("UPDATE model_files SET path = ? WHERE model_id = ? AND path = ?",
                       (str(dst), model_id, str(src)))
            tx.execute("DELETE FROM scan_cache WHERE path = ?", (str(dst),))
            tx.execute("UPDATE scan_cache SET path = ? WHERE path = ?", (str(dst), str(src)))
        if new_path is not None:
            tx.execute("DELETE FROM models WHERE path = ? AND id != ? AND source = 'scan'",
                       (str(new_path), model_id))
            tx.execute("UPDATE models SET path = ? WHERE id = ?", (str(new_path), model_id))
        tx.execute("DELETE FROM model_moves WHERE model_id = ?", (model_id,))


def make_dirs(inventory: Inventory, root: Path, folders: set[Path]) -> None:
    """:func:`tui.updates.make_dirs` (imported when a move happens: it pulls in the planner)."""
    from tui.updates import make_dirs as make

    make(inventory, root, folders)


def _tidy(settings: Settings, inventory: Inventory, pairs: list[tuple[Path, Path]]) -> None:
    """Remove the old folders ModelDeck created that are empty now."""
    base = _base(settings)
    folders = {p for src, _ in pairs for p in src.parents if p.is_relative_to(base)}
    remove_empty_dirs(inventory, folders - {base}, [_resolve(base)])


# -- after a crash -------------------------------------------------------------------------


def finish_moves(settings: Settings, inventory: Inventory, rename: Rename | None = None
                 ) -> list[str]:
    """Finish the moves a crash interrupted (see the module doc). One line per model."""
    with inventory.db.read() as conn:
        rows = conn.execute("SELECT model_id, moves FROM model_moves").fetchall()
    lines = []
    for model_id, raw in rows:
        try:
            data = json.loads(raw)
            pairs = [(Path(s), Path(d)) for s, d in data["pairs"]]
            new_path = Path(data["path"]) if data.get("path") else None
        except (ValueError, TypeError, KeyError):
            _forget(inventory, model_id)
            lines.append(f"{shown(model_id)}: an unreadable move record was dropped")
            continue
        problem = _bad_record(settings, inventory, model_id, pairs)
        if problem:
            _forget(inventory, model_id)
            lines.append(f"{shown(model_id)}: its move record was dropped: {problem}")
            continue
        moved = [(s, d) for s, d in pairs if os.path.lexists(d) and not os.path.lexists(s)]
        todo = [(s, d) for s, d in pairs if os.path.lexists(s) and not os.path.lexists(d)]
        try:
            if len(moved) + len(todo) != len(pairs):  # a path is at both places, or neither
                raise FileExistsError(errno.EEXIST, "a file is at both its old and its new "
                                      "place, or at neither; not overwriting anything")
            make_dirs(inventory, _base(settings), {d.parent for _, d in todo})
            problem = _target_problem(Move(inventory.require_model(model_id), todo,
                                           base=_base(settings)))
            if problem:
                raise FileExistsError(errno.EEXIST, problem)
            _rename_all(todo, rename or os.rename)
        except OSError as exc:
            try:
                _rename_all([(d, s) for s, d in moved], os.rename)
            except OSError as again:
                lines.append(f"{shown(model_id)}: the interrupted move can be neither finished "
                             f"nor undone yet ({_failure(again)}); it is tried again next time")
                continue
            _forget(inventory, model_id)
            _tidy(settings, inventory, [(d, d) for _, d in pairs])
            lines.append(f"{shown(model_id)}: the interrupted move was undone ({_failure(exc)})")
            continue
        _commit(inventory, model_id, pairs, new_path)
        _tidy(settings, inventory, pairs)
        lines.append(f"{shown(model_id)}: finished the interrupted move")
    return lines


def _bad_record(settings: Settings, inventory: Inventory, model_id: str,
                pairs: list[tuple[Path, Path]]) -> str:
    """Why a move record is not one :func:`organize` wrote for this model, else "": each
    source must be a file the model records, each destination inside the models dir."""
    model = inventory.get_model(model_id)
    recorded = {f.path for f in model.files} if model is not None else set()
    base = _base(settings)
    for src, dst in pairs:
        if str(src) not in recorded:
            return f"{shown(src)} is not one of its files"
        if not dst.is_absolute() or ".." in dst.parts or not dst.is_relative_to(base):
            return f"{shown(dst)} is not inside the models dir"
    return ""


def _resolve(path: Path) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(Path(path).expanduser()))
