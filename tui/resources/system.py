"""Host readings that psutil alone gets subtly wrong for a dashboard: CPU %, container RAM, disks.

All functions are synchronous and cheap enough to call once a second from a worker thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tui.resources.types import DiskReading

__all__ = [
    "CpuMeter",
    "disk_readings",
    "mount_point",
    "nearest_existing",
    "own_processes",
    "read_cgroup_memory",
]


class CpuMeter:
    """System-wide CPU % since the previous call, from :func:`psutil.cpu_times` deltas.

    ``psutil.cpu_percent(interval=None)`` keeps its "previous call" per *thread*, so called via
    ``asyncio.to_thread`` (whichever pool thread is free) it compares against stale or missing
    baselines and often returns 0.0. This keeps its own baseline; the arithmetic is psutil's.
    """

    def __init__(self, cpu_times: Callable[[], Any] = psutil.cpu_times) -> None:
        self._cpu_times = cpu_times
        self._lock = threading.Lock()
        self._last = cpu_times()

    def percent(self) -> float:
        """Busy percentage (0-100) of all CPUs since the previous call (or construction)."""
        with self._lock:
            now = self._cpu_times()
            last, self._last = self._last, now
        deltas = {name: max(0.0, getattr(now, name) - getattr(last, name)) for name in now._fields}
        # Linux: guest time is already counted in user/nice; iowait is idle time.
        total = sum(deltas.values()) - deltas.get("guest", 0.0) - deltas.get("guest_nice", 0.0)
        busy = total - deltas.get("idle", 0.0) - deltas.get("iowait", 0.0)
        if total <= 0:
            return 0.0
        return round(min(100.0, max(0.0, float(busy / total * 100.0))), 1)


# -- memory -----------------------------------------------------------------------------------

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    return 0


def _own_cgroup_paths(proc_self_cgroup: Path) -> tuple[str | None, str | None]:
    """This process' (v2 path, v1 memory-controller path) from ``/proc/self/cgroup``."""
    v2 = v1 = None
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None, None
    for line in lines:
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _chain(base: Path, rel: str | None) -> list[Path]:
    """``base/rel`` and its ancestors up to ``base``, own cgroup first; missing dirs skipped."""
    own = Path(os.path.normpath(base / (rel or "/").lstrip("/")))
    if own != base and base not in own.parents:  # "..": outside what we can see
        own = base
    dirs = [own, *own.parents]
    return [d for d in dirs if (d == base or base in d.parents) and d.is_dir()]


def read_cgroup_memory(
    root: Path = _CGROUP_ROOT, proc_self_cgroup: Path = _PROC_SELF_CGROUP
) -> tuple[int, int] | None:
    """``(used, limit)`` of this process' memory cgroup, or ``None`` when it has no limit.

    GPU pods are usually containers whose ``/proc/meminfo`` shows the *host's* RAM; the cgroup
    limit is what the OOM killer enforces. ``used`` is the working set (usage minus inactive
    page cache, as ``kubectl top`` counts it). The limit is the smallest on the path to the
    root. Handles cgroup v2 and the v1 memory controller.
    """
    v2_path, v1_path = _own_cgroup_paths(proc_self_cgroup)
    layouts = (
        (root, v2_path, "memory.max", "memory.current", "inactive_file"),
        (root / "memory", v1_path, "memory.limit_in_bytes", "memory.usage_in_bytes",
         "total_inactive_file"),
    )  # fmt: skip
    for base, rel, limit_file, usage_file, inactive_key in layouts:
        dirs = _chain(base, rel)
        if not dirs or not any((d / usage_file).exists() for d in dirs):
            continue
        limits = [v for d in dirs if (v := _read_int(d / limit_file)) is not None]
        usage_dir = next(d for d in dirs if (d / usage_file).exists())
        usage = _read_int(usage_dir / usage_file)
        if not limits or usage is None:
            return None
        used = max(0, usage - _stat_value(usage_dir / "memory.stat", inactive_key))
        return used, min(limits)
    return None


def own_processes() -> tuple[set[int], int]:
    """PIDs of this process and all its descendants, and the sum of their RSS (bytes).

    Shared pages (e.g. a model mmapped by both parent and child) are counted once per process.
    """
    me = psutil.Process()
    try:
        procs = [me, *me.children(recursive=True)]
    except psutil.Error:
        procs = [me]
    pids: set[int] = set()
    rss = 0
    for proc in procs:
        pids.add(proc.pid)
        try:
            rss += proc.memory_info().rss
        except psutil.Error:
            pass
    return pids, rss


# -- disks ------------------------------------------------------------------------------------


def nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor (absolute)."""
    current = Path(os.path.abspath(path.expanduser()))
    while not current.exists() and current.parent != current:
        current = current.parent
    return current


def mount_point(path: Path) -> str:
    """The mount point of the volume holding the existing ``path``."""
    current = os.path.realpath(path)
    while not os.path.ismount(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def disk_readings(*paths: Path | None) -> tuple[DiskReading, ...]:
    """One reading per distinct volume (by ``st_dev``) among ``paths``, in order.

    A path that does not exist yet is measured on its nearest existing ancestor; a path that
    cannot be measured at all is left out.
    """
    seen: set[int] = set()
    out: list[DiskReading] = []
    for path in paths:
        if path is None:
            continue
        try:
            existing = nearest_existing(Path(path))
            device = os.stat(existing).st_dev
            if device in seen:
                continue
            usage = psutil.disk_usage(str(existing))
            seen.add(device)
        except OSError:
            continue
        out.append(
            DiskReading(
                path=str(Path(path).expanduser()),
                mount=mount_point(existing),
                used=usage.used,
                total=usage.total,
                free=usage.free,
            )
        )
    return tuple(out)
