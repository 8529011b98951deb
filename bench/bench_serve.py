"""``modeldeck serve`` vs ModelDeck's in-process runtime vs ``llama_cpp.server``, same GGUF,
same settings (context, llama.cpp threads), greedy decoding.

    python bench/bench_serve.py [--reps 5] [--tokens 128] [--clients 8] [--threads 1]
                                [--only tiny|small|medium]

Needs ``llama_cpp.server``'s own dependencies (``pip install 'llama-cpp-python[server]'``:
pydantic-settings, sse-starlette, starlette-context, PyYAML).

Both servers run as subprocesses on 127.0.0.1 and are driven by the official ``openai`` client
(streaming) from this process; the in-process side is ``RuntimeService.generate`` consumed by
an asyncio task here. Two random-weight llama GGUFs: the tests' tiny one (per-token overhead
dominates: it shows the server's own cost) and a ~56M-parameter F16 one (the model of
``bench_runtime.py``).

* 1 client: tokens/s after the first token (client side: first to last text chunk) and TTFT
  (call → first text), median of ``--reps`` alternating runs; the CPU time of the serving
  process per streamed token (the in-process side: this whole process, client included).
* N clients at once (ModelDeck with ``parallel_requests = N``; ``llama_cpp.server`` answers one
  request at a time, with ``--interrupt_requests False``: by default a new request cuts off the
  one streaming, so 7 of 8 clients would get an empty answer): aggregate tokens/s = all
  tokens / wall time from the first request to the last token, p50/p99 TTFT over all rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from tui.runtime import GenParams, LoadOptions  # noqa: E402
from tui.serve.state import read_state  # noqa: E402
from tui.store import Database, Inventory  # noqa: E402

from tests.support.runtime import make_runtime, register_model  # noqa: E402
from tests.support.tiny_models import make_tiny_gguf  # noqa: E402

CTX = 1024
MODEL = "bench"


def messages(i: int = 0) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"Question {i}: tell me about the water model answer."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, limit: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


class Server:
    """A server subprocess and the model name its API takes."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], url: str, model: str) -> None:
        self.name, self.proc, self.url, self.model = name, proc, url, model

    def cpu(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_modeldeck(path: Path, tmp: Path, clients: int, threads: int) -> Server:
    state = tmp / "state"
    db = Database(state / "modeldeck.db")
    register_model(Inventory(db), MODEL, path, "gguf")
    db.close()
    env = dict(os.environ, PYTHONPATH=str(ROOT), MODELDECK_STATE_DIR=str(state),
               MODELDECK_MODELS_DIR=str(tmp / "models"), MODELDECK_KEEP_ALIVE_MINUTES="0",
               MODELDECK_PARALLEL_REQUESTS=str(clients), MODELDECK_SERVE_MAX_TOKENS="100000")
    proc = subprocess.Popen([sys.executable, "-m", "tui", "serve", "--port", "0"], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while read_state(state) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("modeldeck serve did not start")
        time.sleep(0.05)
    info = read_state(state)
    assert info is not None
    import httpx

    r = httpx.post(f"{info.url}/api/models/{MODEL}/load",
                   json={"context_length": CTX, "parallel": clients, "threads": threads},
                   timeout=300)
    r.raise_for_status()
    return Server("modeldeck serve", proc, info.url, MODEL)


def start_llama_server(path: Path, threads: int) -> Server:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--n_ctx", str(CTX),
         "--n_threads", str(threads), "--n_threads_batch", str(threads),
         "--interrupt_requests", "False",  # queue concurrent requests (its default drops them)
         "--host", "127.0.0.1", "--port", str(port), "--verbose", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v1/models")
    return Server("llama_cpp.server", proc, url, str(path))


# -- one client -------------------------------------------------------------------------------


def one_client_http(server: Server, tokens: int) -> tuple[float, float, int, float]:
    """TTFT s, tokens/s, tokens, server CPU s of one streamed answer."""
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0,
                           timeout=600)
    cpu0 = server.cpu()
    t0 = time.perf_counter()
    first = last = None
    chunks = 0
    usage = None
    stream = client.chat.completions.create(
        model=server.model, messages=messages(), temperature=0, max_tokens=tokens,
        stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            first = first or now
            last = now
            chunks += 1
    cpu = server.cpu() - cpu0
    n = usage.completion_tokens if usage is not None else chunks
    assert first is not None and last is not None
    return first - t0, (n - 1) / (last - first), n, cpu


async def one_client_here(rt: Any, tokens: int) -> tuple[float, float, int, float]:
    proc = psutil.Process()
    cpu0 = sum(proc.cpu_times()[:2])
    t0 = time.perf_counter()
    first = last = None
    n = 0
    async for item in rt.generate(MODEL, messages(), GenParams(temperature=0, max_tokens=tokens)):
        if isinstance(item, str):
            now = time.perf_counter()
            first = first or now
            last = now
        else:
            n = item.completion_tokens
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    assert first is not None and last is not None
    return first - t0, (n - 1) / (last - first), n, cpu


# -- N clients --------------------------------------------------------------------------------


async def n_clients_http(server: Server, n: int, tokens: int) -> tuple[float, list[float]]:
    import openai

    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0,
                                timeout=600)

    async def one(i: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        first = None
        count = 0
        usage = None
        stream = await client.chat.completions.create(
            model=server.model, messages=messages(i), temperature=0, max_tokens=tokens,
            stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter()
                count += 1
        assert first is not None
        return first - t0, usage.completion_tokens if usage is not None else count

    start = time.perf_counter()
    try:
        results = await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.close()
    wall = time.perf_counter() - start
    return sum(c for _, c in results) / wall, [t for t, _ in results]


async def n_clients_here(rt: Any, n: int, tokens: int) -> tuple[float, list[float]]:
    async def one(i: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        first = None
        count = 0
        async for item in rt.generate(MODEL, messages(i),
                                      GenParams(temperature=0, max_tokens=tokens)):
            if isinstance(item, str):
                first = first or time.perf_counter()
            else:
                count = item.completion_tokens
        assert first is not None
        return first - t0, count

    start = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - start
    return sum(c for _, c in results) / wall, [t for t, _ in results]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_model(label: str, path: Path, tmp: Path, reps: int, tokens: int, clients: int,
                threads: int) -> dict[str, Any]:
    size = path.stat().st_size / 1e6
    print(f"\n== {label}: {path.name}, {size:.1f} MB, context {CTX}, {tokens} tokens, "
          f"{reps} reps", flush=True)
    md = start_modeldeck(path, tmp / label, clients, threads)
    ls = start_llama_server(path, threads)
    rt = make_runtime(tmp / f"{label}-here", parallel_requests=clients)
    register_model(rt.inventory, MODEL, path, "gguf")
    loop = asyncio.new_event_loop()
    loop.run_until_complete(rt.load(MODEL, LoadOptions(context_length=CTX, parallel=clients,
                                                        threads=threads)))
    one: dict[str, list[tuple[float, float, int, float]]] = {
        "in-process": [], md.name: [], ls.name: []}
    many: dict[str, list[tuple[float, list[float]]]] = {"in-process": [], md.name: [],
                                                        ls.name: []}
    try:
        for warm in range(2):  # warm-up (first requests, page cache, prompt caches)
            loop.run_until_complete(one_client_here(rt, 16))
            one_client_http(md, 16)
            one_client_http(ls, 16)
            del warm
        for _ in range(reps):
            one["in-process"].append(loop.run_until_complete(one_client_here(rt, tokens)))
            one[md.name].append(one_client_http(md, tokens))
            one[ls.name].append(one_client_http(ls, tokens))
        for _ in range(max(1, reps // 2)):
            many["in-process"].append(loop.run_until_complete(
                n_clients_here(rt, clients, tokens)))
            many[md.name].append(asyncio.run(n_clients_http(md, clients, tokens)))
            many[ls.name].append(asyncio.run(n_clients_http(ls, clients, tokens)))
    finally:
        loop.run_until_complete(rt.aclose())
        loop.close()
        md.stop()
        ls.stop()

    out: dict[str, Any] = {"model": label, "size_mb": round(size, 1)}
    print(f"{'1 client':<18} {'tok/s':>8} {'(min-max)':>15} {'TTFT ms':>8} {'best':>6} "
          f"{'CPU us/tok':>10}")
    for side, runs in one.items():
        tps = [r[1] for r in runs]
        ttft = [r[0] * 1000 for r in runs]
        cpu = sum(r[3] for r in runs) / sum(r[2] for r in runs) * 1e6  # ticks are 10 ms
        row = {"tok_s": statistics.median(tps), "ttft_ms": statistics.median(ttft),
               "ttft_best_ms": min(ttft), "cpu_us_per_token": cpu}
        out[f"one/{side}"] = row
        print(f"{side:<18} {row['tok_s']:>8.1f} {min(tps):>7.0f}-{max(tps):<7.0f} "
              f"{row['ttft_ms']:>8.2f} {row['ttft_best_ms']:>6.2f} "
              f"{row['cpu_us_per_token']:>10.0f}")
    print(f"{clients} clients        {'agg tok/s':>9} {'p50 TTFT ms':>12} {'p99 TTFT ms':>12}")
    for side, rounds in many.items():
        agg = statistics.median(r[0] for r in rounds)
        ttfts = [t * 1000 for r in rounds for t in r[1]]
        out[f"many/{side}"] = {"agg_tok_s": agg, "p50_ttft_ms": pct(ttfts, 0.5),
                               "p99_ttft_ms": pct(ttfts, 0.99)}
        print(f"{side:<18} {agg:>9.1f} {pct(ttfts, 0.5):>12.1f} {pct(ttfts, 0.99):>12.1f}")
    here, md1, ls1 = (out[f"one/{k}"] for k in ("in-process", "modeldeck serve",
                                                   "llama_cpp.server"))
    ratios = {
        "serve/in-process tok/s": md1["tok_s"] / here["tok_s"],
        "serve/llama_cpp.server tok/s": md1["tok_s"] / ls1["tok_s"],
        "serve TTFT overhead ms (median)": md1["ttft_ms"] - here["ttft_ms"],
        "serve TTFT overhead ms (best)": md1["ttft_best_ms"] - here["ttft_best_ms"],
        "serve CPU us/token over in-process": md1["cpu_us_per_token"]
        - here["cpu_us_per_token"],
        f"{clients} clients serve/llama_cpp.server agg tok/s":
            out["many/modeldeck serve"]["agg_tok_s"] / out["many/llama_cpp.server"]["agg_tok_s"],
    }
    out["ratios"] = ratios
    for k, v in ratios.items():
        print(f"  {k}: {v:.2f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1,
                        help="llama.cpp threads, both sides (2 spinning ggml threads on a "
                        "shared 2-core box make every number swing)")
    parser.add_argument("--only", choices=("tiny", "small", "medium"),
                        help="one model; without it tiny and small (medium, ~250M F16 whose "
                        "decoding is memory-bound as a real model's is, only when asked: "
                        "try --tokens 32 --reps 3)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as name:
        tmp = Path(name)
        if args.only in (None, "tiny"):
            tiny = make_tiny_gguf(tmp / "tiny.gguf", context_length=CTX)
            results.append(bench_model("tiny", tiny, tmp, args.reps, args.tokens, args.clients,
                                       args.threads))
        if args.only == "medium":
            medium = make_tiny_gguf(
                tmp / "medium.gguf", n_embd=1024, n_layers=16, n_heads=16, n_kv_heads=8,
                n_ff=2816, extra_vocab=31000, context_length=CTX, f16=True, seed=11,
            )
            results.append(bench_model("medium", medium, tmp, args.reps, args.tokens,
                                       args.clients, args.threads))
        if args.only in (None, "small"):
            small = make_tiny_gguf(
                tmp / "small.gguf", n_embd=512, n_layers=8, n_heads=8, n_kv_heads=4, n_ff=1408,
                extra_vocab=31000, context_length=CTX, f16=True, seed=7,
            )
            results.append(bench_model("small", small, tmp, args.reps, args.tokens,
                                       args.clients, args.threads))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
