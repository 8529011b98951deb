"""Continuous batching: aggregate tokens/s of concurrent greedy answers through ModelDeck's
runtime vs a serial llama.cpp loop (what ``llama_cpp.server`` does: one request at a time on
one context).

    python bench/bench_batching.py [--reps 3] [--tokens 64] [--clients 8] [--threads 1]
                                   [--only tiny|small]

Two random-weight llama GGUFs: the tests' tiny one (~0.6 MB; per-step overhead dominates) and
a ~56M-parameter F16 one (the model of ``bench_runtime.py``).

* serial = one ``llama_cpp.Llama``, requests one after another with ``Llama.generate`` and
  per-token detokenizing (ModelDeck's in-process runtime before batching); N clients arriving
  at once are served in order, so client i's TTFT includes the i answers before it. No HTTP:
  the real ``llama_cpp.server`` only adds to its side.
* ModelDeck = ``RuntimeService.generate`` with ``parallel_requests = clients``, N asyncio
  tasks started at once; TTFT measured by each task (call → first text).

1 client: tokens/s after the first token. N clients: aggregate tokens/s = all tokens / wall
time from the first request to the last token, and p50/p99 TTFT. Sides alternate per rep;
medians are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tui.runtime import GenParams, LoadOptions  # noqa: E402
from tui.runtime.templates import render_chat  # noqa: E402

from tests.support.runtime import make_runtime  # noqa: E402
from tests.support.tiny_models import make_tiny_gguf  # noqa: E402

CTX = 512  # per answer


def messages(i: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"Question {i}: tell me about the water model answer."},
    ]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


# -- serial reference ---------------------------------------------------------------------------


def serial(llm, template: str | None, first: int, clients: int, n: int):
    """``clients`` requests served one after another; returns (tokens, wall s, TTFTs ms,
    tokens/s after the first token of the last answer)."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    t0 = time.perf_counter()
    total, ttfts, tps = 0, [], 0.0
    for i in range(first, first + clients):
        prompt = render_chat(template, messages(i), bos_token="<s>")
        tokens = llm.tokenize(prompt.encode(), add_bos=not prompt.startswith("<s>"), special=True)
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        count, t_first, end = 0, None, t0
        for tok in llm.generate(tokens, temp=0, top_p=0.95, top_k=40, min_p=0.05):
            if llama_cpp.llama_vocab_is_eog(vocab, tok):
                break
            count += 1
            if dec.decode(llm.detokenize([tok])):
                end = time.perf_counter()
                if t_first is None:
                    t_first = end
                    ttfts.append((end - t0) * 1000)
            if count >= n:
                break
        total += count
        if t_first is not None and end > t_first:
            tps = (count - 1) / (end - t_first)
    return total, time.perf_counter() - t0, ttfts, tps


# -- ModelDeck ----------------------------------------------------------------------------------


async def concurrent(runtime, ref: str, first: int, clients: int, n: int):
    """``clients`` requests at once; same returns as :func:`serial`."""
    t0 = time.perf_counter()
    params = GenParams(temperature=0, max_tokens=n)

    async def one(i: int) -> tuple[int, float | None, float, float]:
        t_first, end, count = None, t0, 0
        async for item in runtime.generate(ref, messages(i), params):
            if isinstance(item, str):
                end = time.perf_counter()
                if t_first is None:
                    t_first = end
            else:
                count = item.completion_tokens
        return count, t_first, end, 0.0

    results = await asyncio.gather(*(one(i) for i in range(first, first + clients)))
    wall = time.perf_counter() - t0
    ttfts = [(f - t0) * 1000 for _, f, _, _ in results if f is not None]
    count, t_first, end, _ = results[-1]
    tps = (count - 1) / (end - t_first) if t_first is not None and end > t_first else 0.0
    return sum(r[0] for r in results), wall, ttfts, tps


# -- one model ----------------------------------------------------------------------------------


def bench_model(label: str, path: Path, tmp: Path, reps: int, n: int, clients: int,
                threads: int) -> list[tuple[str, dict[str, float]]]:
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=CTX, n_threads=threads, n_threads_batch=threads,
                verbose=False)
    template = llm.metadata.get("tokenizer.chat_template")
    runtime = make_runtime(tmp / f"rt-{label}", parallel_requests=clients)
    rows: dict[str, list[tuple[float, ...]]] = {k: [] for k in ("s1", "m1", "sN", "mN")}

    async def run() -> None:
        await runtime.load(str(path), LoadOptions(context_length=CTX, threads=threads))
        serial(llm, template, 10_000, 1, 16)  # warm-up both
        await concurrent(runtime, str(path), 10_000, 2, 16)
        for rep in range(reps):
            base = rep * 100
            order = ("s", "m") if rep % 2 == 0 else ("m", "s")
            for side in order:
                for k, first in ((1, base), (clients, base + 50)):
                    if side == "s":
                        result = serial(llm, template, first, k, n)
                    else:
                        result = await concurrent(runtime, str(path), first, k, n)
                    rows[f"{side}{'1' if k == 1 else 'N'}"].append(result)
        await runtime.aclose()

    asyncio.run(run())
    llm.close()
    med = statistics.median
    out = []
    for key, name in (("s1", "serial Llama.generate"), ("m1", "ModelDeck"),
                      ("sN", "serial Llama.generate"), ("mN", "ModelDeck")):
        runs = rows[key]
        k = 1 if key.endswith("1") else clients
        out.append((f"{label}: {name}, {k} client{'s' if k > 1 else ''}", {
            "agg": med(tokens / wall for tokens, wall, _, _ in runs),
            "tps1": med(r[3] for r in runs),
            "p50": med(percentile(r[2], 0.5) for r in runs),
            "p99": med(percentile(r[2], 0.99) for r in runs),
        }))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=("tiny", "small"))
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="modeldeck-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.only != "small":
            tiny = make_tiny_gguf(tmp / "tiny.gguf", context_length=CTX)
            rows += bench_model("tiny", tiny, tmp, args.reps, args.tokens, args.clients,
                                args.threads)
        if args.only != "tiny":
            small = make_tiny_gguf(
                tmp / "small.gguf", n_embd=512, n_layers=8, n_heads=8, n_kv_heads=4, n_ff=1408,
                extra_vocab=31000, context_length=CTX, f16=True, seed=7,
            )
            rows += bench_model("small", small, tmp, args.reps, args.tokens, args.clients,
                                args.threads)
    print(f"{'path':48} {'agg tok/s':>10} {'tok/s 1 stream':>15} {'TTFT p50':>9} "
          f"{'p99 ms':>7}")
    for name, r in rows:
        print(f"{name:48} {r['agg']:10.1f} {r['tps1']:15.1f} {r['p50']:9.1f} {r['p99']:7.1f}")
    print()
    for i in range(0, len(rows), 4):
        s1, m1, sn, mn = (r for _, r in rows[i:i + 4])
        label = rows[i][0].split(":")[0]
        print(f"{label:6} {args.clients} clients: ModelDeck/serial aggregate tokens/s "
              f"{mn['agg'] / sn['agg']:.2f}x; 1 client: tokens/s {m1['tps1'] / s1['tps1']:.2f}x")
    print(f"(reps={args.reps}, tokens={args.tokens}, threads={args.threads}, ctx={CTX} per "
          f"answer, total {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
