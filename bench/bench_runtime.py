"""ModelDeck runtime vs raw library loops, same machine, same model, same settings.

    python bench/bench_runtime.py [--reps 7] [--tokens 128] [--threads N] [--skip-transformers]

* llama.cpp: a ~56M-parameter random llama GGUF (F16). Raw = ``Llama.generate`` with per-token
  detokenization (the fastest Python loop; ``create_completion(stream=True)`` is shown too).
  ModelDeck = ``RuntimeService.generate`` consumed by an asyncio task.
* transformers: a ~24M-parameter random Llama folder (same layer shapes, small vocab), fp32.
  Raw = ``model.generate`` in a thread with a ``TextIteratorStreamer``; ModelDeck =
  ``RuntimeService.generate``.

Greedy decoding, fixed prompts; raw and ModelDeck runs alternate and the median is reported
(with the min-max spread of tokens/s, since other processes on the box move the numbers);
TTFT is shown as median and best (the best run is the least disturbed one). tok/CPU-s is
tokens over the process CPU time of the whole call (all threads), the steadier measure of
overhead on a busy machine.
``--threads`` defaults to 1: on a shared 2-core box, 2 ggml threads plus anything else running
oversubscribe the cores and ggml's spinning barrier makes every number swing by 2-5x.
tokens/s counts tokens after the first one over the time from the first to the last text the
consumer receives; TTFT is measured by the consumer (from the call to the first text).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tui.runtime import GenParams, LoadOptions  # noqa: E402
from tui.runtime.templates import render_chat  # noqa: E402

from tests.support.runtime import make_runtime  # noqa: E402
from tests.support.tiny_models import make_tiny_gguf, make_tiny_transformers  # noqa: E402

CTX = 1024


def messages(i: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"Question {i}: tell me about the water model answer."},
    ]


# -- llama.cpp ----------------------------------------------------------------------------------


def raw_llama_generate(llm, i: int, n: int) -> tuple[float, float]:
    import codecs

    import llama_cpp

    bos = llm._model.token_get_text(llm.token_bos())
    prompt = render_chat(llm.metadata.get("tokenizer.chat_template"), messages(i), bos_token=bos)
    c0, t0 = time.process_time(), time.perf_counter()
    tokens = llm.tokenize(prompt.encode(), add_bos=not prompt.startswith(bos), special=True)
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    first = None
    count = 0
    for tok in llm.generate(tokens, temp=0, top_p=0.95, top_k=40, min_p=0.05):
        count += 1
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            break
        text = dec.decode(llm._model.detokenize([tok]))
        if text:
            end = time.perf_counter()
            if first is None:
                first = end
        if count >= n:
            break
    cpu = time.process_time() - c0
    return (count - 1) / (end - first), (first - t0) * 1000, count / cpu


def raw_llama_completion(llm, i: int, n: int) -> tuple[float, float]:
    bos = llm._model.token_get_text(llm.token_bos())
    prompt = render_chat(llm.metadata.get("tokenizer.chat_template"), messages(i), bos_token=bos)
    c0, t0 = time.process_time(), time.perf_counter()
    tokens = llm.tokenize(prompt.encode(), add_bos=not prompt.startswith(bos), special=True)
    first = None
    chunks = 0
    for chunk in llm.create_completion(tokens, max_tokens=n, temperature=0, stream=True):
        if chunk["choices"][0]["text"]:
            end = time.perf_counter()
            if first is None:
                first = end
        chunks += 1
    cpu = time.process_time() - c0
    return (chunks - 1) / (end - first), (first - t0) * 1000, chunks / cpu


async def modeldeck_once(runtime, ref: str, i: int, n: int) -> tuple[float, float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    first = None
    metrics = None
    async for item in runtime.generate(ref, messages(i), GenParams(temperature=0, max_tokens=n)):
        if isinstance(item, str):
            end = time.perf_counter()
            if first is None:
                first = end
        else:
            metrics = item
    cpu = time.process_time() - c0
    assert metrics is not None and first is not None
    # measured on the consumer's side, like the raw loops (metrics.tokens_per_s is the
    # worker's view and would hide any hand-over delay)
    n = metrics.completion_tokens
    return (n - 1) / (end - first), (first - t0) * 1000, n / cpu


Runs = list[tuple[float, ...]]  # per rep: (tokens/s, TTFT ms, tokens per CPU-second)


def bench_llama(tmp: Path, reps: int, n: int, threads: int) -> list[tuple[str, Runs]]:
    from llama_cpp import Llama

    path = make_tiny_gguf(
        tmp / "bench.gguf", n_embd=512, n_layers=8, n_heads=8, n_kv_heads=4, n_ff=1408,
        extra_vocab=31000, context_length=CTX, f16=True, seed=7,
    )
    size_mb = path.stat().st_size / 1e6
    llm = Llama(str(path), n_ctx=CTX, n_threads=threads, n_threads_batch=threads, verbose=False)
    llm_c = Llama(str(path), n_ctx=CTX, n_threads=threads, n_threads_batch=threads, verbose=False)
    runtime = make_runtime(tmp / "rt", max_loaded_models=2)

    async def run() -> list[tuple[str, Runs]]:
        await runtime.load(str(path), LoadOptions(context_length=CTX, threads=threads))
        # warm-up both
        raw_llama_generate(llm, -1, 16)
        raw_llama_completion(llm_c, -1, 16)
        await modeldeck_once(runtime, str(path), -1, 16)
        raw, comp, md = [], [], []
        for i in range(reps):  # alternate the order so drift hits both sides alike
            if i % 2:
                md.append(await modeldeck_once(runtime, str(path), i, n))
                raw.append(raw_llama_generate(llm, i, n))
            else:
                raw.append(raw_llama_generate(llm, i, n))
                md.append(await modeldeck_once(runtime, str(path), i, n))
            comp.append(raw_llama_completion(llm_c, i, n))
        await runtime.aclose()
        return [
            (f"llama.cpp raw Llama.generate ({size_mb:.0f} MB F16)", raw),
            ("llama.cpp raw create_completion(stream)", comp),
            ("llama.cpp via ModelDeck", md),
        ]

    rows = asyncio.run(run())
    llm.close()
    llm_c.close()
    return rows


# -- transformers -------------------------------------------------------------------------------


def raw_transformers(model, tok, i: int, n: int) -> tuple[float, float]:
    import torch
    from transformers import TextIteratorStreamer

    prompt = render_chat(tok.chat_template, messages(i), bos_token=tok.bos_token or "")
    c0, t0 = time.process_time(), time.perf_counter()
    inputs = tok(prompt, return_tensors="pt", add_special_tokens=False)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    out: dict[str, int] = {}

    def work() -> None:
        with torch.inference_mode():
            seq = model.generate(
                **inputs, max_new_tokens=n, do_sample=False, temperature=None, top_p=None,
                top_k=None, streamer=streamer, pad_token_id=tok.eos_token_id,
            )
        out["n"] = int(seq.shape[1] - inputs["input_ids"].shape[1])

    thread = threading.Thread(target=work)
    thread.start()
    first = None
    for text in streamer:
        if text:
            end = time.perf_counter()
            if first is None:
                first = end
    cpu = time.process_time() - c0
    thread.join()
    return (out["n"] - 1) / (end - first), (first - t0) * 1000, out["n"] / cpu


def bench_transformers(tmp: Path, reps: int, n: int, threads: int) -> list[tuple[str, Runs]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    folder = make_tiny_transformers(
        tmp / "hf", hidden_size=512, n_layers=8, n_heads=8, n_kv_heads=4, intermediate_size=1408,
        context_length=CTX, vocab_size=2000, seed=7,
    )
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    model.eval()
    runtime = make_runtime(tmp / "rt-hf")

    async def run() -> list[tuple[str, Runs]]:
        await runtime.load(str(folder), LoadOptions(context_length=CTX))
        raw_transformers(model, tok, -1, 8)
        await modeldeck_once(runtime, str(folder), -1, 8)
        raw, md = [], []
        for i in range(reps):
            if i % 2:
                md.append(await modeldeck_once(runtime, str(folder), i, n))
                raw.append(raw_transformers(model, tok, i, n))
            else:
                raw.append(raw_transformers(model, tok, i, n))
                md.append(await modeldeck_once(runtime, str(folder), i, n))
        await runtime.aclose()
        return [
            ("transformers raw generate+TextIteratorStreamer", raw),
            ("transformers via ModelDeck", md),
        ]

    return asyncio.run(run())


# -- pure hand-over cost ------------------------------------------------------------------------


class _InstantBackend:
    """Emits ``max_tokens`` tokens with no compute; ``paced``: one per ms, each token's text
    being the time it was emitted (so the consumer can measure the hand-over latency)."""

    paced = False

    def load(self) -> None:
        pass

    def generate(self, messages, params, emit, cancel):
        from tui.runtime.backends.base import BackendStats

        for _ in range(params.max_tokens):
            if cancel.is_set():
                break
            if self.paced:
                time.sleep(0.001)
                emit(repr(time.perf_counter()))
            else:
                emit("x")
        return BackendStats(1, params.max_tokens, "length")

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


def bench_handover(tmp: Path, n: int = 20000) -> tuple[float, float]:
    """Thread → asyncio streaming cost without a model: (µs/token at full speed, median µs
    from emit to consumer when tokens come one per millisecond)."""
    from tui.runtime.service import RuntimeService
    from tui.runtime.types import ModelSpec

    class Service(RuntimeService):
        def _make_backend(self, spec, options, n_ctx, gpu_layers, slots=1):
            return _InstantBackend()

    base = make_runtime(tmp / "rt-fake")
    runtime = Service(base.settings, base.inventory, memory_probe=base.memory_probe)
    spec = ModelSpec(id="instant", kind="openai", name="instant")

    async def run() -> tuple[float, float]:
        await runtime.load(spec)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            count = 0
            async for item in runtime.generate(spec, messages(0), GenParams(max_tokens=n)):
                count += isinstance(item, str)
            best = min(best, (time.perf_counter() - t0) / count * 1e6)
        _InstantBackend.paced = True
        delays = []
        async for item in runtime.generate(spec, messages(0), GenParams(max_tokens=500)):
            if isinstance(item, str):
                delays.append((time.perf_counter() - float(item)) * 1e6)
        _InstantBackend.paced = False
        await runtime.aclose()
        await base.aclose()
        return best, statistics.median(delays)

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="modeldeck-bench-") as tmp:
        handover_us, latency_us = bench_handover(Path(tmp))
        rows = bench_llama(Path(tmp), args.reps, args.tokens, args.threads)
        if not args.skip_transformers:
            rows += bench_transformers(Path(tmp), args.reps, args.tokens // 2, args.threads)
    med = statistics.median
    table = [
        (name, med(r[0] for r in runs), min(r[0] for r in runs), max(r[0] for r in runs),
         med(r[1] for r in runs), min(r[1] for r in runs), med(r[2] for r in runs))
        for name, runs in rows
    ]
    print(f"{'path':50} {'tok/s':>7} {'(min-max)':>11} {'TTFT ms':>8} {'best':>6} "
          f"{'tok/CPU-s':>9}")
    for name, tps, lo, hi, ttft, best, cpu in table:
        print(f"{name:50} {tps:7.1f} {f'({lo:.0f}-{hi:.0f})':>11} {ttft:8.1f} {best:6.1f} "
              f"{cpu:9.1f}")
    print()

    def ratio(label: str, raw: tuple, md: tuple) -> None:
        print(f"{label:13} ModelDeck/raw tokens/s: {md[1] / raw[1]:.3f}x (median wall), "
              f"{md[6] / raw[6]:.3f}x (per CPU-second)   TTFT overhead: {md[5] - raw[5]:+.1f} ms "
              f"best, {md[4] - raw[4]:+.1f} ms median")

    ratio("llama.cpp", table[0], table[2])
    print(f"{'':13} hand-over without a model: {handover_us:.1f} us/token at full speed; "
          f"emit->consumer latency {latency_us:.0f} us (1 token/ms)")
    print(f"{'':13} ModelDeck/create_completion tokens/s: {table[2][1] / table[1][1]:.3f}x")
    if not args.skip_transformers:
        ratio("transformers", table[3], table[4])
    print(f"(reps={args.reps}, tokens={args.tokens} llama / {args.tokens // 2} transformers, "
          f"threads={args.threads}, ctx={CTX}, total {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
