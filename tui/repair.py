"""``modeldeck doctor --repair``: set a broken inventory aside and rebuild a fresh one.

The broken file (with its ``-wal`` / ``-shm``) is renamed, never deleted. The fresh inventory
gets every row still readable from it (custom entries, models, download jobs and their
segment offsets), then a scan of the managed folders registers the models on disk.
Download jobs live only in the inventory: a ``.part`` file whose job could not be read back
is reported and left in place (ModelDeck keeps no other record of its URL).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui.discovery import Scanner, ScanReport, roots_for
from tui.errors import StoreError
from tui.inventory_ops import reconcile
from tui.settings import Settings
from tui.store import Database, Inventory
from tui.store.health import NewerInventoryError, check_writable, inspect
from tui.store.salvage import move_aside, salvage


@dataclass(slots=True)
class RepairReport:
    """What ``doctor --repair`` found and did."""

    path: Path
    problem: str | None = None  # None: the inventory was healthy, nothing was done
    moved_to: Path | None = None
    salvaged: dict[str, tuple[int, int]] = field(default_factory=dict)
    scan: ScanReport | None = None
    orphan_parts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "inventory": str(self.path),
            "problem": self.problem,
            "moved_to": str(self.moved_to) if self.moved_to else None,
            "recovered": {t: {"rows": c, "lost": lost} for t, (c, lost) in self.salvaged.items()},
            "scan": self.scan.to_dict() if self.scan else None,
            "orphan_parts": self.orphan_parts,
        }


def repair_inventory(settings: Settings, *, now: float | None = None) -> RepairReport:
    """Rebuild the inventory at ``settings.db_path`` if it is broken (see the module doc)."""
    path = settings.db_path
    report = RepairReport(path=path)
    problem = inspect(path, thorough=True)
    if problem is None:
        return report
    if isinstance(problem, NewerInventoryError):
        raise StoreError(f"{problem.message}; --repair leaves it alone", hint=problem.hint)
    report.problem = problem.message
    check_writable(path.parent)
    try:
        report.moved_to = move_aside(path, now)
    except OSError as exc:
        raise StoreError(f"cannot move {path} aside: {exc.strerror}",
                         hint=f"make {path.parent} writable and try again") from None
    db = Database(path)
    try:
        report.salvaged = salvage(report.moved_to, db)
        inventory = Inventory(db)
        reconcile(settings, inventory)
        report.scan = Scanner(settings, inventory).scan()
        with db.read() as conn:
            known = {r[0] + ".part" for r in conn.execute("SELECT dest FROM job_files")}
        report.orphan_parts = [p for p in _part_files(settings) if p not in known]
    finally:
        db.close()
    return report


def _part_files(settings: Settings) -> list[str]:
    """Every ``*.part`` under the models folder and the extra folders."""
    out: list[str] = []
    for root in roots_for(settings):
        if root.source != "scan":
            continue
        for folder, dirs, files in os.walk(root.path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            out += [str(Path(folder) / f) for f in files if f.endswith(".part")]
    return sorted(out)
