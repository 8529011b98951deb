"""Deterministic dashboard set-ups: fixed samplers, catalog, inventory, clock and ``now``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tui.app.app import ModelDeckApp
from tui.catalog import CatalogEntry, entry_from_dict
from tui.resources.types import STATUS_NO_GPU, STATUS_OK, DiskReading, GpuReading, Snapshot
from tui.runtime.memory import FixedMemoryProbe, GpuFree
from tui.runtime.service import RuntimeService
from tui.services import Services, build_services
from tui.settings import Settings
from tui.store import ModelRecord

NOW = 1_750_000_000.0  # the fixed "now" of every dashboard test
GIB = 1 << 30


def fixed_now() -> float:
    """The injectable wall clock."""
    return NOW


class FakeSampler:
    """A sampler with fixed readings: reports once, then waits to be cancelled."""

    def __init__(self, snapshot: Snapshot, history: dict[str, list[float]] | None = None) -> None:
        self.snapshot = snapshot
        self.history = history or {}
        self.interval = 1.0
        self.runs = 0

    async def run(self, callback: Callable[[Snapshot], object]) -> None:
        self.runs += 1
        callback(self.snapshot)
        await asyncio.Event().wait()

    def history_of(self, name: str) -> list[float]:
        return list(self.history.get(name, []))


def gpu(index: int, used_gib: float, util: int, temp: int, power: float) -> GpuReading:
    """A fixed GPU reading (24 GiB card)."""
    return GpuReading(
        index=index,
        name="NVIDIA RTX 4090",
        uuid=f"GPU-{index:04d}",
        mem_used=int(used_gib * GIB),
        mem_total=24 * GIB,
        util_percent=util,
        temperature_c=temp,
        power_w=power,
        power_limit_w=450.0,
    )


def snapshot(gpus: Sequence[GpuReading] = ()) -> Snapshot:
    """A fixed snapshot; no GPUs means the "no GPU" status."""
    return Snapshot(
        timestamp=NOW,
        cpu_percent=23.0,
        ram_used=12 * GIB,
        ram_total=64 * GIB,
        swap_used=0,
        swap_total=0,
        gpus=tuple(gpus),
        gpu_status=STATUS_OK if gpus else STATUS_NO_GPU,
        disks=(DiskReading(path="/models", mount="/", used=300 * GIB, total=500 * GIB,
                           free=200 * GIB),),
        own_vram=int(5.5 * GIB) if gpus else None,
        own_rss=2 * GIB,
    )


def two_gpu_sampler() -> FakeSampler:
    """Two GPUs with a short history."""
    history = {
        "cpu": [10, 20, 30, 25, 23],
        "ram": [18, 18, 19, 19, 19],
        "gpu0.util": [0, 40, 80, 90, 87],
        "gpu1.util": [5, 5, 10, 8, 3],
    }
    return FakeSampler(
        snapshot([gpu(0, 20.5, 87, 71, 320.0), gpu(1, 1.2, 3, 38, 45.0)]),
        {k: [float(x) for x in v] for k, v in history.items()},
    )


def no_gpu_sampler() -> FakeSampler:
    """A CPU-only machine."""
    return FakeSampler(snapshot(), {"cpu": [10.0, 23.0], "ram": [18.0, 19.0]})


FIXED_ENTRIES: list[dict[str, Any]] = [
    {
        "id": "llama-3.1-8b-instruct-gguf", "name": "Llama 3.1 8B Instruct", "format": "gguf",
        "repo": "example/llama-gguf", "parameters": 8_030_261_248,
        "quants": [
            {"quant": "Q4_K_M", "default": True,
             "files": [{"path": "llama-Q4_K_M.gguf", "size": 4_920_000_000}]},
            {"quant": "Q8_0", "files": [{"path": "llama-Q8_0.gguf", "size": 8_540_000_000}]},
        ],
    },
    {
        "id": "qwen2.5-7b-instruct-gguf", "name": "Qwen2.5 7B Instruct", "format": "gguf",
        "repo": "example/qwen-gguf", "parameters": 7_615_616_512,
        "quants": [
            {"quant": "Q4_K_M", "default": True,
             "files": [{"path": "qwen-Q4_K_M.gguf", "size": 4_680_000_000}]},
        ],
    },
    {
        "id": "phi-3.5-mini-instruct", "name": "Phi 3.5 mini Instruct", "format": "safetensors",
        "repo": "example/phi", "parameters": 3_821_079_552,
        "files": [{"path": "model.safetensors", "size": 7_640_000_000}],
    },
    {
        "id": "gemma-2-2b-it-gguf", "name": "Gemma 2 2B it", "format": "gguf",
        "repo": "example/gemma-gguf", "parameters": 2_614_341_888,
        "quants": [
            {"quant": "Q4_K_M", "default": True,
             "files": [{"path": "gemma-Q4_K_M.gguf", "size": 1_710_000_000}]},
        ],
    },
]


class FixedCatalog:
    """A catalog with fixed entries (snapshots must not follow ``builtin.json`` edits)."""

    def __init__(self, entries: list[CatalogEntry]) -> None:
        self._entries = entries

    def entries(self) -> list[CatalogEntry]:
        return list(self._entries)

    def get(self, entry_id: str) -> CatalogEntry | None:
        return next((e for e in self._entries if e.id == entry_id), None)


def fixed_entries() -> list[CatalogEntry]:
    """The fixed catalog entries."""
    return [entry_from_dict(e, builtin=True) for e in FIXED_ENTRIES]


def installed_record(
    model_id: str = "llama-3.1-8b-q4",
    *,
    catalog_id: str | None = "llama-3.1-8b-instruct-gguf",
    name: str = "Meta-Llama-3.1-8B-Instruct-Q4_K_M",
    size: int = 4_920_000_000,
    tokens_per_s: float | None = 41.7,
    used_ago: float | None = 3 * 3600,
) -> ModelRecord:
    """An installed model record used relative to :data:`NOW`."""
    return ModelRecord(
        id=model_id,
        name=name,
        format="gguf",
        path=f"/models/{model_id}.gguf",
        source="catalog" if catalog_id else "local",
        catalog_id=catalog_id,
        quantization="Q4_K_M",
        parameters=8_030_261_248,
        size_bytes=size,
        installed_at=NOW - 86400,
        last_used_at=None if used_ago is None else NOW - used_ago,
        tokens_per_s=tokens_per_s,
    )


def make_services(
    tmp_path: Path,
    *,
    records: Sequence[ModelRecord] = (),
    fixed_catalog: bool = True,
    **settings: Any,
) -> Services:
    """Real services on a temp state dir (real SQLite), optionally with the fixed catalog."""
    models, state = tmp_path / "models", tmp_path / "state"
    models.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    settings.setdefault("scan_hf_cache", False)
    services = build_services(Settings(models_dir=models, state_dir=state, **settings))
    # A runtime with fixed free memory (two 24 GiB cards, 20 GiB free on the first; 48 GiB
    # RAM) so the Fit column is the same on every machine.
    services.__dict__["runtime"] = RuntimeService(
        services.settings, services.inventory, memory_probe=fixed_probe()
    )
    for record in records:
        services.inventory.upsert_model(record)
    if fixed_catalog:
        services.__dict__["catalog"] = FixedCatalog(fixed_entries())
    return services


def fixed_probe(ram_free: int = 48 * GIB, vram_free: tuple[int, ...] = (20 * GIB, 23 * GIB)
                ) -> FixedMemoryProbe:
    """Fixed free RAM/VRAM for the fit checks."""
    gpus = tuple(GpuFree(i, free, 24 * GIB) for i, free in enumerate(vram_free))
    return FixedMemoryProbe(ram_free, gpus, ram_total=64 * GIB)


def make_app(
    services: Services,
    sampler: FakeSampler | None = None,
    **kwargs: Any,
) -> ModelDeckApp:
    """A deterministic app: fixed sampler, fixed now (unless ``now=`` is given), no blinking,
    no downloads watcher, no change feed, no folder watching."""
    kwargs.setdefault("watch_downloads", False)
    kwargs.setdefault("watch_changes", False)
    kwargs.setdefault("watch_folders", False)
    kwargs.setdefault("now", fixed_now)
    app = ModelDeckApp(
        services,
        sampler=sampler or two_gpu_sampler(),
        cursor_blink=False,
        **kwargs,
    )
    app.animation_level = "none"
    return app


async def wait_ready(app: ModelDeckApp, pilot: Any) -> None:
    """Wait until the rows are in the table and the first sample is shown."""
    await asyncio.wait_for(app.models_ready.wait(), 10)
    await pilot.pause()
    await wait_for(pilot, lambda: not any(
        w.group == "fit" and not w.is_finished for w in app.workers), timeout=10)
    await pilot.pause()


async def wait_for(pilot: Any, predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Pause until ``predicate()`` holds (or ``timeout`` seconds pass); its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            return False
        await pilot.pause(0.02)
    return True
