"""Storage helpers: an ``organize`` cut short by a crash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tui.organize import organize, plan_organize
from tui.settings import Settings
from tui.store import Inventory


def organize_killed_after_rename(settings: Settings, inventory: Inventory) -> None:
    """Run ``organize`` and die after its first rename, before the commit (the rename is on
    disk, the inventory still names the old path)."""

    def rename_then_die(src: str | Path, dst: str | Path) -> None:
        os.rename(src, dst)
        raise KeyboardInterrupt  # the process dies after the rename, before the commit

    with pytest.raises(KeyboardInterrupt):
        organize(settings, inventory, plan_organize(settings, inventory), rename=rename_then_die)


def organize_killed_before_rename(settings: Settings, inventory: Inventory, n: int = 2,
                                  moves: list | None = None) -> None:
    """Run ``organize`` (on ``moves``, else its plan) and die at its ``n``-th rename, before
    that rename happens."""
    calls = 0

    def die_on_nth(src: str | Path, dst: str | Path) -> None:
        nonlocal calls
        calls += 1
        if calls == n:
            raise KeyboardInterrupt
        os.rename(src, dst)

    with pytest.raises(KeyboardInterrupt):
        organize(settings, inventory,
                 plan_organize(settings, inventory) if moves is None else moves,
                 rename=die_on_nth)
