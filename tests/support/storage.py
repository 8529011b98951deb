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
