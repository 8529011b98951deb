"""An NVML-shaped stand-in for the ``pynvml`` module, for tests on machines without a GPU.

:class:`FakeNvml` mirrors the parts of ``pynvml`` that :class:`tui.resources.GpuReader` uses,
including pynvml's error hierarchy: ``NVMLError(code)`` turns into the matching subclass
(``NVMLError_NotSupported`` ...) and every error carries ``.value``. Device calls before
``nvmlInit`` raise ``NVMLError_Uninitialized`` like the real library.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

GiB = 1024**3

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999
NVML_TEMPERATURE_GPU = 0


class NVMLError(Exception):
    """Shaped like ``pynvml.NVMLError``: constructing it with a code yields the subclass."""

    _valClassMapping: ClassVar[dict[int, type[NVMLError]]] = {}
    _errcode_to_string: ClassVar[dict[int, str]] = {
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
        NVML_ERROR_UNKNOWN: "Unknown Error",
    }
    value: int

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return self._errcode_to_string.get(self.value, f"NVML Error with code {self.value}")


def _error_class(name: str, code: int) -> type[NVMLError]:
    def new(cls: type[NVMLError], *args: Any) -> NVMLError:
        return NVMLError.__new__(cls, code)

    cls = type(name, (NVMLError,), {"__new__": new})
    NVMLError._valClassMapping[code] = cls
    return cls


NVMLError_Uninitialized = _error_class("NVMLError_Uninitialized", NVML_ERROR_UNINITIALIZED)
NVMLError_NotSupported = _error_class("NVMLError_NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_NoPermission = _error_class("NVMLError_NoPermission", NVML_ERROR_NO_PERMISSION)
NVMLError_DriverNotLoaded = _error_class("NVMLError_DriverNotLoaded", NVML_ERROR_DRIVER_NOT_LOADED)
NVMLError_LibraryNotFound = _error_class("NVMLError_LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)
NVMLError_GpuIsLost = _error_class("NVMLError_GpuIsLost", NVML_ERROR_GPU_IS_LOST)
NVMLError_Unknown = _error_class("NVMLError_Unknown", NVML_ERROR_UNKNOWN)


@dataclass
class FakeGpu:
    """One fake device. ``errors`` maps a pynvml function name to the error code it raises."""

    name: str | bytes
    uuid: str | bytes
    mem_total: int
    mem_used: int
    util: int
    temperature: int
    power_mw: int
    power_limit_mw: int
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes)
    errors: dict[str, int] = field(default_factory=dict)


def two_gpus(own_pid: int = 4242) -> list[FakeGpu]:
    """An A100 (pynvml >= 11.5 style ``str`` names) and an RTX 4090 that reports ``bytes``
    names, like pynvml < 11.5, and has no power readings (``NotSupported``)."""
    return [
        FakeGpu(
            name="NVIDIA A100-SXM4-80GB",
            uuid="GPU-11111111-2222-3333-4444-555555555555",
            mem_total=80 * GiB,
            mem_used=42 * GiB,
            util=87,
            temperature=61,
            power_mw=312_500,
            power_limit_mw=400_000,
            processes=[(own_pid, 40 * GiB), (999_001, 2 * GiB)],
        ),
        FakeGpu(
            name=b"NVIDIA RTX 4090",
            uuid=b"GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            mem_total=24 * GiB,
            mem_used=6 * GiB,
            util=15,
            temperature=48,
            power_mw=0,
            power_limit_mw=0,
            processes=[(own_pid, 5 * GiB), (999_002, None)],
            errors={
                "nvmlDeviceGetPowerUsage": NVML_ERROR_NOT_SUPPORTED,
                "nvmlDeviceGetEnforcedPowerLimit": NVML_ERROR_NOT_SUPPORTED,
            },
        ),
    ]


class FakeNvml:
    """A module-like object: attributes and functions named as in ``pynvml``."""

    NVMLError = NVMLError
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_Unknown = NVMLError_Unknown
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        init_error: int | None = None,
        count_delay: float = 0.0,
    ) -> None:
        self.gpus = two_gpus() if gpus is None else gpus
        self.init_error = init_error
        self.count_delay = count_delay  # seconds nvmlDeviceGetCount sleeps: a slow driver
        self.refcount = 0
        self.init_calls = 0
        self.shutdown_calls = 0
        self.active = 0  # concurrent nvmlDeviceGetCount calls right now
        self.max_active = 0
        self.count_calls = 0
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.refcount += 1

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1
        self._check_init()
        self.refcount -= 1

    def _check_init(self) -> None:
        if self.refcount <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    # -- devices ----------------------------------------------------------------------------

    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        with self._lock:
            self.active += 1
            self.count_calls += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.count_delay:
                time.sleep(self.count_delay)
            return len(self.gpus)
        finally:
            with self._lock:
                self.active -= 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> SimpleNamespace:
        self._check_init()
        if not 0 <= index < len(self.gpus):
            raise NVMLError(2)  # Invalid Argument
        return SimpleNamespace(index=index)  # opaque, like a c_nvmlDevice_t pointer

    def _gpu(self, handle: SimpleNamespace, function: str) -> FakeGpu:
        self._check_init()
        gpu: FakeGpu = self.gpus[handle.index]
        if function in gpu.errors:
            raise NVMLError(gpu.errors[function])
        return gpu

    def nvmlDeviceGetName(self, handle: SimpleNamespace) -> str | bytes:
        return self._gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetUUID(self, handle: SimpleNamespace) -> str | bytes:
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetMemoryInfo(self, handle: SimpleNamespace) -> SimpleNamespace:
        gpu = self._gpu(handle, "nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(
            total=gpu.mem_total, used=gpu.mem_used, free=gpu.mem_total - gpu.mem_used
        )

    def nvmlDeviceGetUtilizationRates(self, handle: SimpleNamespace) -> SimpleNamespace:
        gpu = self._gpu(handle, "nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=gpu.util, memory=gpu.util // 2)

    def nvmlDeviceGetTemperature(self, handle: SimpleNamespace, sensor: int) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetTemperature")
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError(2)
        return gpu.temperature

    def nvmlDeviceGetPowerUsage(self, handle: SimpleNamespace) -> int:
        return self._gpu(handle, "nvmlDeviceGetPowerUsage").power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: SimpleNamespace) -> int:
        return self._gpu(handle, "nvmlDeviceGetEnforcedPowerLimit").power_limit_mw

    def nvmlDeviceGetComputeRunningProcesses(self, handle: SimpleNamespace) -> list[Any]:
        gpu = self._gpu(handle, "nvmlDeviceGetComputeRunningProcesses")
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used, gpuInstanceId=0xFFFFFFFF)
            for pid, used in gpu.processes
        ]
