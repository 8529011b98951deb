"""Immutable readings produced by the resource sampler. All sizes are in bytes."""

from __future__ import annotations

from dataclasses import dataclass

STATUS_OK = "ok"
STATUS_NO_GPU = "no GPU"
NVML_ERROR_PREFIX = "NVML error: "


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A compute process on one GPU as NVML reports it.

    ``pid`` is in the *host* PID namespace (see :mod:`tui.resources.nvml`); ``used_memory`` is
    ``None`` where NVML cannot tell (Windows WDDM, some MIG setups).
    """

    pid: int
    used_memory: int | None


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU at one instant. A field NVML cannot read on this card is ``None``."""

    index: int
    name: str | None
    uuid: str | None
    mem_used: int | None
    mem_total: int | None
    util_percent: int | None  # 0-100, GPU core utilisation over NVML's last sample period
    temperature_c: int | None
    power_w: float | None
    power_limit_w: float | None  # enforced limit
    processes: tuple[GpuProcess, ...] = ()
    # False when the process list itself could not be read (then ``processes`` is empty and
    # says nothing): lets "0 bytes of VRAM" be told apart from "unknown".
    processes_known: bool = True


@dataclass(frozen=True, slots=True)
class DiskReading:
    """Usage of the volume holding ``path`` (``used + free`` may be < ``total``: root reserve)."""

    path: str  # the directory asked about (may not exist yet)
    mount: str  # mount point of the volume it lives on
    used: int
    total: int
    free: int  # available to unprivileged users


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the resources panel shows, sampled at one instant."""

    timestamp: float  # wall clock, seconds since the epoch
    cpu_percent: float  # system-wide, 0-100
    ram_used: int  # total - available (the container's cgroup figures when it is capped)
    ram_total: int
    swap_used: int
    swap_total: int
    gpus: tuple[GpuReading, ...]
    gpu_status: str  # "ok" | "no GPU" | "NVML error: …" (one line)
    disks: tuple[DiskReading, ...]
    own_vram: int | None  # VRAM held by this process and its children across GPUs
    own_rss: int  # resident memory of this process and its children
