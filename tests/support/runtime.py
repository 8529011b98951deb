"""Helpers to build a :class:`RuntimeService` on a throwaway inventory (tests and benches)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tui.runtime.memory import FixedMemoryProbe, GpuFree
from tui.runtime.service import RuntimeService
from tui.settings import Settings
from tui.store import Database, Inventory, ModelFile, ModelRecord

GiB = 1 << 30

__all__ = ["GiB", "make_runtime", "register_model"]


def make_runtime(
    tmp: Path,
    *,
    ram_free: int = 16 * GiB,
    gpus: tuple[GpuFree, ...] = (),
    max_loaded_models: int = 1,
    keep_alive_minutes: float = 0.0,
    parallel_requests: int = 4,
    queue_limit: int = 32,
    **kwargs: Any,
) -> RuntimeService:
    """A runtime with its own SQLite inventory in ``tmp`` and a fixed memory probe."""
    settings = Settings(
        models_dir=tmp / "models",
        state_dir=tmp / "state",
        max_loaded_models=max_loaded_models,
        keep_alive_minutes=keep_alive_minutes,
        parallel_requests=parallel_requests,
        queue_limit=queue_limit,
    )
    inventory = Inventory(Database(settings.db_path))
    kwargs.setdefault("memory_probe", FixedMemoryProbe(ram_free, gpus, ram_total=ram_free))
    return RuntimeService(settings, inventory, **kwargs)


def register_model(inventory: Inventory, model_id: str, path: Path, fmt: str) -> ModelRecord:
    """Add a model at ``path`` (a .gguf file or a folder) to the inventory."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    record = ModelRecord(
        id=model_id,
        name=model_id,
        format=fmt,
        path=str(path),
        source="local",
        size_bytes=sum(p.stat().st_size for p in files),
        files=[ModelFile(str(p), p.stat().st_size) for p in files],
    )
    inventory.upsert_model(record)
    return record
