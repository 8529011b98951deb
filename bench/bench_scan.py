"""Discovery benchmark: a full scan of N GGUF files, then an incremental rescan; then a full
scan of a tree of 1,000 mixed files (every kind and format ModelDeck reads).

Reference: reading the same N headers with ``gguf.GGUFReader`` (what a naive scanner does).
The mixed tree's time per file is compared with the GGUF-only scan's from the same run
(target: at most 1.5x).
Run: ``python bench/bench_scan.py [--files 500] [--mixed 1000]``. Prints a table with ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tui.discovery import Scanner, _walk_files
from tui.services import build_services
from tui.settings import Settings

from tests.support import formats as F
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


def _tail_patched(template: Path, dest: Path, i: int) -> None:
    """``template`` with the 8 bytes before its end (tensor data) made unique."""
    data = bytearray(template.read_bytes())
    data[-8:] = i.to_bytes(8, "little")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)


def _renamed(template: Path, old: bytes, dest: Path, i: int) -> None:
    """``template`` with a same-length text replaced (a producer or description string)."""
    new = f"{i:0{len(old)}d}".encode()[-len(old):]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(template.read_bytes().replace(old, new))


def write_mixed_tree(root: Path, count: int, vocab: int) -> int:
    """At least ``count`` model files of every kind and format, each different (no two are
    duplicates); returns how many files a scan finds."""
    t = root.parent / "templates"
    templates = {
        "llm.gguf": lambda p: write_template(p, vocab),
        "lora.gguf": F.write_gguf_lora, "vocab.gguf": F.write_vocab_gguf,
        "embed.gguf": F.write_embedding_gguf, "mmproj.gguf": F.write_mmproj,
        "sd1.safetensors": lambda p: F.write_checkpoint(p, "sd1"),
        "sdxl.safetensors": lambda p: F.write_checkpoint(p, "sdxl"),
        "flux.safetensors": lambda p: F.write_checkpoint(p, "flux"),
        "lora-xl.safetensors": lambda p: F.write_lora(p, rank=16),
        "lora-flux.safetensors": lambda p: F.write_lora(p, style="flux"),
        "vae.safetensors": F.write_vae, "clip.safetensors": F.write_text_encoder,
        "t5.safetensors": lambda p: F.write_text_encoder(p, "t5"),
        "cn.safetensors": F.write_controlnet,
        "m.ort": F.write_ort, "m.tflite": F.write_tflite,
    }
    for name, write in templates.items():
        write(t / name)
    onnx_template = F.write_onnx(t / "m.onnx")
    mlmodel_template = F.write_mlmodel(t / "m.mlmodel")
    i = 0
    while True:
        d = root / f"group{i // 40}" / f"set{i}"
        for name in templates:
            stem, ext = name.rsplit(".", 1)
            dest = d / (f"mmproj-m{i}-f16.gguf" if stem == "mmproj" else
                        f"m{i}-Q4_K_M.gguf" if stem == "llm" else f"{stem}-{i}.{ext}")
            _tail_patched(t / name, dest, i)
        _renamed(onnx_template, b"modeldeck-tests", d / f"m{i}.onnx", i)
        _renamed(mlmodel_template, b"tiny test model", d / f"m{i}.mlmodel", i)
        F.write_torch(d / f"sd{i}.pt", {"lm_head.weight": (8, 4)})
        F.write_torch(d / f"old{i}.ckpt", {"model.diffusion_model.out.2.weight": (4, 4)},
                      legacy=True)
        if i % 4 == 0:  # folders: transformers, MLX, sentence-transformers, diffusers, Core ML
            F.write_hf_folder(d / "hf", "LlamaForCausalLM")
            F.write_mlx(d / "mlx")
            F.write_hf_folder(d / "emb", "BertModel", sentence_transformers=True)
            F.write_diffusers(d / "diffusers")
            F.write_mlpackage(d / "Tiny.mlpackage", weight_bytes=4096 + i)
            for folder in ("hf", "mlx", "emb"):
                _tail_patched(d / folder / "model.safetensors", d / folder / "model.safetensors",
                              i)
            for comp in ("unet/diffusion_pytorch_model.safetensors",
                         "unet/diffusion_pytorch_model.fp16.safetensors",
                         "vae/diffusion_pytorch_model.safetensors",
                         "text_encoder/model.safetensors"):
                _tail_patched(d / "diffusers" / comp, d / "diffusers" / comp, i)
        i += 1
        found = sum(1 for _ in _walk_files(root))
        if found >= count:
            return found


def _scan_timed(root: Path, state: Path) -> tuple[float, Any]:
    settings = Settings(models_dir=root, state_dir=state, scan_hf_cache=False)
    services = build_services(settings)
    try:
        t0 = time.perf_counter()
        report = Scanner(settings, services.inventory).scan()
        return time.perf_counter() - t0, report
    finally:
        services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--vocab", type=int, default=32000, help="tokens per file header")
    parser.add_argument("--mixed", type=int, default=1000, help="files in the mixed tree")
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

        t0 = time.perf_counter()
        n_mixed = write_mixed_tree(root / "mixed", args.mixed, args.vocab)
        print(f"wrote {n_mixed} mixed files (every kind and format) in "
              f"{time.perf_counter() - t0:.1f} s")
        mixed, mixed_report = _scan_timed(root / "mixed", root / "state-mixed")
        assert not mixed_report.errors, mixed_report.errors[:3]
        kinds = mixed_report.kinds

    rows = [
        ("ModelDeck full scan (read + register)", cold, cold / args.files),
        ("ModelDeck incremental rescan (unchanged)", warm, warm / args.files),
        ("gguf.GGUFReader headers only (reference)", ref_total, ref_per_file),
        (f"ModelDeck full scan, {n_mixed} mixed files", mixed, mixed / n_mixed),
    ]
    print(f"\n{'what':44} {'total s':>9} {'ms/file':>9}")
    for name, total, per in rows:
        print(f"{name:44} {total:9.3f} {per * 1000:9.2f}")
    print(f"\nfull scan vs GGUFReader: {ref_total / cold:.1f}x faster")
    print(f"incremental rescan vs GGUFReader: {ref_total / warm:.1f}x faster")
    ratio = (mixed / n_mixed) / (cold / args.files)
    print(f"mixed tree per file vs GGUF-only per file: {ratio:.2f}x (target <= 1.5x)")
    print("mixed tree kinds: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    if args.files > 10:
        print(f"(GGUFReader timed on {len(sample)} files and scaled to {args.files})")


if __name__ == "__main__":
    main()
