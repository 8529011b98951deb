"""Every GGUF file the tests and benchmarks write.

:func:`write_gguf_file` is the one writer: ``gguf.GGUFWriter`` (the reference writer) given
key/values and tensors in order. The builders call it: :func:`write_gguf` (a small valid file
with the usual parameters), :func:`write_llama_gguf` (a realistic llama header),
:func:`write_split_gguf` (a split set) and :func:`tests.support.tiny_models.make_tiny_gguf`
(a model llama.cpp loads). Hostile files, which the library refuses to write, are assembled
byte by byte with the ``raw_*`` helpers at the end.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# GGUF value type ids.
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32 = 0, 1, 2, 3, 4, 5
T_FLOAT32, T_BOOL, T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = 6, 7, 8, 9, 10, 11, 12

KV = tuple[Any, ...]
"""``(setter, *args)``: calls ``GGUFWriter.add_<setter>(*args)``, e.g. ``("context_length",
4096)`` or ``("uint32", "my.key", 5)``; keys, value types and order are the writer's own."""
Tensor = tuple[str, np.ndarray] | tuple[str, np.ndarray, GGMLQuantizationType | None]
"""``(name, data)`` or ``(name, data, raw_dtype)`` for already-quantized bytes."""


def write_gguf_file(
    path: str | Path,
    *,
    arch: str = "llama",
    kv: Iterable[KV] = (),
    tensors: Iterable[Tensor] = (),
    split_max_tensors: int = 0,
) -> Path:
    """Write ``kv`` (in order) and ``tensors`` with ``gguf.GGUFWriter``; return ``path``.

    ``split_max_tensors`` > 0 writes a split set ``<stem>-0000i-of-0000n.gguf`` instead.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors)
    for setter, *args in kv:
        getattr(writer, f"add_{setter}")(*args)
    for name, array, *raw_dtype in tensors:
        writer.add_tensor(name, array, raw_dtype=raw_dtype[0] if raw_dtype else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tokenizer_kv(
    model: str,
    tokens: Sequence[str],
    *,
    pre: str | None = None,
    scores: Sequence[float] | None = None,
    types: Sequence[int] | None = None,
    merges: Sequence[str] | None = None,
    unk: int | None = None,
    bos: int | None = None,
    eos: int | None = None,
    add_bos: bool | None = None,
    add_eos: bool | None = None,
) -> list[KV]:
    """A vocabulary's key/values (``None`` and empty merges are left out)."""
    kv: list[KV] = [("tokenizer_model", model)]
    kv += [("tokenizer_pre", pre)] if pre is not None else []
    kv.append(("token_list", tokens))
    optional = (
        ("token_scores", scores), ("token_types", types), ("token_merges", merges or None),
        ("unk_token_id", unk), ("bos_token_id", bos), ("eos_token_id", eos),
        ("add_bos_token", add_bos), ("add_eos_token", add_eos),
    )
    return kv + [(setter, value) for setter, value in optional if value is not None]


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    name: str | None = None,
    file_type: int = 15,
    context_length: int = 4096,
    n_layers: int = 2,
    n_embd: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    n_vocab: int = 32,
    chat_template: str | None = "{{ messages }}",
    tensor_shapes: tuple[tuple[int, ...], ...] = ((64, 32), (64,)),
    seed: int = 0,
    extra_kv: dict | None = None,
) -> Path:
    """A small but valid GGUF file (random F32 tensors ``blk.<i>.weight``); ``extra_kv`` adds
    uint32 keys."""
    kv: list[KV] = [("name", name)] if name else []
    kv += [
        ("file_type", file_type),
        ("context_length", context_length),
        ("block_count", n_layers),
        ("embedding_length", n_embd),
        ("head_count", n_heads),
        ("head_count_kv", n_kv_heads),
        *tokenizer_kv("llama", [f"t{i}" for i in range(n_vocab)]),
    ]
    kv += [("chat_template", chat_template)] if chat_template else []
    kv += [("uint32", key, value) for key, value in (extra_kv or {}).items()]
    rng = np.random.default_rng(seed)
    tensors = [
        (f"blk.{i}.weight", rng.standard_normal(shape).astype(np.float32))
        for i, shape in enumerate(tensor_shapes)
    ]
    return write_gguf_file(path, arch=arch, kv=kv, tensors=tensors)


def fake_vocab(n_tokens: int, n_merges: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """BPE-like tokens (byte-level 'Ġ' prefixes, mostly 1-12 chars) and merges."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.,;:!?'\"()[]{}"
    tokens = []
    for i in range(n_tokens):
        length = min(1 + int(rng.expovariate(1 / 5)), 40)
        body = "".join(rng.choice(letters) for _ in range(length))
        prefix = "Ġ" if i % 3 == 0 else ""
        tokens.append(f"{prefix}{body}{i}" if i % 7 == 0 else prefix + body)
    merges = []
    for _ in range(n_merges):
        a, b = rng.choice(tokens), rng.choice(tokens)
        merges.append(f"{a[:8]} {b[:8]}")
    return tokens, merges


def write_llama_gguf(
    path: Path,
    *,
    name: str = "Tiny Llama",
    n_vocab: int = 320,
    n_merges: int = 300,
    context_length: int = 4096,
    block_count: int = 2,
    embedding_length: int = 64,
    head_count: int = 8,
    head_count_kv: int | Sequence[int] = 2,
    key_length: int | None = None,
    file_type: int | None = 7,
    chat_template: str | None = CHAT_TEMPLATE,
    tensors: bool = True,
    vocab: tuple[list[str], list[str]] | None = None,
    extra_tensors: int = 0,
    scores: bool = False,
) -> Path:
    """A small but realistic llama GGUF (tokenizer, chat template, F32/F16/Q8_0 tensors).

    Tensor sizes are multiples of 32 bytes, so the file has no trailing padding and cutting it
    anywhere truncates something the reader must notice.
    """
    tokens, merges = vocab if vocab is not None else fake_vocab(n_vocab, n_merges)
    kv: list[KV] = [
        ("name", name),
        ("size_label", "1M"),
        ("context_length", context_length),
        ("embedding_length", embedding_length),
        ("block_count", block_count),
        ("feed_forward_length", embedding_length * 4),
        ("head_count", head_count),
        ("head_count_kv", head_count_kv),
    ]
    kv += [("key_length", key_length)] if key_length is not None else []
    kv += [("rope_freq_base", 500000.0), ("layer_norm_rms_eps", 1e-5)]
    kv += [("file_type", file_type)] if file_type is not None else []
    kv.append(("quantization_version", 2))
    kv += tokenizer_kv(
        "gpt2", tokens, pre="qwen2",
        scores=[-float(i) for i in range(len(tokens))] if scores else None,  # SentencePiece-like
        types=[1] * len(tokens), merges=merges, bos=1, eos=2,
    )
    kv += [("chat_template", chat_template)] if chat_template is not None else []
    data = tiny_tensors(embedding_length, extra_tensors) if tensors else []
    return write_gguf_file(path, arch="llama", kv=kv, tensors=data)


def tiny_tensors(
    width: int = 64, extra: int = 0
) -> list[tuple[str, np.ndarray, GGMLQuantizationType | None]]:
    """(name, data, raw_dtype): an F32 norm, an F16 matrix and a Q8_0 matrix (+ extra F32s)."""
    q8_rows, q8_blocks = 32, width // 32
    q8 = np.zeros((q8_rows, q8_blocks * 34), dtype=np.uint8)  # 34 bytes per 32 weights
    out: list[tuple[str, np.ndarray, GGMLQuantizationType | None]] = [
        ("output_norm.weight", np.ones(width, dtype=np.float32), None),
        ("token_embd.weight", np.zeros((32, width), dtype=np.float16), None),
        ("blk.0.attn_q.weight", q8, GGMLQuantizationType.Q8_0),
    ]
    out += [(f"blk.{i}.extra.weight", np.zeros(8, dtype=np.float32), None) for i in range(extra)]
    return out


def tiny_tensor_counts(width: int = 64, extra: int = 0) -> tuple[int, int]:
    """(parameters, tensor bytes) of :func:`tiny_tensors`."""
    params = width + 32 * width + 32 * width + 8 * extra
    nbytes = width * 4 + 32 * width * 2 + 32 * (width // 32) * 34 + 32 * extra
    return params, nbytes


def write_split_gguf(directory: Path, stem: str, n_shards: int) -> list[Path]:
    """A split set written by GGUFWriter itself (one tensor per shard)."""
    kv: list[KV] = [
        ("name", "Split Llama"),
        ("context_length", 2048),
        ("block_count", n_shards),
        ("head_count", 4),
        ("embedding_length", 64),
        ("file_type", 1),
    ]
    tensors = [(f"blk.{i}.w", np.zeros((16, 64), dtype=np.float16)) for i in range(n_shards)]
    write_gguf_file(directory / f"{stem}.gguf", kv=kv, tensors=tensors, split_max_tensors=1)
    return [directory / f"{stem}-{i:05d}-of-{n_shards:05d}.gguf" for i in range(1, n_shards + 1)]


# -- raw byte builders for hostile headers ------------------------------------------------------


def raw_header(
    n_tensors: int = 0, n_kv: int = 0, *, version: int = 3, magic: bytes = b"GGUF"
) -> bytes:
    """The fixed 24-byte GGUF header."""
    return magic + struct.pack("<IQQ", version, n_tensors, n_kv)


def raw_string(text: str | bytes, *, declared: int | None = None) -> bytes:
    """A GGUF string; ``declared`` overrides the length prefix."""
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data) if declared is None else declared) + data


def raw_kv(key: str, vtype: int, payload: bytes) -> bytes:
    """One key/value pair: key string, type id, already-encoded payload."""
    return raw_string(key) + struct.pack("<I", vtype) + payload


def raw_array(item_type: int, count: int, items: bytes = b"") -> bytes:
    """An array payload (element type, declared count, encoded items)."""
    return struct.pack("<IQ", item_type, count) + items


def raw_tensor_info(name: str, dims: Sequence[int], ggml_type: int, offset: int = 0) -> bytes:
    """One tensor info record."""
    return (
        raw_string(name)
        + struct.pack("<I", len(dims))
        + struct.pack(f"<{len(dims)}Q", *dims)
        + struct.pack("<IQ", ggml_type, offset)
    )


def raw_string_array(key: str, strings: Sequence[str | bytes]) -> bytes:
    """A key/value pair holding an array of strings."""
    items = b"".join(raw_string(text) for text in strings)
    return raw_kv(key, T_ARRAY, raw_array(T_STRING, len(strings), items))


def raw_gguf(
    kvs: Sequence[bytes], tensors: Sequence[bytes] = (), data_bytes: int = 0, alignment: int = 32
) -> bytes:
    """A whole file: header, key/values, tensor infos, padding and ``data_bytes`` of data."""
    body = raw_header(len(tensors), len(kvs)) + b"".join(kvs) + b"".join(tensors)
    return body + bytes(-len(body) % alignment) + bytes(data_bytes)
