"""Resource sampling (CPU, RAM, NVIDIA GPUs, disks) for the resources panel.

UI-free: nothing here imports Textual. Importing this package does not import ``pynvml``;
:class:`GpuReader` loads it on first use.
"""

from tui.resources.nvml import GpuReader, NvmlSource
from tui.resources.sampler import ResourceSampler
from tui.resources.types import (
    STATUS_NO_GPU,
    STATUS_OK,
    DiskReading,
    GpuProcess,
    GpuReading,
    Snapshot,
)

__all__ = [
    "STATUS_NO_GPU",
    "STATUS_OK",
    "DiskReading",
    "GpuProcess",
    "GpuReader",
    "GpuReading",
    "NvmlSource",
    "ResourceSampler",
    "Snapshot",
]
