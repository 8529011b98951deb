"""The resource sampler: one :class:`Snapshot` of CPU, RAM, GPUs and disks every ``interval``.

UI-agnostic: :meth:`ResourceSampler.run` is a plain asyncio loop that hands each snapshot to a
callback; the blocking work happens in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import psutil

from tui.resources.nvml import GpuReader
from tui.resources.system import CpuMeter, disk_readings, own_processes, read_cgroup_memory
from tui.resources.types import Snapshot

__all__ = ["ResourceSampler"]


class ResourceSampler:
    """Samples system resources and keeps a short history of each series for sparklines.

    ``models_dir`` (and ``state_dir`` when it is on another volume) get a disk reading; neither
    needs to exist yet. ``clock`` measures how long a sample took; the loop then sleeps for the
    rest of ``interval``. Snapshots' ``timestamp`` is wall-clock time.
    """

    def __init__(
        self,
        models_dir: Path,
        state_dir: Path | None = None,
        gpu_reader: GpuReader | None = None,
        interval: float = 1.0,
        history: int = 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        self.models_dir = Path(models_dir)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.gpu_reader = gpu_reader if gpu_reader is not None else GpuReader()
        self._interval = _check_interval(interval)
        self._history_len = history
        self._clock = clock
        self._cpu = CpuMeter()
        self._sample_lock = threading.Lock()  # one sample at a time, across threads
        self._history_lock = threading.Lock()
        self._history: dict[str, deque[float]] = {}
        self._wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._running = False
        self._cgroup_memory: Callable[[], tuple[int, int] | None] = read_cgroup_memory
        self.last: Snapshot | None = None

    # -- interval --------------------------------------------------------------------------

    @property
    def interval(self) -> float:
        """Seconds between sample starts. Setting it takes effect at once, even mid-sleep."""
        return self._interval

    @interval.setter
    def interval(self, value: float) -> None:
        self._interval = _check_interval(value)
        wake = self._wake
        if wake is not None:
            loop, event = wake
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(event.set)

    # -- sampling --------------------------------------------------------------------------

    def sample(self) -> Snapshot:
        """Take one snapshot (blocking, a few ms) and append it to the history."""
        with self._sample_lock:
            cpu = self._cpu.percent()
            vm = psutil.virtual_memory()
            ram_total, ram_used = int(vm.total), int(vm.total - vm.available)
            try:
                cgroup = self._cgroup_memory()
            except Exception:
                cgroup = None
            if cgroup is not None and 0 < cgroup[1] < ram_total:
                ram_used, ram_total = min(cgroup[0], cgroup[1]), cgroup[1]
            try:
                swap = psutil.swap_memory()
                swap_used, swap_total = int(swap.used), int(swap.total)
            except (OSError, RuntimeError):
                swap_used = swap_total = 0
            gpus, status = self.gpu_reader.read()
            try:
                pids, own_rss = own_processes()
            except psutil.Error:
                pids, own_rss = set(), 0
            snapshot = Snapshot(
                timestamp=time.time(),
                cpu_percent=cpu,
                ram_used=ram_used,
                ram_total=ram_total,
                swap_used=swap_used,
                swap_total=swap_total,
                gpus=gpus,
                gpu_status=status,
                disks=disk_readings(self.models_dir, self.state_dir),
                own_vram=self.gpu_reader.own_vram(pids, gpus),
                own_rss=own_rss,
            )
            self._record(snapshot)
            self.last = snapshot
            return snapshot

    async def run(self, callback: Callable[[Snapshot], object]) -> None:
        """Sample every ``interval`` seconds and call ``callback(snapshot)`` until cancelled.

        Samples never overlap: one that outlasts the interval delays the next rather than
        running beside it. The blocking part runs in :func:`asyncio.to_thread`; the callback runs
        on the event loop. Cancellation propagates as usual. A sample still in flight in its
        thread when the task is cancelled finishes there and is dropped (a later :meth:`sample`
        waits for it). An exception from ``callback`` ends the loop.
        """
        if self._running:
            raise RuntimeError("ResourceSampler.run() is already running")
        self._running = True
        event = asyncio.Event()
        self._wake = (asyncio.get_running_loop(), event)
        try:
            while True:
                started = self._clock()
                snapshot = await asyncio.to_thread(self.sample)
                callback(snapshot)
                await self._sleep_rest(started, event)
        finally:
            self._wake = None
            self._running = False

    async def _sleep_rest(self, started: float, event: asyncio.Event) -> None:
        while True:
            remaining = started + self._interval - self._clock()
            if remaining <= 0:
                await asyncio.sleep(0)  # let the loop breathe when sampling is slow
                return
            event.clear()
            try:
                async with asyncio.timeout(remaining):
                    await event.wait()  # woken by an interval change: recompute
            except TimeoutError:
                return

    def close(self) -> None:
        """Release NVML. Call after the :meth:`run` task is cancelled."""
        self.gpu_reader.close()

    def __enter__(self) -> ResourceSampler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- history ---------------------------------------------------------------------------

    def history_of(self, name: str) -> list[float]:
        """Oldest-first values of one series, all in percent (0-100); ``[]`` if unknown.

        Series: ``"cpu"``, ``"ram"``, ``"gpu{i}.util"``, ``"gpu{i}.mem"``. A value NVML could
        not read is skipped rather than recorded as 0.
        """
        with self._history_lock:
            series = self._history.get(name)
            return list(series) if series is not None else []

    def history_names(self) -> list[str]:
        """Names of the series recorded so far."""
        with self._history_lock:
            return list(self._history)

    def _record(self, snap: Snapshot) -> None:
        points: dict[str, float | None] = {
            "cpu": snap.cpu_percent,
            "ram": _percent(snap.ram_used, snap.ram_total),
        }
        for gpu in snap.gpus:
            util = gpu.util_percent
            points[f"gpu{gpu.index}.util"] = None if util is None else float(util)
            points[f"gpu{gpu.index}.mem"] = _percent(gpu.mem_used, gpu.mem_total)
        with self._history_lock:
            for name, value in points.items():
                if value is None:
                    continue
                series = self._history.get(name)
                if series is None:
                    series = self._history[name] = deque(maxlen=self._history_len)
                series.append(value)


def _percent(used: int | None, total: int | None) -> float | None:
    if used is None or not total:
        return None
    return min(100.0, max(0.0, used / total * 100.0))


def _check_interval(value: float) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"interval must be a positive number of seconds, got {value!r}")
    return value
