"""The resource sampler service: NVML mapping and failure modes, disks, the run loop, history.

NVML is faked with :mod:`tests.support.nvml` (two GPUs); one test also runs the real ``pynvml``
on this driver-less machine to prove it degrades to "no GPU".
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest

from tui.resources import (
    DiskReading,
    GpuProcess,
    GpuReader,
    GpuReading,
    ResourceSampler,
    Snapshot,
)
from tui.resources import nvml as nvml_module
from tui.resources.system import CpuMeter, disk_readings, read_cgroup_memory

from tests.support.checks import REPO
from tests.support.nvml import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NO_PERMISSION,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNKNOWN,
    FakeNvml,
    GiB,
    two_gpus,
)

OWN_PID = 4242

EXPECTED_A100 = GpuReading(
    index=0,
    name="NVIDIA A100-SXM4-80GB",
    uuid="GPU-11111111-2222-3333-4444-555555555555",
    mem_used=42 * GiB,
    mem_total=80 * GiB,
    util_percent=87,
    temperature_c=61,
    power_w=312.5,
    power_limit_w=400.0,
    processes=(GpuProcess(OWN_PID, 40 * GiB), GpuProcess(999_001, 2 * GiB)),
    processes_known=True,
)
EXPECTED_4090 = GpuReading(
    index=1,
    name="NVIDIA RTX 4090",  # pynvml < 11.5 returned bytes
    uuid="GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    mem_used=6 * GiB,
    mem_total=24 * GiB,
    util_percent=15,
    temperature_c=48,
    power_w=None,  # NotSupported on this card
    power_limit_w=None,
    processes=(GpuProcess(OWN_PID, 5 * GiB), GpuProcess(999_002, None)),
    processes_known=True,
)


def _no_gpu_reader() -> GpuReader:
    return GpuReader(FakeNvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND))


# -- NVML mapping ----------------------------------------------------------------------------


def test_two_gpus_are_mapped_exactly() -> None:
    fake = FakeNvml(two_gpus(OWN_PID))
    reader = GpuReader(fake)
    gpus, status = reader.read()
    assert status == "ok"
    assert gpus == (EXPECTED_A100, EXPECTED_4090)
    assert reader.status == "ok" and reader.last == gpus
    assert fake.init_calls == 1  # opened lazily, once
    reader.read()
    assert fake.init_calls == 1
    reader.close()
    assert fake.refcount == 0 and fake.shutdown_calls == 1
    assert reader.read() == ((), reader.status)  # closed: no GPUs, no re-init behind our back
    assert fake.init_calls == 1


def test_not_supported_field_becomes_none_and_status_stays_ok() -> None:
    gpus = two_gpus(OWN_PID)
    gpus[0].errors["nvmlDeviceGetTemperature"] = NVML_ERROR_NOT_SUPPORTED
    gpus[0].errors["nvmlDeviceGetUtilizationRates"] = NVML_ERROR_NO_PERMISSION
    readings, status = GpuReader(FakeNvml(gpus)).read()
    assert status == "ok"
    assert readings[0].temperature_c is None
    assert readings[0].util_percent is None
    assert readings[0].mem_used == 42 * GiB  # the rest of the GPU is still read
    assert readings[1] == EXPECTED_4090


def test_other_field_errors_become_none_and_are_reported_in_one_line() -> None:
    gpus = two_gpus(OWN_PID)
    for function in ("nvmlDeviceGetMemoryInfo", "nvmlDeviceGetComputeRunningProcesses"):
        gpus[1].errors[function] = NVML_ERROR_GPU_IS_LOST
    readings, status = GpuReader(FakeNvml(gpus)).read()
    assert status == "NVML error: GPU 1: GPU is lost (+1 more)"
    assert "\n" not in status
    assert readings[0] == EXPECTED_A100
    assert readings[1].mem_used is None and readings[1].mem_total is None
    assert readings[1].processes == () and readings[1].processes_known is False
    assert readings[1].name == "NVIDIA RTX 4090"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (NVML_ERROR_LIBRARY_NOT_FOUND, "no GPU"),
        (NVML_ERROR_DRIVER_NOT_LOADED, "no GPU"),
        (NVML_ERROR_NO_PERMISSION, "NVML error: Insufficient Permissions"),
        (NVML_ERROR_UNKNOWN, "NVML error: Unknown Error"),
    ],
)
def test_init_failure_never_raises(code: int, status: str) -> None:
    fake = FakeNvml(init_error=code)
    reader = GpuReader(fake)
    assert reader.open() == status
    assert reader.read() == ((), status)
    assert reader.own_vram({os.getpid()}) is None
    reader.close()
    assert fake.shutdown_calls == 0  # never shut down what never initialised


def test_missing_pynvml_and_foreign_exceptions_never_raise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_module() -> None:
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(nvml_module, "_import_pynvml", no_module)
    assert GpuReader().read() == ((), "no GPU")

    class Broken(FakeNvml):
        def nvmlInit(self) -> None:
            raise OSError("libnvidia-ml.so.1: cannot open shared object file\nsecond line")

        def nvmlDeviceGetCount(self) -> int:
            raise AssertionError("unreachable")

    status = GpuReader(Broken()).open()
    assert status.startswith("NVML error: libnvidia-ml.so.1") and "\n" not in status


def test_zero_devices_is_no_gpu() -> None:
    assert GpuReader(FakeNvml([])).read() == ((), "no GPU")


@pytest.mark.skipif(
    Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists(),
    reason="an NVIDIA driver is present",
)
def test_real_pynvml_without_driver_is_no_gpu() -> None:
    reader = GpuReader()
    assert reader.open() == "no GPU"
    assert reader.read() == ((), "no GPU")
    assert reader.own_vram({os.getpid()}) is None
    reader.close()
    reader.close()  # idempotent


def test_own_vram_sums_only_the_given_pids() -> None:
    reader = GpuReader(FakeNvml(two_gpus(OWN_PID)))
    assert reader.own_vram({OWN_PID}) is None  # nothing read yet
    gpus, _ = reader.read()
    assert reader.own_vram({OWN_PID}) == 45 * GiB  # 40 on the A100 + 5 on the 4090
    assert reader.own_vram({OWN_PID, 999_001}) == 47 * GiB
    assert reader.own_vram({999_002}) == 0  # usedGpuMemory unavailable counts as 0
    assert reader.own_vram({1, 2, 3}) == 0
    assert reader.own_vram({999_001}, gpus[1:]) == 0  # explicit readings win over the last read


def test_own_vram_unknown_when_no_process_list_is_readable() -> None:
    gpus = two_gpus(OWN_PID)
    for gpu in gpus:
        gpu.errors["nvmlDeviceGetComputeRunningProcesses"] = NVML_ERROR_NOT_SUPPORTED
    reader = GpuReader(FakeNvml(gpus))
    assert reader.read()[1] == "ok"
    assert reader.own_vram({OWN_PID}) is None


def test_sampler_attributes_vram_to_this_process_and_its_children(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        gpus = two_gpus(os.getpid())
        gpus[1].processes.append((child.pid, 3 * GiB))
        sampler = ResourceSampler(tmp_path, None, GpuReader(FakeNvml(gpus)))
        snap = sampler.sample()
        assert snap.gpu_status == "ok"
        assert snap.own_vram == (40 + 5 + 3) * GiB
        assert snap.own_rss > 0
    finally:
        child.kill()
        child.wait()


# -- host readings ---------------------------------------------------------------------------


def test_snapshot_basics(tmp_path: Path) -> None:
    sampler = ResourceSampler(tmp_path, None, _no_gpu_reader())
    snap = sampler.sample()
    assert isinstance(snap, Snapshot)
    assert 0.0 <= snap.cpu_percent <= 100.0
    assert 0 < snap.ram_used <= snap.ram_total
    assert 0 <= snap.swap_used <= snap.swap_total or snap.swap_total == 0
    assert snap.gpus == () and snap.gpu_status == "no GPU" and snap.own_vram is None
    assert abs(snap.timestamp - time.time()) < 60
    assert sampler.last is snap
    with pytest.raises(AttributeError):
        snap.cpu_percent = 1.0  # type: ignore[misc]  # frozen


def _statvfs_usage(path: Path) -> tuple[int, int, int]:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    return total, (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_bavail * st.f_frsize


def test_disk_reading_matches_statvfs(tmp_path: Path) -> None:
    (disk,) = ResourceSampler(tmp_path, None, _no_gpu_reader()).sample().disks
    total, used, free = _statvfs_usage(tmp_path)
    assert disk.path == str(tmp_path)
    assert disk.total == total
    slack = 256 * 1024**2  # other processes write to this volume meanwhile
    assert abs(disk.used - used) < slack and abs(disk.free - free) < slack
    assert os.path.ismount(disk.mount)
    assert Path(os.path.realpath(tmp_path)).is_relative_to(disk.mount)


def test_missing_models_dir_is_measured_on_its_nearest_parent(tmp_path: Path) -> None:
    missing = tmp_path / "not" / "yet" / "models"
    (disk,) = disk_readings(missing)
    assert disk.path == str(missing)
    assert disk.total == _statvfs_usage(tmp_path)[0]


def test_state_dir_on_the_same_device_is_not_duplicated(tmp_path: Path) -> None:
    models, state = tmp_path / "models", tmp_path / "state"
    models.mkdir()
    sampler = ResourceSampler(models, state, _no_gpu_reader())  # state does not exist yet
    disks = sampler.sample().disks
    assert [d.path for d in disks] == [str(models)]


def test_state_dir_on_another_device_gets_its_own_reading(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem to compare with")
    disks = ResourceSampler(tmp_path, other, _no_gpu_reader()).sample().disks
    assert [d.path for d in disks] == [str(tmp_path), str(other)]
    assert isinstance(disks[1], DiskReading) and disks[1].mount == str(other)


def test_cpu_meter_uses_its_own_baseline_across_threads() -> None:
    Times = namedtuple("Times", "user nice system idle iowait guest guest_nice")
    ticks = iter(
        [
            Times(100, 0, 50, 800, 50, 0, 0),
            Times(130, 0, 60, 840, 70, 5, 0),  # +30 user +10 sys +40 idle +20 iowait (+5 guest)
            Times(130, 0, 60, 940, 70, 5, 0),  # idle only
        ]
    )
    meter = CpuMeter(lambda: next(ticks))
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(meter.percent()))
    thread.start()
    thread.join()
    assert result == [round(40 / 100 * 100, 1)]  # busy 40 of 100 ticks, from another thread
    assert meter.percent() == 0.0


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_memory_limit(tmp_path: Path) -> None:
    root, proc = tmp_path / "cg", tmp_path / "proc_self_cgroup"
    _write(proc, "0::/kubepods/pod1/ctr\n")
    _write(root / "kubepods" / "memory.max", str(32 * GiB))
    _write(root / "kubepods/pod1/ctr/memory.max", "max")
    _write(root / "kubepods/pod1/ctr/memory.current", str(10 * GiB))
    _write(root / "kubepods/pod1/ctr/memory.stat", f"anon 1\ninactive_file {2 * GiB}\n")
    assert read_cgroup_memory(root, proc) == (8 * GiB, 32 * GiB)


def test_cgroup_unlimited_or_absent(tmp_path: Path) -> None:
    root, proc = tmp_path / "cg", tmp_path / "proc_self_cgroup"
    _write(proc, "0::/\n")
    assert read_cgroup_memory(root, proc) is None  # nothing mounted
    _write(root / "memory.max", "max")
    _write(root / "memory.current", "123")
    assert read_cgroup_memory(root, proc) is None
    # cgroup v1, hidden host path ("/docker/abc" is not visible inside the container)
    v1 = tmp_path / "v1"
    _write(proc, "4:memory:/docker/abc\n0::/\n")
    _write(v1 / "memory/memory.limit_in_bytes", str(4 * GiB))
    _write(v1 / "memory/memory.usage_in_bytes", str(3 * GiB))
    _write(v1 / "memory/memory.stat", f"total_inactive_file {GiB}\n")
    assert read_cgroup_memory(v1, proc) == (2 * GiB, 4 * GiB)


def test_sampler_prefers_a_cgroup_limit_below_host_ram(tmp_path: Path) -> None:
    sampler = ResourceSampler(tmp_path, None, _no_gpu_reader())
    sampler._cgroup_memory = lambda: (GiB, 2 * GiB)
    snap = sampler.sample()
    assert (snap.ram_used, snap.ram_total) == (GiB, 2 * GiB)
    sampler._cgroup_memory = lambda: (GiB, 1 << 62)  # "unlimited" v1 value: host figures
    assert sampler.sample().ram_total < 1 << 62


# -- the run loop ----------------------------------------------------------------------------


class _Counting:
    """Wraps ``sampler.sample`` to count how many calls are inside it at once."""

    def __init__(self, sampler: ResourceSampler) -> None:
        self.inner = sampler.sample
        self.active = 0
        self.max_active = 0
        self.starts: list[float] = []
        self.lock = threading.Lock()
        sampler.sample = self  # type: ignore[method-assign]

    def __call__(self) -> Snapshot:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.starts.append(time.monotonic())
        try:
            return self.inner()
        finally:
            with self.lock:
                self.active -= 1


async def test_run_never_overlaps_a_slow_sample_and_stops_on_cancel(tmp_path: Path) -> None:
    fake = FakeNvml(count_delay=0.15)  # each sample takes longer than the interval
    sampler = ResourceSampler(tmp_path, None, GpuReader(fake), interval=0.02)
    counting = _Counting(sampler)
    got: list[Snapshot] = []
    task = asyncio.create_task(sampler.run(got.append))
    await asyncio.sleep(0.8)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert counting.max_active == 1
    assert fake.max_active == 1
    assert len(got) >= 3
    gaps = [b - a for a, b in itertools.pairwise(counting.starts)]
    assert min(gaps) >= 0.14  # the next sample started only after the previous finished
    delivered = len(got)
    await asyncio.sleep(0.4)  # an in-flight sample may finish in its thread, but is dropped
    assert len(got) == delivered
    assert all(s.gpu_status == "ok" and len(s.gpus) == 2 for s in got)
    # can be restarted after cancellation
    task = asyncio.create_task(sampler.run(got.append))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    sampler.close()
    assert fake.refcount == 0


async def test_sample_after_cancel_waits_for_the_orphaned_one(tmp_path: Path) -> None:
    fake = FakeNvml(count_delay=0.3)
    sampler = ResourceSampler(tmp_path, None, GpuReader(fake), interval=5)
    task = asyncio.create_task(sampler.run(lambda _: None))
    await asyncio.sleep(0.1)  # first sample is now inside its thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(sampler.sample)
    assert fake.max_active == 1 and fake.count_calls == 2


async def test_run_waits_interval_between_fast_samples(tmp_path: Path) -> None:
    sampler = ResourceSampler(tmp_path, None, _no_gpu_reader(), interval=0.2)
    got: list[float] = []
    task = asyncio.create_task(sampler.run(lambda s: got.append(time.monotonic())))
    deadline = time.monotonic() + 20  # a loaded box may take long per sample: wait for three
    while len(got) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(got) >= 3
    # Fast samples still wait out the interval: never a busy loop, never closer than it.
    assert all(b - a >= 0.15 for a, b in itertools.pairwise(got))


async def test_setting_interval_wakes_a_sleeping_loop(tmp_path: Path) -> None:
    sampler = ResourceSampler(tmp_path, None, _no_gpu_reader(), interval=30)
    got: list[Snapshot] = []
    task = asyncio.create_task(sampler.run(got.append))

    async def until(n: int) -> None:
        deadline = time.monotonic() + 10  # far below the 30 s interval
        while len(got) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    await until(1)
    await asyncio.sleep(0.1)
    assert len(got) == 1  # now sleeping for 30 s
    sampler.interval = 0.05
    await until(3)
    assert len(got) >= 3  # woken at once, not after 30 s
    with pytest.raises(RuntimeError):
        await sampler.run(got.append)  # one loop per sampler
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ValueError):
        sampler.interval = 0


def test_history_is_bounded_and_per_series(tmp_path: Path) -> None:
    sampler = ResourceSampler(tmp_path, None, GpuReader(FakeNvml()), history=5)
    for _ in range(12):
        sampler.sample()
    for name in ("cpu", "ram", "gpu0.util", "gpu0.mem", "gpu1.util", "gpu1.mem"):
        values = sampler.history_of(name)
        assert len(values) == 5, name
        assert all(0.0 <= v <= 100.0 for v in values)
    assert sampler.history_of("gpu0.util") == [87.0] * 5
    assert sampler.history_of("gpu1.mem") == [25.0] * 5
    assert sampler.history_of("gpu7.util") == []
    assert set(sampler.history_names()) == {
        "cpu",
        "ram",
        "gpu0.util",
        "gpu0.mem",
        "gpu1.util",
        "gpu1.mem",
    }
    values = sampler.history_of("cpu")
    values.clear()  # a copy, not the live deque
    assert len(sampler.history_of("cpu")) == 5


def test_package_is_ui_free_and_lazy() -> None:
    code = (
        "import sys, tui.resources\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'pynvml'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
