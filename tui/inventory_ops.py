"""Operations on installed models that touch both disk and database: remove, reconcile.

Deletion is crash-safe: the row is first marked ``deleting`` (committed), then the files are
removed, then the row. A crash in between leaves a ``deleting`` row that :func:`reconcile`
finishes at the next start.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tui.discovery import hf_cache_dir, is_within_roots
from tui.errors import InvalidInputError
from tui.metadata.files import is_regular_file
from tui.settings import Settings
from tui.store import Inventory, ModelRecord


@dataclass(slots=True)
class RemovalPlan:
    """What removing a model will delete and free."""

    model: ModelRecord
    paths: list[Path] = field(default_factory=list)
    freed_bytes: int = 0
    forget_only: bool = False  # files lie outside the managed folders: only the row goes


def plan_removal(settings: Settings, inventory: Inventory, model_id: str) -> RemovalPlan:
    """Work out what ``rm`` would delete, without deleting anything."""
    model = inventory.require_model(model_id)
    plan = RemovalPlan(model=model)
    if not is_within_roots(Path(model.path), settings):
        plan.forget_only = True
        return plan
    seen: set[tuple[int, int]] = set()
    for f in model.files:
        p = Path(f.path)
        plan.paths.append(p)
        try:
            st = p.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            plan.freed_bytes += st.st_size
    return plan


def remove_model(settings: Settings, inventory: Inventory, model_id: str) -> RemovalPlan:
    """Delete a model's files and its row. Returns the plan that was carried out."""
    plan = plan_removal(settings, inventory, model_id)
    inventory.set_status(model_id, "deleting")
    if not plan.forget_only:
        _delete_files(plan.model)
    inventory.delete_model(model_id)
    return plan


def _delete_files(model: ModelRecord) -> None:
    cache = hf_cache_dir().resolve()
    for f in model.files:
        p = Path(f.path)
        if model.source == "hf-cache" and p.is_symlink():
            blob = p.resolve()
            p.unlink(missing_ok=True)
            if blob.is_relative_to(cache) and not _blob_referenced(blob):
                blob.unlink(missing_ok=True)
            continue
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            shutil.rmtree(p, ignore_errors=True)
        except OSError as exc:
            raise InvalidInputError(f"cannot delete {p}: {exc.strerror}") from None
    main = Path(model.path)
    if model.format == "safetensors" and main.is_dir():
        # Remove the folder if nothing but small leftovers (configs, tokenizer) remain.
        leftovers = [e for e in main.iterdir() if not e.name.startswith(".")]
        if all(e.is_file() and e.stat().st_size < (64 << 20) for e in leftovers):
            shutil.rmtree(main, ignore_errors=True)


def _blob_referenced(blob: Path) -> bool:
    """Does any snapshot symlink of this cached repo still point at ``blob``?"""
    repo_dir = blob.parent.parent
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return False
    for dirpath, _dirs, files in os.walk(snapshots):
        for name in files:
            link = Path(dirpath) / name
            try:
                if link.resolve() == blob:
                    return True
            except OSError:
                continue
    return False


@dataclass(slots=True)
class ReconcileReport:
    """What start-up reconciliation changed."""

    finished_deletes: list[str] = field(default_factory=list)
    marked_missing: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)


def reconcile(settings: Settings, inventory: Inventory) -> ReconcileReport:
    """Bring rows in line with the disk after a crash or outside changes.

    Rows left ``deleting`` are finished; installed rows whose files are gone become
    ``missing``; ``missing`` rows whose files are back become ``installed`` again.
    """
    report = ReconcileReport()
    for model in inventory.list_models():
        if model.status == "deleting":
            if is_within_roots(Path(model.path), settings):
                _delete_files(model)
            inventory.delete_model(model.id)
            report.finished_deletes.append(model.id)
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
