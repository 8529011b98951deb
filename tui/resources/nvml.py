"""GPU readings through NVML, built so that a missing GPU, library or driver is never an error.

:class:`GpuReader` wraps anything shaped like the ``pynvml`` module (package ``nvidia-ml-py``);
tests hand it a fake. It initialises NVML once and keeps it open, because on a headless box
without the persistence daemon every ``nvmlInit`` may re-initialise the driver (slow).

Known limitation (nvitop #134): inside a container with its own PID namespace, NVML reports
*host* PIDs, so the PIDs of this process and its children (container PIDs) do not match and
:meth:`GpuReader.own_vram` reports 0 even while a model holds VRAM. There is no reliable way to
map the two from inside the container; the per-GPU totals stay correct.

Only compute processes are listed (``nvmlDeviceGetComputeRunningProcesses``): graphics
clients of a desktop GPU are not counted, and under MIG the parent device may list none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar, cast

from tui.resources.types import (
    NVML_ERROR_PREFIX,
    STATUS_NO_GPU,
    STATUS_OK,
    GpuProcess,
    GpuReading,
)

__all__ = ["GpuReader", "NvmlSource"]

# pynvml error codes (stable across NVML versions).
_UNINITIALIZED = 1
_NOT_SUPPORTED = 3
_NO_PERMISSION = 4
_DRIVER_NOT_LOADED = 9
_LIBRARY_NOT_FOUND = 12
_QUIET_FIELD_ERRORS = frozenset({_NOT_SUPPORTED, _NO_PERMISSION})
_NO_GPU_ERRORS = frozenset({_DRIVER_NOT_LOADED, _LIBRARY_NOT_FOUND})

_T = TypeVar("_T")


class NvmlSource(Protocol):
    """The subset of the ``pynvml`` module that :class:`GpuReader` uses.

    Errors are instances of ``NVMLError`` carrying an int ``value``; pynvml maps each code to a
    subclass (``NVMLError_NotSupported``, ``NVMLError_LibraryNotFound``, ...).
    """

    @property
    def NVMLError(self) -> type[Exception]: ...  # read-only, so subclasses conform
    @property
    def NVML_TEMPERATURE_GPU(self) -> int: ...

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...  # .used .total (.free)
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...  # .gpu .memory
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...  # milliwatts
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int: ...  # milliwatts
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]: ...  # .pid etc.


def _import_pynvml() -> NvmlSource:
    import pynvml

    return cast(NvmlSource, pynvml)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    try:
        text = str(exc)
    except Exception:
        text = ""
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(value).strip() or None


def _int(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(cast(Any, value))
    except (TypeError, ValueError):
        return None


def _watts(milliwatts: object) -> float | None:
    mw = _int(milliwatts)
    return None if mw is None else mw / 1000.0


class GpuReader:
    """Reads every NVIDIA GPU through NVML; never raises for a missing or broken GPU stack.

    Thread-safe: :meth:`read` may run in a worker thread while :meth:`close` is called from
    another; calls are serialised.
    """

    def __init__(self, source: NvmlSource | None = None) -> None:
        """``source`` defaults to the real ``pynvml`` module, imported on :meth:`open`."""
        self._source = source
        self._lock = threading.Lock()
        self._state = "new"  # new | open | failed | closed
        self._status = STATUS_NO_GPU
        self._last: tuple[GpuReading, ...] = ()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def status(self) -> str:
        """The latest status: ``"ok"``, ``"no GPU"`` or a one-line ``"NVML error: …"``."""
        return self._status

    @property
    def last(self) -> tuple[GpuReading, ...]:
        """Readings from the latest :meth:`read` (empty before the first)."""
        return self._last

    def open(self) -> str:
        """Initialise NVML (idempotent; retries after a failure) and return the status."""
        with self._lock:
            if self._state != "open":
                self._open_locked()
            return self._status

    def close(self) -> None:
        """Shut NVML down. Later :meth:`read` calls return no GPUs until :meth:`open`."""
        with self._lock:
            if self._state == "open" and self._source is not None:
                try:
                    self._source.nvmlShutdown()
                except Exception:
                    pass
            self._state = "closed"
            self._last = ()

    def __enter__(self) -> GpuReader:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open_locked(self) -> None:
        try:
            if self._source is None:
                self._source = _import_pynvml()
        except ImportError:
            self._fail(STATUS_NO_GPU)
            return
        source = self._source
        try:
            source.nvmlInit()
        except Exception as exc:
            self._fail(self._init_failure_status(source, exc))
            return
        self._state = "open"
        self._status = STATUS_OK

    def _fail(self, status: str) -> None:
        self._state = "failed"
        self._status = status
        self._last = ()

    @staticmethod
    def _init_failure_status(source: NvmlSource, exc: Exception) -> str:
        no_gpu_classes = tuple(
            cls
            for cls in (
                getattr(source, "NVMLError_LibraryNotFound", None),
                getattr(source, "NVMLError_DriverNotLoaded", None),
            )
            if isinstance(cls, type)
        )
        if (no_gpu_classes and isinstance(exc, no_gpu_classes)) or (
            _code(exc) in _NO_GPU_ERRORS and isinstance(exc, source.NVMLError)
        ):
            return STATUS_NO_GPU
        return NVML_ERROR_PREFIX + _one_line(exc)

    # -- reading ---------------------------------------------------------------------------

    def read(self) -> tuple[tuple[GpuReading, ...], str]:
        """Read all GPUs: ``(readings, status)``. Opens NVML on first use; never raises."""
        with self._lock:
            if self._state == "new":
                self._open_locked()
            if self._state != "open" or self._source is None:
                return (), self._status
            try:
                readings, status = self._read_locked(self._source)
            except Exception as exc:  # a bug in a source must not kill the sampler
                readings, status = (), NVML_ERROR_PREFIX + _one_line(exc)
            self._last = readings
            self._status = status
            return readings, status

    def _read_locked(self, src: NvmlSource) -> tuple[tuple[GpuReading, ...], str]:
        nvml_error = src.NVMLError
        try:
            count = int(src.nvmlDeviceGetCount())
        except nvml_error as exc:
            if _code(exc) == _UNINITIALIZED:  # someone shut NVML down under us: re-init next time
                self._state = "new"
            if _code(exc) in _NO_GPU_ERRORS:
                return (), STATUS_NO_GPU
            return (), NVML_ERROR_PREFIX + _one_line(exc)
        if count <= 0:
            return (), STATUS_NO_GPU

        problems: list[str] = []
        readings: list[GpuReading] = []
        for index in range(count):
            try:
                handle = src.nvmlDeviceGetHandleByIndex(index)
            except nvml_error as exc:
                problems.append(f"GPU {index}: {_one_line(exc)}")
                continue

            def field(
                fn: Callable[..., _T], *args: Any, _index: int = index, _handle: Any = handle
            ) -> _T | None:
                try:
                    return fn(_handle, *args)
                except nvml_error as exc:
                    if _code(exc) not in _QUIET_FIELD_ERRORS:
                        problems.append(f"GPU {_index}: {_one_line(exc)}")
                    return None

            memory = field(src.nvmlDeviceGetMemoryInfo)
            util = field(src.nvmlDeviceGetUtilizationRates)
            procs = field(src.nvmlDeviceGetComputeRunningProcesses)
            readings.append(
                GpuReading(
                    index=index,
                    name=_text(field(src.nvmlDeviceGetName)),
                    uuid=_text(field(src.nvmlDeviceGetUUID)),
                    mem_used=_int(getattr(memory, "used", None)),
                    mem_total=_int(getattr(memory, "total", None)),
                    util_percent=_int(getattr(util, "gpu", None)),
                    temperature_c=_int(
                        field(src.nvmlDeviceGetTemperature, src.NVML_TEMPERATURE_GPU)
                    ),
                    power_w=_watts(field(src.nvmlDeviceGetPowerUsage)),
                    power_limit_w=_watts(field(src.nvmlDeviceGetEnforcedPowerLimit)),
                    processes=tuple(_processes(procs or ())),
                    processes_known=procs is not None,
                )
            )
        if not problems:
            return tuple(readings), STATUS_OK
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return tuple(readings), NVML_ERROR_PREFIX + problems[0] + more

    # -- attribution -----------------------------------------------------------------------

    def own_vram(self, pids: Iterable[int], gpus: Iterable[GpuReading] | None = None) -> int | None:
        """Bytes of VRAM held by ``pids`` (this process and its children) across all GPUs.

        Uses ``gpus`` or else the latest :meth:`read`. ``None`` when there is no GPU or no
        process list could be read. Containers with their own PID namespace report 0 (see the
        module docstring).
        """
        readings = self._last if gpus is None else tuple(gpus)
        known = [gpu for gpu in readings if gpu.processes_known]
        if not known:
            return None
        wanted = set(pids)
        return sum(
            proc.used_memory or 0 for gpu in known for proc in gpu.processes if proc.pid in wanted
        )


def _processes(raw: Iterable[Any]) -> Iterable[GpuProcess]:
    for proc in raw:
        pid = _int(getattr(proc, "pid", None))
        if pid is not None:
            yield GpuProcess(pid=pid, used_memory=_int(getattr(proc, "usedGpuMemory", None)))
