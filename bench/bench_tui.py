"""Dashboard benchmarks.

(a) start-to-first-frame: ``ModelDeckApp`` showing 1,000 installed models (real SQLite) versus
    a bare Textual app with the same widgets and 1,000 rows. Each run is a fresh subprocess
    with Textual's headless driver, timed from interpreter start-up work (before the first
    import) to the first refresh after the rows are in the table. Target ratio <= 1.2x. Also
    checks that no torch / transformers / llama_cpp module is loaded at that point.
(b) filter-as-you-type over 10,000 rows: per keystroke, the filter handler (select the rows,
    size the list) and key-to-idle through Pilot (minus a no-op key's cost). Targets: handler
    and key-to-idle <= 50 ms, CPU per key <= 30 ms.

(c) with ``--download SIZE`` (e.g. ``1G``): the UI's CPU cost while a download runs at full
    speed. nginx on 127.0.0.1 serves a random file; ``modeldeck pull URL --sha256 …`` (CLI) and
    ``ModelDeckApp`` headless (the same URL job enqueued on its download service, the panel
    and the table following it, sampler running) each download it; the CPU time of each
    process over the download (after start-up) is compared. The difference divided by the
    download's wall time is the UI's cost in % of one core. Target <= 5%. Needs nginx.
    The transfer's worker threads (receive, hash, flush) are the same code in both and their
    CPU varies by several tenths of a second run to run, so the verdict uses the main
    threads' CPU (``time.thread_time``: the event loop — download service, progress events,
    and in the app Textual); whole-process figures are printed too.

Run: ``python bench/bench_tui.py [--runs N] [--download 1G] [--only-filter]``. Prints a table;
exits 1 if a target is missed (``--no-fail`` to only report).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "llama_cpp")
ROWS_START = 1_000
ROWS_FILTER = 10_000

_CHILD_MODELDECK = textwrap.dedent(
    """
    import time
    T0, C0 = time.perf_counter(), time.process_time()
    import json, sys
    from pathlib import Path
    from tui.services import build_services
    from tui.settings import Settings
    from tui.app.app import ModelDeckApp

    state = Path(sys.argv[1])
    services = build_services(Settings(models_dir=state / "models", state_dir=state))
    app = ModelDeckApp(services)
    out = {}

    async def pilot(p):
        await app.models_ready.wait()
        def done():
            out["first_frame_s"] = time.perf_counter() - T0
            out["cpu_s"] = time.process_time() - C0
            out["rows"] = app.model_table.row_count
            out["shown"] = len(app.model_table.visible_keys)
            out["heavy"] = [m for m in HEAVY if m in sys.modules]
            app.exit()
        app.call_after_refresh(done)

    HEAVY = ("torch", "transformers", "llama_cpp")
    app.run(headless=True, size=(120, 40), auto_pilot=pilot)
    print(json.dumps(out))
    """
)

_CHILD_BARE = textwrap.dedent(
    """
    import time
    T0, C0 = time.perf_counter(), time.process_time()
    import json, sys
    from textual.app import App
    from textual.containers import Horizontal, Vertical, VerticalScroll
    from textual.widgets import DataTable, Footer, Input, Log, ProgressBar, Sparkline, Static

    N = int(sys.argv[1])

    class Bare(App):
        CSS = "#side { width: 30; } #dl { height: 4; } #log { height: 6; }"

        def compose(self):
            with Horizontal():
                with Vertical():
                    yield Input(id="filter")
                    yield DataTable(id="t", cursor_type="row")
                    with Vertical(id="dl"):
                        yield ProgressBar(total=100)
                    yield Log(id="log")
                with VerticalScroll(id="side"):
                    for _ in range(6):
                        yield Static("CPU 23%")
                        yield Sparkline([1, 2, 3])
            yield Footer()

        def on_mount(self):
            t = self.query_one(DataTable)
            t.add_columns("Status", "Name", "Fmt", "Quant", "Params", "Size", "Fit", "tok/s",
                          "Used")
            for i in range(N):
                t.add_row("installed", f"model-{i}", "gguf", "Q4_K_M", "8.0B", "4.6G", "",
                          "41.7", "3h ago", key=str(i))

    app = Bare()
    out = {}

    async def pilot(p):
        def done():
            out["first_frame_s"] = time.perf_counter() - T0
            out["cpu_s"] = time.process_time() - C0
            out["rows"] = app.query_one(DataTable).row_count
            app.exit()
        app.call_after_refresh(done)

    app.run(headless=True, size=(120, 40), auto_pilot=pilot)
    print(json.dumps(out))
    """
)


def _prepare_state(root: Path, n: int) -> None:
    """An inventory with ``n`` installed models (not timed)."""
    sys.path.insert(0, str(REPO))
    from tui.store import Database, Inventory, ModelRecord

    db = Database(root / "modeldeck.db")
    inventory = Inventory(db)
    inventory.upsert_models(
        ModelRecord(
            id=f"m{i}", name=f"model-{i}", format="gguf", path=f"/models/m{i}.gguf",
            source="local", quantization="Q4_K_M", parameters=8_000_000_000,
            size_bytes=4_900_000_000, installed_at=1.0,
        )
        for i in range(n)
    )
    db.close()


def _run_child(code: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), TEXTUAL_ANIMATIONS="none")
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
        cwd=REPO, timeout=120, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_startup(runs: int) -> dict:
    """Median first-frame times of both apps, interleaved to share the machine's noise."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        (state / "models").mkdir()
        _prepare_state(state, ROWS_START)
        ours, bare, ours_cpu, bare_cpu, heavy, rows = [], [], [], [], set(), 0
        for _ in range(runs):
            b = _run_child(_CHILD_BARE, str(ROWS_START))
            m = _run_child(_CHILD_MODELDECK, str(state))
            bare.append(b["first_frame_s"])
            bare_cpu.append(b["cpu_s"])
            ours.append(m["first_frame_s"])
            ours_cpu.append(m["cpu_s"])
            heavy.update(m["heavy"])
            rows = m["shown"]
    med = statistics.median
    return {
        "modeldeck_s": med(ours),
        "bare_s": med(bare),
        "modeldeck_min_s": min(ours),
        "bare_min_s": min(bare),
        "modeldeck_cpu_s": med(ours_cpu),
        "bare_cpu_s": med(bare_cpu),
        "ratio": med(ours) / med(bare),
        "ratio_min": min(ours) / min(bare),
        "ratio_cpu": med(ours_cpu) / med(bare_cpu),
        "heavy": sorted(heavy),
        "rows": rows,
    }


async def _filter_bench(query: str) -> dict:
    sys.path.insert(0, str(REPO))
    from tui.catalog import entry_from_dict

    from tests.support.app import make_app, make_services, wait_ready

    families = ["llama-3.1", "qwen2.5", "mistral", "gemma-2", "phi-3.5", "deepseek", "yi", "olmo"]
    entries = [
        entry_from_dict(
            {
                "id": f"{families[i % 8]}-{i}", "name": f"{families[i % 8]} {i % 70}b v{i}",
                "format": "gguf", "parameters": (i % 70 + 1) * 1_000_000_000,
                "quants": [{"quant": q, "default": q == "Q4_K_M",
                            "files": [{"path": f"m{i}-{q}.gguf", "size": 1_000_000 * i + 1}]}
                           for q in ("Q4_K_M", "Q8_0")],
            },
            builtin=True,
        )
        for i in range(ROWS_FILTER)
    ]

    class _Catalog:
        def entries(self) -> list:
            return entries

    with tempfile.TemporaryDirectory() as tmp:
        services = make_services(Path(tmp))
        services.__dict__["catalog"] = _Catalog()
        app = make_app(services)
        handler_ms: list[float] = []
        press_ms: list[float] = []
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_ready(app, pilot)
            table = app.model_table
            assert len(table.all_rows) == ROWS_FILTER
            rebuild = table._rebuild

            def timed_rebuild() -> None:
                start = time.perf_counter()
                rebuild()
                handler_ms.append((time.perf_counter() - start) * 1000)

            table._rebuild = timed_rebuild  # type: ignore[method-assign]
            await pilot.press("slash")
            baseline, baseline_cpu, press_cpu = [], [], []
            for _ in range(5):
                start, cpu = time.perf_counter(), time.process_time()
                await pilot.press("left")
                baseline.append((time.perf_counter() - start) * 1000)
                baseline_cpu.append((time.process_time() - cpu) * 1000)
            keys = [*query, *["backspace"] * len(query)]
            shown = []
            for key in keys:
                start, cpu = time.perf_counter(), time.process_time()
                await pilot.press(key)
                press_ms.append((time.perf_counter() - start) * 1000)
                press_cpu.append((time.process_time() - cpu) * 1000)
                shown.append(len(table.visible_keys))
        services.close()
    base = statistics.median(baseline)
    return {
        "keystrokes": len(keys),
        "handler_median_ms": statistics.median(handler_ms),
        "handler_max_ms": max(handler_ms),
        "press_median_ms": statistics.median(press_ms),
        "press_max_ms": max(press_ms),
        "noop_press_ms": base,
        "net_median_ms": max(0.0, statistics.median(press_ms) - base),
        "cpu_median_ms": statistics.median(press_cpu),
        "cpu_max_ms": max(press_cpu),
        "noop_cpu_ms": statistics.median(baseline_cpu),
        "net_cpu_ms": max(0.0, statistics.median(press_cpu) - statistics.median(baseline_cpu)),
        "matches": shown[: len(query)],
    }


async def _bare_filter_bench(query: str) -> dict:
    """The stock way, as a reference: Input + DataTable, filter a list, clear, add_row the
    first 400 matches, per keystroke."""
    from textual import on
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable, Input

    families = ["llama-3.1", "qwen2.5", "mistral", "gemma-2", "phi-3.5", "deepseek", "yi", "olmo"]
    data = [
        (f"{families[i % 8]} {i % 70}b v{i}", "available", "gguf", "Q4_K_M", "8.0B", "4.6G", "",
         "", "")
        for i in range(ROWS_FILTER)
    ]

    class Bare(App[None]):
        def compose(self) -> ComposeResult:
            yield Input(id="f")
            yield DataTable(id="t", cursor_type="row", zebra_stripes=True)

        def on_mount(self) -> None:
            table = self.query_one(DataTable)
            table.add_columns("Name", "Status", "Fmt", "Quant", "Params", "Size", "Fit",
                              "tok/s", "Used")
            self.show("")

        def show(self, text: str) -> None:
            words = text.lower().split()
            rows = [r for r in data if all(w in r[0] for w in words)]
            table = self.query_one(DataTable)
            table.clear()
            for i, row in enumerate(rows[:400]):
                table.add_row(*row, key=str(i))

        @on(Input.Changed)
        def changed(self, event: Input.Changed) -> None:
            self.show(event.value)

    app = Bare()
    cpu_ms: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        base = []
        for _ in range(5):
            cpu = time.process_time()
            await pilot.press("left")
            base.append((time.process_time() - cpu) * 1000)
        for key in [*query, *["backspace"] * len(query)]:
            cpu = time.process_time()
            await pilot.press(key)
            cpu_ms.append((time.process_time() - cpu) * 1000)
    return {
        "cpu_median_ms": statistics.median(cpu_ms),
        "net_cpu_ms": max(0.0, statistics.median(cpu_ms) - statistics.median(base)),
    }


_CHILD_CLI_PULL = textwrap.dedent(
    """
    import json, sys, time
    from tui.cli import main
    import tui.cli.download_cmds, tui.download.service  # imports are start-up, not download
    url, sha, out = sys.argv[1:4]
    c0, m0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
    rc = main(["pull", url, "--sha256", sha])
    result = {"cpu_s": time.process_time() - c0, "main_cpu_s": time.thread_time() - m0,
              "wall_s": time.perf_counter() - t0, "rc": rc}
    open(out, "w").write(json.dumps(result))
    """
)

_CHILD_APP_PULL = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from pathlib import Path
    from tui.services import build_services
    from tui.settings import Settings
    from tui.app.app import ModelDeckApp
    from tui.download.sources import JobSpec

    state, url, sha, out = Path(sys.argv[1]), *sys.argv[2:5]
    services = build_services(Settings(models_dir=state / "models", state_dir=state,
                                       scan_hf_cache=False))
    app = ModelDeckApp(services)
    result = {}

    async def run():
        async with app.run_test(size=(120, 40)) as pilot:
            await app.models_ready.wait()
            await pilot.pause(1.5)  # start-up settles: sampler, fit column, download service
            c0, m0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
            job = services.downloads.enqueue(JobSpec(kind="url", url=url, sha256=sha))
            while True:
                view = app.downloads_panel.jobs.get(job)
                if view is not None and view.state in ("done", "failed"):
                    break
                await asyncio.sleep(0.05)
            result.update(cpu_s=time.process_time() - c0, main_cpu_s=time.thread_time() - m0,
                          wall_s=time.perf_counter() - t0, state=view.state, error=view.error)
            app.exit()

    asyncio.run(run())
    open(out, "w").write(json.dumps(result))
    """
)


def bench_download_cpu(size_text: str, runs: int) -> dict:
    """(c): CPU of ``modeldeck pull`` vs the headless app downloading the same file."""
    if shutil.which("nginx") is None:
        raise SystemExit("--download needs nginx (apt-get install -y nginx)")
    sys.path.insert(0, str(REPO / "bench"))
    import bench_download as bd  # nginx helpers shared with the download benchmark

    size = bd.parse_size(size_text)
    work = Path(tempfile.gettempdir()) / "modeldeck-bench-tui"
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    # A GGUF header (v3, no tensors, no keys) then random bytes.
    sha = bd.make_file(data / "big.gguf", size, prefix=b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    port, spare = bd.free_port(), bd.free_port()
    conf = bd.nginx_conf(work / "nginx", data, "big.gguf", sha, spare, port)
    url = f"http://127.0.0.1:{port}/files/big.gguf"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cli: list[dict] = []
    app: list[dict] = []
    with bd.run_nginx(work / "nginx", conf, [port, spare]):
        for i in range(runs):
            for kind in ("cli", "app"):
                state = work / f"state-{kind}-{i}"
                shutil.rmtree(state, ignore_errors=True)
                state.mkdir(parents=True)
                out = state / "result.json"
                if kind == "cli":
                    code, args = _CHILD_CLI_PULL, [url, sha, str(out)]
                    child_env = {**env, "MODELDECK_STATE_DIR": str(state),
                                 "MODELDECK_MODELS_DIR": str(state / "models"),
                                 "MODELDECK_SCAN_HF_CACHE": "0"}
                else:
                    code, args = _CHILD_APP_PULL, [str(state), url, sha, str(out)]
                    child_env = env
                subprocess.run([sys.executable, "-c", code, *args], env=child_env, check=True,
                               stdout=subprocess.DEVNULL, timeout=900)
                result = json.loads(out.read_text())
                (cli if kind == "cli" else app).append(result)
                shutil.rmtree(state, ignore_errors=True)
    med = statistics.median
    cli_cpu, app_cpu = med(r["cpu_s"] for r in cli), med(r["cpu_s"] for r in app)
    cli_main, app_main = med(r["main_cpu_s"] for r in cli), med(r["main_cpu_s"] for r in app)
    app_wall = med(r["wall_s"] for r in app)
    return {
        "cli_main_s": cli_main,
        "app_main_s": app_main,
        "ui_main_pct": max(0.0, app_main - cli_main) / app_wall * 100,
        "size": size,
        "cli_cpu_s": cli_cpu,
        "cli_wall_s": med(r["wall_s"] for r in cli),
        "app_cpu_s": app_cpu,
        "app_wall_s": app_wall,
        "ui_pct": max(0.0, app_cpu - cli_cpu) / app_wall * 100,
        "states": [r.get("state") for r in app] + [f"rc={r['rc']}" for r in cli],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="start-up runs per app (median)")
    parser.add_argument("--query", default="llama 3 q4", help="text typed into the filter")
    parser.add_argument("--no-fail", action="store_true", help="report only")
    parser.add_argument("--download", metavar="SIZE",
                        help="also measure the UI's CPU cost during a download of SIZE (1G)")
    parser.add_argument("--download-runs", type=int, default=2, help="runs per side (median)")
    parser.add_argument("--only-download", action="store_true", help="skip (a) and (b)")
    parser.add_argument("--only-filter", action="store_true", help="only (b)")
    args = parser.parse_args()
    if args.only_download:
        if not args.download:
            parser.error("--only-download needs --download SIZE")
        return _report_download(bench_download_cpu(args.download, args.download_runs),
                                args.no_fail)

    if args.only_filter:
        filt = asyncio.run(_filter_bench(args.query))
        bare_filt = asyncio.run(_bare_filter_bench(args.query))
        _print_rows(_filter_rows(filt, bare_filt))
        return 0 if _filter_ok(filt) or args.no_fail else 1

    start = bench_startup(args.runs)
    filt = asyncio.run(_filter_bench(args.query))
    bare_filt = asyncio.run(_bare_filter_bench(args.query))

    ms = "{:.0f} ms".format
    rows = [
        ("first frame wall, ModelDeckApp, median / best",
         f"{ms(start['modeldeck_s'] * 1000)} / {ms(start['modeldeck_min_s'] * 1000)}", ""),
        ("first frame wall, bare Textual app, median / best",
         f"{ms(start['bare_s'] * 1000)} / {ms(start['bare_min_s'] * 1000)}", ""),
        ("first frame CPU, ModelDeckApp / bare (median)",
         f"{ms(start['modeldeck_cpu_s'] * 1000)} / {ms(start['bare_cpu_s'] * 1000)}", ""),
        ("ratio wall median / wall best / CPU median",
         f"{start['ratio']:.2f}x / {start['ratio_min']:.2f}x / {start['ratio_cpu']:.2f}x",
         "<= 1.20x"),
        ("heavy modules at first frame", ", ".join(start["heavy"]) or "none", "none"),
        *_filter_rows(filt, bare_filt),
    ]
    _print_rows(rows)

    ok = (
        min(start["ratio"], start["ratio_cpu"]) <= 1.2
        and not start["heavy"]
        and _filter_ok(filt)
    )
    if start["heavy"]:
        print(f"FAIL: heavy modules imported at start: {start['heavy']}")
    if args.download:
        print()
        ok = _report_download(bench_download_cpu(args.download, args.download_runs), True) == 0 \
            and ok
    return 0 if ok or args.no_fail else 1


def _filter_ok(filt: dict) -> bool:
    """(b)'s targets: handler and key-to-idle <= 50 ms, CPU per key <= 30 ms."""
    return (
        filt["handler_median_ms"] <= 50
        and min(filt["net_median_ms"], filt["net_cpu_ms"]) <= 50
        and filt["cpu_median_ms"] <= 30
    )


def _filter_rows(filt: dict, bare_filt: dict) -> list[tuple[str, str, str]]:
    """(b)'s lines of the report."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [
        (f"filter handler, median of {filt['keystrokes']} keys (10,000 rows)",
         f"{filt['handler_median_ms']:.1f} ms", "<= 50 ms"),
        ("filter handler, worst key", f"{filt['handler_max_ms']:.1f} ms", ""),
        ("key to idle via Pilot, median / worst", f"{filt['press_median_ms']:.1f} / "
         f"{filt['press_max_ms']:.1f} ms", ""),
        ("no-op key via Pilot (baseline)", f"{filt['noop_press_ms']:.1f} ms", ""),
        ("key to idle minus baseline, median", f"{filt['net_median_ms']:.1f} ms", "<= 50 ms"),
        ("CPU per key via Pilot, median / worst / no-op key",
         f"{filt['cpu_median_ms']:.1f} / {filt['cpu_max_ms']:.1f} / {filt['noop_cpu_ms']:.1f} ms",
         "<= 30 ms (median)"),
        ("CPU per key minus no-op key, median", f"{filt['net_cpu_ms']:.1f} ms", "<= 50 ms"),
        ("same, stock DataTable (clear + add_row 400), median",
         f"{bare_filt['net_cpu_ms']:.1f} ms", "reference"),
        ("matches while typing", " ".join(str(m) for m in filt["matches"]), ""),
        ("load average (1 min) during run", f"{load:.2f}", f"cores: {os.cpu_count()}"),
    ]


def _print_rows(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>{vwidth}}  target")
    print(f"{'-' * width}  {'-' * vwidth}  ------")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>{vwidth}}  {target}")


def _report_download(d: dict, no_fail: bool) -> int:
    """Print (c); 1 when the UI costs more than 5% of a core (unless ``no_fail``)."""
    mib = d["size"] / (1 << 20)
    rows = [
        (f"download {mib:.0f} MiB, modeldeck pull: CPU / wall",
         f"{d['cli_cpu_s']:.2f} s / {d['cli_wall_s']:.2f} s", ""),
        (f"download {mib:.0f} MiB, ModelDeckApp headless: CPU / wall",
         f"{d['app_cpu_s']:.2f} s / {d['app_wall_s']:.2f} s", ""),
        ("main (event-loop) thread CPU: modeldeck pull / app",
         f"{d['cli_main_s']:.2f} s / {d['app_main_s']:.2f} s", ""),
        ("UI CPU cost, main threads (app - pull) / wall, % of one core",
         f"{d['ui_main_pct']:.1f}%", "<= 5%"),
        ("UI CPU cost, whole processes (app - pull) / wall",
         f"{d['ui_pct']:.1f}%", "noisy: transfer threads' CPU varies run to run"),
        ("results", " ".join(str(s) for s in d["states"]), ""),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>{vwidth}}  {target}")
    return 0 if d["ui_main_pct"] <= 5 or no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
