"""Free memory as the fit check sees it: RAM from psutil, VRAM from NVML when available.

The runtime takes any :class:`MemoryProbe` (a callable returning a :class:`MemorySnapshot`) so
tests inject fixed numbers; :class:`SystemMemoryProbe` is the real one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["FixedMemoryProbe", "GpuFree", "MemoryProbe", "MemorySnapshot", "SystemMemoryProbe"]


@dataclass(frozen=True, slots=True)
class GpuFree:
    """Free and total memory of one GPU, in bytes."""

    index: int
    free: int
    total: int
    name: str | None = None


@dataclass(frozen=True, slots=True)
class MemorySnapshot:
    """Free RAM and per-GPU free VRAM at one instant, in bytes."""

    ram_free: int
    ram_total: int
    gpus: tuple[GpuFree, ...] = ()

    @property
    def vram_free(self) -> int:
        """Free VRAM summed over all GPUs."""
        return sum(g.free for g in self.gpus)


class MemoryProbe(Protocol):
    """Anything that returns a fresh :class:`MemorySnapshot` when called."""

    def __call__(self) -> MemorySnapshot: ...


class FixedMemoryProbe:
    """A probe returning fixed numbers (tests, ``modeldeck fit --ram/--vram`` what-ifs)."""

    def __init__(self, ram_free: int, gpus: tuple[GpuFree, ...] = (), ram_total: int = 0):
        self.snapshot = MemorySnapshot(ram_free, max(ram_total, ram_free), tuple(gpus))

    def __call__(self) -> MemorySnapshot:
        return self.snapshot


class SystemMemoryProbe:
    """psutil for RAM plus :class:`tui.resources.nvml.GpuReader` for VRAM, if importable.

    A missing GPU, driver or NVML library simply means "no GPUs"; it is never an error.
    """

    def __init__(self) -> None:
        self._reader: Any = None
        self._opened = False
        self._lock = threading.Lock()

    def _gpu_reader(self) -> Any:
        with self._lock:
            if not self._opened:
                self._opened = True
                try:
                    from tui.resources.nvml import GpuReader

                    reader = GpuReader()
                    reader.open()
                    self._reader = reader
                except Exception:  # no NVML, no driver: CPU-only machine
                    self._reader = None
            return self._reader

    def __call__(self) -> MemorySnapshot:
        import psutil

        vm = psutil.virtual_memory()
        gpus: list[GpuFree] = []
        reader = self._gpu_reader()
        if reader is not None:
            try:
                readings, _status = reader.read()
            except Exception:
                readings = ()
            for r in readings:
                if r.mem_total:
                    used = r.mem_used or 0
                    gpus.append(GpuFree(r.index, max(0, r.mem_total - used), r.mem_total, r.name))
        return MemorySnapshot(int(vm.available), int(vm.total), tuple(gpus))

    def close(self) -> None:
        """Release NVML."""
        with self._lock:
            if self._reader is not None:
                try:
                    self._reader.close()
                except Exception:
                    pass
                self._reader = None
