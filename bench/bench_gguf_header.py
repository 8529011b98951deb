"""Benchmark ModelDeck's GGUF header reader against gguf.GGUFReader.

Writes, into a temporary directory:
  1. a Qwen-like header: 152,064-token vocab + ~151k merges + token types, a chat template and
     339 (tiny) tensors, like a 7B model's tensor count;
  2. a small llama header (320 tokens);
  3. 500 small GGUF files in a folder tree;
then times ``tui.metadata.gguf.read_gguf`` (median of N runs) against ``gguf.GGUFReader``
(fewer runs: it memory-maps the whole file and parses every field and tensor) and prints a
table with the ratios. The big header is also read with the exact walk over every string (the
reader's fallback when a jump past a big string array is not confirmed), for comparison.

Usage: python bench/bench_gguf_header.py [--runs 21] [--reader-runs 1] [--files 500]
Needs the test extras (gguf, numpy). Takes about 30-60 s, mostly in gguf.GGUFReader.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gguf import GGUFReader  # noqa: E402

from tui.metadata import gguf as gguf_reader  # noqa: E402
from tui.metadata.gguf import read_gguf  # noqa: E402

from tests.support.gguf import fake_vocab, write_llama_gguf  # noqa: E402

QWEN_VOCAB = 152_064
QWEN_MERGES = 151_387
QWEN_TENSORS = 339


CPU_TIMES: list[float] = []  # process CPU seconds of the last timed() runs


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    """(median wall seconds, min wall seconds, last result) over ``runs`` calls.

    The runs' CPU times land in ``CPU_TIMES``: on a busy machine they show the work done,
    while wall time also counts waiting for a core.
    """
    times = []
    CPU_TIMES.clear()
    result = None
    gc.collect()
    gc.disable()  # like timeit: keep collector pauses out of the numbers
    try:
        for _ in range(runs):
            cpu = time.process_time()
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
            CPU_TIMES.append(time.process_time() - cpu)
    finally:
        gc.enable()
    return statistics.median(times), min(times), result


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:10.2f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="ModelDeck runs per file (median)")
    parser.add_argument(
        "--reader-runs", type=int, default=1, help="gguf.GGUFReader runs on the big header"
    )
    parser.add_argument("--small-reader-runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=500, help="files in the tree test")
    parser.add_argument(
        "--reader-files", type=int, default=25, help="files of the tree read with GGUFReader"
    )
    parser.add_argument("--vocab", type=int, default=QWEN_VOCAB)
    parser.add_argument("--merges", type=int, default=QWEN_MERGES)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="modeldeck-bench-") as tmp:
        tmpdir = Path(tmp)
        t0 = time.perf_counter()
        vocab = fake_vocab(args.vocab, args.merges)
        big = write_llama_gguf(
            tmpdir / "qwen-like-Q4_K_M.gguf",
            vocab=vocab,
            file_type=15,
            extra_tensors=QWEN_TENSORS - 3,
        )
        small = write_llama_gguf(tmpdir / "tiny-llama-Q8_0.gguf", n_vocab=320, n_merges=300)
        tree = tmpdir / "tree"
        files = []
        for i in range(args.files):
            folder = tree / f"org{i % 10}" / f"model{i % 50}"
            folder.mkdir(parents=True, exist_ok=True)
            files.append(
                write_llama_gguf(
                    folder / f"m{i}-Q4_K_M.gguf", n_vocab=64 + i % 32, n_merges=40, file_type=15
                )
            )
        del vocab
        setup = time.perf_counter() - t0
        print(
            f"setup: wrote {big.stat().st_size / 1e6:.1f} MB big header, small header and "
            f"{len(files)} files in {setup:.1f} s"
        )

        rows: list[tuple[str, ...]] = []
        summary: list[str] = []

        # Cold first call: includes compiling the string-skipping patterns (once per process).
        start = time.perf_counter()
        read_gguf(big)
        first_call = time.perf_counter() - start

        for label, path, reader_runs in (
            (f"{args.vocab:,}-token vocab", big, args.reader_runs),
            ("small llama (320 tokens)", small, args.small_reader_runs),
        ):
            md_med, md_min, meta = timed(lambda p=path: read_gguf(p), args.runs)
            md_cpu = statistics.median(CPU_TIMES)
            if path == big:
                big_med, big_meta = md_med, meta
            ref_med, _, reader = timed(lambda p=path: GGUFReader(p), reader_runs)
            ref_params = sum(int(t.n_elements) for t in reader.tensors)
            ref_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
            agree = meta.parameters == ref_params and meta.vocab_size == ref_vocab
            rows.append((label, fmt_ms(md_med), fmt_ms(md_min), fmt_ms(md_cpu), fmt_ms(ref_med)))
            summary.append(
                f"{label}: ModelDeck is {ref_med / md_med:,.0f}x faster than gguf.GGUFReader "
                f"(median {md_med * 1000:.2f} ms vs {ref_med * 1000:.1f} ms; "
                f"fields agree: {'yes' if agree else 'NO'})"
            )

        # The same big header with the exact walk over every string (the jump's fallback).
        jumps_before = dict(gguf_reader._JUMP_STATS)
        read_gguf(big)
        jumped = gguf_reader._JUMP_STATS["jumps"] - jumps_before["jumps"]
        redone = gguf_reader._JUMP_STATS["rejected"] - jumps_before["rejected"]
        exact_med, exact_min, exact_meta = timed(
            lambda: gguf_reader._read(big, allow_jump=False)[0], max(5, args.runs // 2)
        )
        exact_cpu = statistics.median(CPU_TIMES)
        rows.insert(
            1,
            (
                "  same, exact walk (fallback)",
                fmt_ms(exact_med),
                fmt_ms(exact_min),
                fmt_ms(exact_cpu),
                "",
            ),
        )
        summary.append(
            f"{args.vocab:,}-token vocab: {jumped} string arrays jumped, {redone} parses redone "
            f"with the exact walk; jumping is {exact_med / big_med:.1f}x faster than the exact "
            f"walk (same metadata: {'yes' if exact_meta == big_meta else 'NO'})"
        )

        # The tree: every header once, like a discovery scan.
        def scan() -> int:
            return sum(read_gguf(p).vocab_size or 0 for p in files)

        tree_med, tree_min, _ = timed(scan, 3)
        tree_cpu = statistics.median(CPU_TIMES)
        subset = files[: args.reader_files]
        ref_tree_med, _, _ = timed(lambda: [GGUFReader(p) for p in subset], 1)
        ref_per_file = ref_tree_med / max(1, len(subset))
        rows.append(
            (
                f"{len(files)} small files (total)",
                fmt_ms(tree_med),
                fmt_ms(tree_min),
                fmt_ms(tree_cpu),
                fmt_ms(ref_per_file * len(files)) + "*",
            )
        )
        per_file = tree_med / len(files)
        rows.append(
            (
                "  per file",
                fmt_ms(per_file),
                fmt_ms(tree_min / len(files)),
                fmt_ms(tree_cpu / len(files)),
                fmt_ms(ref_per_file),
            )
        )
        summary.append(
            f"{len(files)}-file tree: {tree_med * 1000:.0f} ms total, {per_file * 1e6:.0f} µs per "
            f"file; ModelDeck is {ref_per_file / per_file:,.0f}x faster than gguf.GGUFReader "
            f"per file"
        )

    # Context for the numbers: how fast this interpreter/machine is, and how busy.
    calibration, _, _ = timed(lambda: sum(range(1_000_000)), 5)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = ("file", "ModelDeck median", "ModelDeck min", "ModelDeck CPU", "GGUFReader median")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(line)
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(line)
    print(
        f"ModelDeck runs: {args.runs} per file (median wall time; CPU = median process CPU "
        f"time); GGUFReader runs: {args.reader_runs} (big), {args.small_reader_runs} (small); "
        f"* extrapolated from {args.reader_files} files"
    )
    print(
        f"machine: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{load:.2f}; sum(range(10**6)) takes {calibration * 1000:.1f} ms here"
    )
    print(
        f"first ModelDeck call on the big header (incl. one-time regex compile): "
        f"{first_call * 1000:.1f} ms"
    )
    print()
    for text in summary:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
