"""Resource sidebar (CPU, RAM, GPUs, own VRAM, disk) and its one-line compact form."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Sparkline

from tui.app.messages import ResourcesSampled
from tui.app.views import ascii_sparkline, format_size, percent, text_bar
from tui.app.widgets.line import Line
from tui.resources.types import STATUS_OK, GpuReading, Snapshot

BAR_WIDTH = 8
SPARK_WIDTH = 24


class SamplerLike(Protocol):
    """What the sidebar needs from :class:`~tui.resources.ResourceSampler` (fakes in tests)."""

    interval: float

    async def run(self, callback: Callable[[Snapshot], object]) -> None: ...

    def history_of(self, name: str) -> list[float]: ...


LOW_REDRAW_INTERVAL = 3.0  # seconds between samples at least, with ``low_redraw``


def _pct(fraction: float | None) -> str:
    return "  ?%" if fraction is None else f"{fraction * 100:3.0f}%"


class Spark(Vertical):
    """A history line: Textual ``Sparkline``, or ASCII characters in plain mode."""

    def __init__(self, ascii: bool, classes: str = "") -> None:
        super().__init__(classes=f"spark {classes}".strip())
        self.ascii = ascii
        self._spark = Sparkline([], classes="spark-line")
        self._text = Line("", classes="spark-text")

    def compose(self) -> ComposeResult:
        yield self._text if self.ascii else self._spark

    def set_data(self, values: Sequence[float]) -> None:
        """Show the last values (percent, 0-100)."""
        tail = list(values)[-SPARK_WIDTH:]
        if self.ascii:
            self._text.set(ascii_sparkline(tail, SPARK_WIDTH))
        else:
            self._spark.data = tail or [0.0]


class GpuBox(Vertical):
    """One GPU: name, VRAM bar, util bar + history, temperature, power."""

    def __init__(self, index: int, ascii: bool) -> None:
        super().__init__(classes="gpu-box")
        self.index = index
        self.ascii = ascii
        self._title = Line("", classes="gpu-title")
        self._mem = Line("", classes="gpu-mem")
        self._util = Line("", classes="gpu-util")
        self._spark = Spark(ascii, classes="gpu-spark")
        self._misc = Line("", classes="gpu-misc")

    def compose(self) -> ComposeResult:
        yield self._title
        yield self._mem
        yield self._util
        yield self._spark
        yield self._misc

    def show(self, gpu: GpuReading, history: Sequence[float]) -> None:
        """Update from a reading."""
        self._title.set(f"GPU{gpu.index} {gpu.name or ''}".rstrip())
        mem = percent(gpu.mem_used, gpu.mem_total)
        self._mem.set(
            f"VRAM {text_bar(mem, BAR_WIDTH, self.ascii)} "
            f"{format_size(gpu.mem_used) or '?'}/{format_size(gpu.mem_total) or '?'}"
        )
        util = None if gpu.util_percent is None else gpu.util_percent / 100
        self._util.set(f"util {text_bar(util, BAR_WIDTH, self.ascii)} {_pct(util)}")
        self._spark.set_data(history)
        temp = "?" if gpu.temperature_c is None else f"{gpu.temperature_c}C"
        power = "?" if gpu.power_w is None else f"{gpu.power_w:.0f}W"
        if gpu.power_limit_w:
            power += f"/{gpu.power_limit_w:.0f}W"
        self._misc.set(f"temp {temp}  power {power}")
        self.set_class(bool(util is not None and util > 0.9), "-busy")
        self.set_class(bool(mem is not None and mem > 0.9), "-full")


class ResourceSidebar(VerticalScroll):
    """Resources, fed by its own sampler worker (:meth:`follow`). With ``low_redraw`` the
    samples are at least :data:`LOW_REDRAW_INTERVAL` apart and the history lines stand still
    (hidden: each sample would redraw them whole)."""

    def __init__(
        self, *, ascii: bool = False, low_redraw: bool = False, id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.ascii = ascii
        self.low_redraw = low_redraw
        self.border_title = "Resources"
        self._cpu = Line("CPU  waiting for first sample", id="res-cpu")
        self._cpu_spark = Spark(ascii)
        self._ram = Line("", id="res-ram")
        self._ram_spark = Spark(ascii)
        self._gpus = Vertical(id="res-gpus")
        self._gpu_status = Line("", id="res-gpu-status")
        self._own = Line("", id="res-own")
        self._disk = Line("", id="res-disk")
        self._disk_bar = Line("", id="res-disk-bar")
        self._disk_warn = Line("", id="res-disk-warn", classes="-low")
        self._disk_warn.display = False
        self._boxes: list[GpuBox] = []

    def compose(self) -> ComposeResult:
        yield self._cpu
        yield self._cpu_spark
        yield self._ram
        yield self._ram_spark
        yield self._gpu_status
        yield self._gpus
        yield self._own
        yield self._disk
        yield self._disk_bar
        yield self._disk_warn

    @work(exclusive=True, group="sampler", exit_on_error=False)
    async def follow(self, make_sampler: Callable[[], SamplerLike]) -> None:
        """Run the sampler ``make_sampler`` builds (in a thread: the real one imports psutil
        and probes NVML); each snapshot is posted as :class:`ResourcesSampled`, shown here and
        bubbled on (the App feeds the one-line form)."""
        sampler = await asyncio.to_thread(make_sampler)
        if self.low_redraw:
            sampler.interval = max(sampler.interval, LOW_REDRAW_INTERVAL)

        def report(snapshot: Snapshot) -> None:
            names = ["cpu", "ram", *(f"gpu{g.index}.util" for g in snapshot.gpus)]
            history = {name: sampler.history_of(name) for name in names}
            self.post_message(ResourcesSampled(snapshot, history))

        await sampler.run(report)

    @on(ResourcesSampled)
    def _sampled(self, message: ResourcesSampled) -> None:
        self.update_snapshot(message.snapshot, message.history)

    def show_disk_warning(self, text: str | None) -> None:
        """The low-disk warning under the disk lines (None hides it)."""
        self._disk_warn.display = text is not None
        if text is not None:
            self._disk_warn.set(text)

    def gpu_boxes(self) -> list[GpuBox]:
        """The per-GPU widgets, in index order."""
        return list(self._boxes)

    def update_snapshot(self, snap: Snapshot, history: Mapping[str, Sequence[float]]) -> None:
        """Show a snapshot; GPU boxes are created once and then updated in place."""
        cpu = snap.cpu_percent / 100
        self._cpu.set(f"CPU  {text_bar(cpu, BAR_WIDTH, self.ascii)} {_pct(cpu)}")
        if self.low_redraw:
            history = {}
        self._cpu_spark.set_data(history.get("cpu", ()))
        ram = percent(snap.ram_used, snap.ram_total)
        self._ram.set(
            f"RAM  {text_bar(ram, BAR_WIDTH, self.ascii)} "
            f"{format_size(snap.ram_used)}/{format_size(snap.ram_total)}"
        )
        self._ram_spark.set_data(history.get("ram", ()))

        if len(self._boxes) != len(snap.gpus):
            for box in self._boxes:
                box.remove()
            self._boxes = [GpuBox(g.index, self.ascii) for g in snap.gpus]
            if self._boxes:
                self._gpus.mount(*self._boxes)
        for box, gpu in zip(self._boxes, snap.gpus, strict=True):
            box.show(gpu, history.get(f"gpu{gpu.index}.util", ()))
        if snap.gpus and snap.gpu_status == STATUS_OK:
            self._gpu_status.display = False
        else:
            self._gpu_status.display = True
            self._gpu_status.set(snap.gpu_status if snap.gpu_status != STATUS_OK else "no GPU")

        if snap.own_vram is None:
            self._own.set("ModelDeck VRAM  -" if not snap.gpus else "ModelDeck VRAM  ?")
        else:
            self._own.set(f"ModelDeck VRAM  {format_size(snap.own_vram) or '0B'}")
        disk = snap.disks[0] if snap.disks else None
        if disk is None:
            self._disk.set("Disk  ?")
        else:
            used = percent(disk.used, disk.total)
            self._disk.set(f"Disk {format_size(disk.free)} free / {format_size(disk.total)}")
            self._disk_bar.set(f"     {text_bar(used, BAR_WIDTH, self.ascii)} {_pct(used)} used")
            self._disk.set_class(bool(disk.total and disk.free / disk.total < 0.1), "-low")


def compact_line(snap: Snapshot) -> str:
    """One line for narrow terminals: ``CPU 12% RAM 8.0G/16G GPU0 4.1G/24G 55% disk 120G free``."""
    parts = [
        f"CPU {snap.cpu_percent:.0f}%",
        f"RAM {format_size(snap.ram_used)}/{format_size(snap.ram_total)}",
    ]
    for gpu in snap.gpus:
        util = "" if gpu.util_percent is None else f" {gpu.util_percent}%"
        parts.append(
            f"GPU{gpu.index} {format_size(gpu.mem_used) or '?'}/"
            f"{format_size(gpu.mem_total) or '?'}{util}"
        )
    if not snap.gpus:
        parts.append("no GPU")
    if snap.disks:
        parts.append(f"disk {format_size(snap.disks[0].free)} free")
    return "  ".join(parts)


class ResourceLine(Line):
    """The sidebar collapsed to one line (shown on narrow terminals)."""

    def update_snapshot(self, snap: Snapshot) -> None:
        """Show a snapshot on one line."""
        self.set(compact_line(snap))
