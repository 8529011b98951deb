"""The service container: built once from settings, handed to the CLI and to the App.

Heavy services (downloads, runtime, resource sampler) are created on first use, so a command
that needs only the inventory does not pay for them.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from tui.settings import Settings
from tui.store import Database, Inventory
from tui.store.changes import ChangeWatcher

if TYPE_CHECKING:
    from tui.catalog import Catalog
    from tui.discovery_watch import FolderWatcher
    from tui.download.service import DownloadService
    from tui.resources.sampler import ResourceSampler
    from tui.runtime.service import RuntimeService


class Services:
    """Everything a front end (CLI or TUI) needs, wired from one :class:`Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def db(self) -> Database:
        """The SQLite inventory database (created and migrated on first use)."""
        return Database(self.settings.db_path)

    @cached_property
    def inventory(self) -> Inventory:
        """Installed models, custom entries, scan cache."""
        return Inventory(self.db)

    @cached_property
    def catalog(self) -> Catalog:
        """Built-in plus custom catalog entries."""
        from tui.catalog import Catalog

        return Catalog(self.inventory)

    @cached_property
    def downloads(self) -> DownloadService:
        """The download engine (jobs, queue, verification)."""
        from tui.download.service import DownloadService

        return DownloadService(self.settings, self.db, self.inventory, self.catalog)

    @cached_property
    def runtime(self) -> RuntimeService:
        """Model loading and generation."""
        from tui.runtime.service import RuntimeService

        return RuntimeService(self.settings, self.inventory)

    @cached_property
    def sampler(self) -> ResourceSampler:
        """RAM/CPU/GPU/disk readings."""
        from tui.resources.sampler import ResourceSampler

        return ResourceSampler(self.settings.models_dir, self.settings.state_dir)

    @cached_property
    def changes(self) -> ChangeWatcher:
        """What other processes change in the inventory (the dashboard's live picture)."""
        return ChangeWatcher(self.db)

    @cached_property
    def folder_watcher(self) -> FolderWatcher:
        """Discovery that follows the managed folders (the dashboard starts it)."""
        from tui.discovery_watch import FolderWatcher
        from tui.download.jobs import JobStore

        return FolderWatcher(self.settings, self.inventory,
                             busy=JobStore(self.db).dests_in_flight)

    def close(self) -> None:
        """Release what was opened (watcher threads stopped first)."""
        for name in ("folder_watcher", "changes"):
            if name in self.__dict__:
                self.__dict__[name].stop()
        if "db" in self.__dict__:
            self.db.close()


def build_services(settings: Settings) -> Services:
    """The factory the CLI, the App and tests use."""
    return Services(settings)
