"""Discovery benchmark: a full scan of N GGUF files, then an incremental rescan.

Reference: reading the same N headers with ``gguf.GGUFReader`` (what a naive scanner does).
Run: ``python bench/bench_scan.py [--files 500]``. Prints a table with ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tui.discovery import Scanner
from tui.services import build_services
from tui.settings import Settings

from tests.support.gguf import tokenizer_kv, write_gguf_file


def write_template(path: Path, vocab: int) -> None:
    """One llama GGUF with a ``vocab``-token tokenizer (the tests' GGUF writer)."""
    kv = [
        ("name", "bench model"),
        ("file_type", 15),
        ("context_length", 4096),
        ("block_count", 2),
        ("embedding_length", 64),
        ("head_count", 4),
        ("head_count_kv", 2),
        *tokenizer_kv("llama", [f"tok{i}" for i in range(vocab)], scores=[0.0] * vocab),
        ("chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}"),
    ]
    write_gguf_file(path, kv=kv, tensors=[("blk.0.weight", np.zeros((64, 32), np.float32))])


def write_tree(root: Path, count: int, vocab: int) -> list[Path]:
    """``count`` distinct GGUF files in nested folders: the template with its tensor bytes
    changed per file (so no two files are duplicates)."""
    template = root / "template.gguf"
    root.mkdir(parents=True, exist_ok=True)
    write_template(template, vocab)
    data = bytearray(template.read_bytes())
    template.unlink()
    paths = []
    for i in range(count):
        data[-8:] = i.to_bytes(8, "little")
        path = root / f"family{i % 20}" / f"model{i}-Q4_K_M.gguf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--vocab", type=int, default=32000, help="tokens per file header")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        paths = write_tree(root / "models", args.files, args.vocab)
        print(f"wrote {len(paths)} GGUF files ({args.vocab}-token vocab) in "
              f"{time.perf_counter() - t0:.1f} s")
        settings = Settings(models_dir=root / "models", state_dir=root / "state",
                            scan_hf_cache=False)
        services = build_services(settings)
        scanner = Scanner(settings, services.inventory)

        t0 = time.perf_counter()
        first = scanner.scan()
        cold = time.perf_counter() - t0
        assert len(first.models) == args.files and not first.errors, first.errors[:3]

        warm_runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            again = scanner.scan()
            warm_runs.append(time.perf_counter() - t0)
            assert again.files_read == 0
        warm = statistics.median(warm_runs)

        import gguf

        sample = paths[: min(10, len(paths))]
        t0 = time.perf_counter()
        for p in sample:
            gguf.GGUFReader(str(p))
        ref_per_file = (time.perf_counter() - t0) / len(sample)
        ref_total = ref_per_file * args.files
        services.close()

    rows = [
        ("ModelDeck full scan (read + register)", cold, cold / args.files),
        ("ModelDeck incremental rescan (unchanged)", warm, warm / args.files),
        ("gguf.GGUFReader headers only (reference)", ref_total, ref_per_file),
    ]
    print(f"\n{'what':44} {'total s':>9} {'ms/file':>9}")
    for name, total, per in rows:
        print(f"{name:44} {total:9.3f} {per * 1000:9.2f}")
    print(f"\nfull scan vs GGUFReader: {ref_total / cold:.1f}x faster")
    print(f"incremental rescan vs GGUFReader: {ref_total / warm:.1f}x faster")
    if args.files > 10:
        print(f"(GGUFReader timed on {len(sample)} files and scaled to {args.files})")


if __name__ == "__main__":
    main()
