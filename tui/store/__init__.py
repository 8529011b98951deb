"""The SQLite inventory: installed models, custom catalog entries, scan cache, download jobs."""

from tui.store.db import Database
from tui.store.inventory import Inventory
from tui.store.records import CustomEntry, ModelFile, ModelRecord

__all__ = ["CustomEntry", "Database", "Inventory", "ModelFile", "ModelRecord"]
