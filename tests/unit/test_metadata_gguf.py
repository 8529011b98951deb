"""GGUF header reader: real files from gguf.GGUFWriter, hostile and truncated headers."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFWriter, LlamaFileType

import tui.metadata.gguf as gguf_reader
from tui.errors import MetadataError, ModelDeckError
from tui.metadata.gguf import (
    gguf_shard_paths,
    read_gguf,
    read_gguf_model,
    read_gguf_set,
    split_gguf_info,
)
from tui.metadata.quant import (
    FILE_TYPE_NAMES,
    GGML_TYPES,
    file_type_name,
    guess_quant_from_filename,
    tensor_type_name,
)

from tests.support.checks import REPO
from tests.support.gguf import (
    CHAT_TEMPLATE,
    T_ARRAY,
    T_FLOAT32,
    T_INT32,
    T_STRING,
    T_UINT8,
    T_UINT32,
    fake_vocab,
    raw_array,
    raw_gguf,
    raw_header,
    raw_kv,
    raw_string,
    raw_string_array,
    raw_tensor_info,
    tiny_tensor_counts,
    write_llama_gguf,
    write_split_gguf,
)

U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")


def _param_id(value: object) -> str:
    """Short test ids: strings as they are, anything else (raw bytes) as "data"."""
    return value if isinstance(value, str) and len(value) <= 40 else "data"


def reference_counts(path: Path) -> tuple[int, int]:
    """(parameters, tensor bytes) according to gguf.GGUFReader."""
    reader = GGUFReader(path)
    return (
        sum(int(t.n_elements) for t in reader.tensors),
        sum(int(t.n_bytes) for t in reader.tensors),
    )


def _jump_stats() -> dict[str, int]:
    """Copy of the reader's counters: accepted jumps, parses redone with the exact walk."""
    return dict(gguf_reader._JUMP_STATS)


def _delta(before: dict[str, int]) -> tuple[int, int]:
    """(jumps, rejected) since ``before``."""
    now = _jump_stats()
    return now["jumps"] - before["jumps"], now["rejected"] - before["rejected"]


def _exact(path: Path) -> object:
    """The exact walk's result (never jumping), or the MetadataError it raises."""
    try:
        return gguf_reader._read(path, allow_jump=False)[0]
    except MetadataError as exc:
        return exc


@pytest.fixture(params=["walk", "jump"])
def jump_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Mode "jump" sets tiny thresholds, so even small files' string arrays are jumped."""
    if request.param == "jump":
        monkeypatch.setattr(gguf_reader, "_JUMP_MIN_STRINGS", 8)
        monkeypatch.setattr(gguf_reader, "_JUMP_SAMPLE", 4)
    return request.param


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small llama file whose tensor sizes are multiples of 32 (no trailing padding)."""
    path = tmp_path_factory.mktemp("small") / "tiny-llama.gguf"
    return write_llama_gguf(path, n_vocab=40, n_merges=20, embedding_length=32, head_count=4)


# -- realistic files ----------------------------------------------------------------------------


def test_reads_every_field_of_a_llama_header(tmp_path: Path) -> None:
    path = write_llama_gguf(
        tmp_path / "tiny-llama.gguf",
        n_vocab=320,
        n_merges=300,
        context_length=8192,
        block_count=2,
        embedding_length=64,
        head_count=8,
        head_count_kv=2,
        file_type=15,
    )
    meta = read_gguf(path)
    params, nbytes = tiny_tensor_counts(64)
    assert (params, nbytes) == reference_counts(path)
    assert meta.format == "gguf"
    assert meta.architecture == "llama"
    assert meta.name == "Tiny Llama"
    assert meta.file_type == 15
    assert meta.quantization == "Q4_K_M"
    assert meta.context_length == 8192
    assert meta.n_layers == 2
    assert meta.n_heads == 8
    assert meta.n_kv_heads == 2
    assert meta.embedding_size == 64
    assert meta.head_dim == 8
    assert meta.vocab_size == 320
    assert meta.has_chat_template is True
    assert meta.chat_template == CHAT_TEMPLATE
    assert meta.parameters == params
    assert meta.tensor_bytes == nbytes
    assert meta.split_count is None
    assert meta.dtype is None
    extra = meta.extra
    assert extra["rope_freq_base"] == 500000.0
    assert extra["size_label"] == "1M"
    assert extra["quantization_version"] == 2
    assert extra["quantization_source"] == "file_type"
    assert extra["alignment"] == 32
    assert extra["gguf_version"] == 3
    assert extra["n_tensors"] == 3
    assert extra["merges_count"] == 300
    assert extra["tokenizer_model"] == "gpt2"
    assert extra["tensor_types"] == {"F16": 32 * 64, "Q8_0": 32 * 64, "F32": 64}
    assert "expert_count" not in extra
    json.dumps(meta.to_dict())  # JSON-ready


def test_accepts_str_paths(small_gguf: Path) -> None:
    assert read_gguf(str(small_gguf)).architecture == "llama"


def test_per_layer_head_count_kv_takes_the_max_and_key_length_wins(tmp_path: Path) -> None:
    path = write_llama_gguf(
        tmp_path / "m.gguf", head_count=8, head_count_kv=[0, 4, 2], key_length=128
    )
    meta = read_gguf(path)
    assert meta.n_kv_heads == 4
    assert meta.head_dim == 128


def test_missing_head_count_kv_defaults_to_head_count(tmp_path: Path) -> None:
    writer = GGUFWriter(tmp_path / "m.gguf", "qwen2")
    writer.add_head_count(16)
    writer.add_embedding_length(2048)
    writer.add_expert_count(8)
    writer.add_expert_used_count(2)
    writer.add_vocab_size(1000)
    _finish(writer)
    meta = read_gguf(tmp_path / "m.gguf")
    assert meta.architecture == "qwen2"
    assert (meta.n_heads, meta.n_kv_heads, meta.head_dim) == (16, 16, 128)
    assert meta.vocab_size == 1000  # from {arch}.vocab_size when there is no token list
    assert meta.extra["expert_count"] == 8
    assert meta.extra["expert_used_count"] == 2
    assert meta.has_chat_template is False and meta.chat_template is None
    assert meta.parameters == 0 and meta.tensor_bytes == 0


def _finish(writer: GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_named_chat_templates(tmp_path: Path) -> None:
    writer = GGUFWriter(tmp_path / "m.gguf", "llama")
    writer.add_chat_template(
        [
            {"name": "default", "template": "{{ messages }}"},
            {"name": "tool_use", "template": "{{ tools }}"},
        ]
    )
    _finish(writer)
    meta = read_gguf(tmp_path / "m.gguf")
    assert meta.has_chat_template
    assert meta.chat_template == "{{ messages }}"
    assert meta.extra["chat_template_names"] == ["tool_use"]


def test_quant_falls_back_to_the_dominant_tensor_type(tmp_path: Path) -> None:
    writer = GGUFWriter(tmp_path / "model.gguf", "llama")
    writer.add_tensor("norm", np.ones(4096, dtype=np.float32))  # 1-D: ignored for the vote
    q8 = np.zeros((32, 2 * 34), dtype=np.uint8)  # 32 rows of 2 Q8_0 blocks
    writer.add_tensor("a", q8, raw_dtype=GGMLQuantizationType.Q8_0)
    writer.add_tensor("b", np.zeros((4, 64), dtype=np.float16))
    _finish(writer)
    meta = read_gguf(tmp_path / "model.gguf")
    assert meta.file_type is None
    assert meta.quantization == "Q8_0"
    assert meta.extra["quantization_source"] == "tensors"
    assert meta.parameters == 4096 + 32 * 64 + 4 * 64
    assert (meta.parameters, meta.tensor_bytes) == reference_counts(tmp_path / "model.gguf")


def test_quant_falls_back_to_the_file_name(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "Model-7B-IQ3_XXS.gguf", file_type=None, tensors=False)
    meta = read_gguf(path)
    assert meta.quantization == "IQ3_XXS"
    assert meta.extra["quantization_source"] == "filename"


def test_unknown_file_type_is_kept_raw(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", file_type=999)
    meta = read_gguf(path)
    assert meta.file_type == 999
    assert meta.quantization in {"F16", "Q8_0"}  # tie between the two matrices
    assert meta.extra["quantization_source"] == "tensors"


def test_big_vocab_is_skipped_fast(tmp_path: Path) -> None:
    vocab = fake_vocab(150_000, 150_000)
    path = write_llama_gguf(tmp_path / "big.gguf", vocab=vocab)
    read_gguf(path)  # warm the page cache and compile the skipping patterns
    best = float("inf")
    for _ in range(9):
        # CPU time, so a busy CI box (other processes on our cores) does not fail the test.
        start = time.process_time()
        meta = read_gguf(path)
        best = min(best, time.process_time() - start)
    assert meta.vocab_size == 150_000
    assert meta.extra["merges_count"] == 150_000
    assert meta.chat_template == CHAT_TEMPLATE  # stored after the big arrays
    assert (meta.parameters, meta.tensor_bytes) == tiny_tensor_counts(64)
    assert best < 0.05, f"read took {best * 1000:.1f} ms"
    # Both big arrays were jumped, and the jump agrees with the exact walk.
    before = _jump_stats()
    assert read_gguf(path) == _exact(path) == meta
    assert _delta(before) == (2, 0)


@pytest.mark.parametrize(
    ("kind", "jumps"),
    [("bpe", 2), ("spm", 1), ("no-tensors", 2), ("no-template", 2), ("more-tensors", 2)],
)
def test_jump_matches_the_exact_walk_on_real_files(tmp_path: Path, kind: str, jumps: int) -> None:
    """GGUFWriter files with vocabularies above the jump threshold: same metadata both ways."""
    n_vocab = gguf_reader._JUMP_MIN_STRINGS + 1500
    options: dict[str, object] = {"n_vocab": n_vocab, "n_merges": n_vocab - 100}
    if kind == "spm":
        options.update(n_merges=0, scores=True)
    elif kind == "no-tensors":
        options.update(tensors=False)
    elif kind == "no-template":
        options.update(chat_template=None)
    elif kind == "more-tensors":
        options.update(extra_tensors=40)
    path = write_llama_gguf(tmp_path / "m.gguf", **options)  # type: ignore[arg-type]
    before = _jump_stats()
    meta = read_gguf(path)
    assert _delta(before) == (jumps, 0)
    assert meta == _exact(path)
    assert meta.vocab_size == n_vocab
    assert meta.extra.get("merges_count") == (None if kind == "spm" else n_vocab - 100)
    assert meta.chat_template == (None if kind == "no-template" else CHAT_TEMPLATE)
    assert (meta.parameters, meta.tensor_bytes) == reference_counts(path)


_AFTER_TOKENS = [
    "tokenizer.ggml.token_type",
    "general.quantization_version",
    "llama.context_length",
    "split.count",
    "quantize.imatrix.entries_count",
    "custom.value",  # a namespace seen before the array
]


@pytest.mark.parametrize("next_key", _AFTER_TOKENS)
@pytest.mark.parametrize("then_tokenizer_key", [False, True])
def test_jump_finds_the_next_key_by_its_prefix(
    tmp_path: Path, next_key: str, then_tokenizer_key: bool
) -> None:
    """Whatever usual key follows the big array (and whether a tokenizer.* key comes later,
    which the search must not jump to), the jump lands on it."""
    tokens, _ = fake_vocab(gguf_reader._JUMP_MIN_STRINGS + 900, 0, seed=3)
    kvs = [
        raw_kv("general.architecture", T_STRING, raw_string("llama")),
        raw_kv("custom.before", T_UINT32, U32.pack(1)),
        raw_string_array("tokenizer.ggml.tokens", tokens),
        raw_kv(next_key, T_UINT32, U32.pack(2048)),
    ]
    if then_tokenizer_key:
        kvs.append(raw_kv("tokenizer.ggml.bos_token_id", T_UINT32, U32.pack(1)))
    kvs.append(raw_kv("general.name", T_STRING, raw_string("after")))
    tensors = [raw_tensor_info("token_embd.weight", [64, 4], 0), raw_tensor_info("n", [8], 0, 1024)]
    path = _write(tmp_path, raw_gguf(kvs, tensors, 1024 + 32))
    before = _jump_stats()
    meta = read_gguf(path)
    assert _delta(before) == (1, 0)
    assert meta == _exact(path)
    assert meta.vocab_size == len(tokens) and meta.name == "after" and meta.parameters == 264
    if next_key == "llama.context_length":
        assert meta.context_length == 2048


@pytest.mark.parametrize("trailing_key", [False, True])
def test_unusual_next_key_falls_back_to_the_walk(tmp_path: Path, trailing_key: bool) -> None:
    tokens, _ = fake_vocab(gguf_reader._JUMP_MIN_STRINGS + 900, 0, seed=4)
    kvs = [
        raw_string_array("tokenizer.ggml.tokens", tokens),
        raw_kv("zzz.unheard_of", T_UINT32, U32.pack(7)),
        raw_kv("general.architecture", T_STRING, raw_string("llama")),  # a later candidate
    ]
    if trailing_key:
        kvs.append(raw_kv("general.name", T_STRING, raw_string("m")))
    path = _write(tmp_path, raw_gguf(kvs))
    before = _jump_stats()
    meta = read_gguf(path)
    if trailing_key:
        # The search passes over the unusual key and lands on general.architecture; the rest
        # of the header then fails to parse, so the file is read again with the exact walk.
        assert _delta(before) == (0, 1)
    else:
        # No key follows general.architecture, so it is no candidate: the array is walked.
        assert _delta(before) == (0, 0)
    assert meta == _exact(path)
    assert meta.architecture == "llama" and meta.vocab_size == len(tokens)


@pytest.mark.parametrize("with_tensors", [False, True])
def test_big_array_as_the_last_key_value_is_walked(tmp_path: Path, with_tensors: bool) -> None:
    tokens, _ = fake_vocab(gguf_reader._JUMP_MIN_STRINGS + 900, 0, seed=5)
    kvs = [
        raw_kv("general.architecture", T_STRING, raw_string("llama")),
        raw_string_array("tokenizer.ggml.tokens", tokens),
    ]
    tensors = [raw_tensor_info("token_embd.weight", [64], 0)] if with_tensors else []
    path = _write(tmp_path, raw_gguf(kvs, tensors, 256 if with_tensors else 0))
    before = _jump_stats()
    meta = read_gguf(path)
    assert _delta(before) == (0, 0)
    assert meta == _exact(path)
    assert meta.vocab_size == len(tokens)
    assert meta.parameters == (64 if with_tensors else 0)


def _token_with(payload: bytes) -> bytes:
    """A token string carrying ``payload`` (bytes that look like key/value pairs)."""
    return b"x" + payload


# payload -> (bytes, expected (jumps, rejected parses))
_FAKE_PAYLOADS = {
    # A fake next key followed by another plausible key passes the local checks; the rest of
    # the header does not parse after it, so the file is read again with the exact walk.
    "fake-key-chain": (
        raw_kv("tokenizer.ggml.scores", T_UINT32, U32.pack(1))
        + raw_kv("general.fake", T_UINT32, U32.pack(2)),
        (0, 1),
    ),
    # A copy of the real rest of the key/values: parses, then the tensor infos do not.
    "copy-of-the-rest": (
        raw_kv("tokenizer.ggml.bos_token_id", T_UINT32, U32.pack(1))
        + raw_kv("general.name", T_STRING, raw_string("real")),
        (0, 1),
    ),
    # Fake keys failing the local checks: skipped, the real next key is found.
    "huge-string": (
        raw_kv("tokenizer.ggml.scores", T_STRING, raw_string("s", declared=2**40)),
        (1, 0),
    ),
    "huge-array": (
        raw_kv("tokenizer.ggml.scores", T_ARRAY, raw_array(T_FLOAT32, 2**40)),
        (1, 0),
    ),
    "bad-type": (raw_kv("tokenizer.ggml.scores", 13, U32.pack(1)), (1, 0)),
    # Too many hits to check: the array is walked.
    "many-prefixes": (raw_string("tokenizer.a") + raw_string("b"), (0, 0)),
}


@pytest.mark.parametrize("payload", list(_FAKE_PAYLOADS), ids=str)
@pytest.mark.parametrize("where", [-5, -60, -2000])
def test_fake_key_inside_a_token_string(tmp_path: Path, payload: str, where: int) -> None:
    """A crafted token that embeds what looks like the next key: the reader agrees with the
    exact walk (or fails cleanly), never crashes, and stays fast."""
    fake, expected = _FAKE_PAYLOADS[payload]
    tokens: list[str | bytes] = list(fake_vocab(gguf_reader._JUMP_MIN_STRINGS + 2000, 0)[0])
    tokens[where] = _token_with(fake)
    if payload == "many-prefixes":  # more hits than the search checks
        for i in range(len(tokens) - 1500, len(tokens), 3):
            tokens[i] = _token_with(fake)
    kvs = [
        raw_kv("general.architecture", T_STRING, raw_string("llama")),
        raw_string_array("tokenizer.ggml.tokens", tokens),
        raw_kv("tokenizer.ggml.bos_token_id", T_UINT32, U32.pack(1)),
        raw_kv("general.name", T_STRING, raw_string("real")),
    ]
    tensors = [raw_tensor_info("token_embd.weight", [64, 2], 0)]
    path = _write(tmp_path, raw_gguf(kvs, tensors, 512))
    before = _jump_stats()
    start = time.perf_counter()
    try:
        result: object = read_gguf(path)
    except MetadataError as exc:
        result = exc
    assert time.perf_counter() - start < 1.0
    assert _delta(before) == expected
    exact = _exact(path)
    if isinstance(result, MetadataError):
        assert isinstance(exact, MetadataError)
    else:
        assert result == exact
        assert result.name == "real" and result.vocab_size == len(tokens)  # type: ignore[attr-defined]


@pytest.mark.parametrize("flaw", ["overlap", "trailing-bytes", "non-ascii-key"])
def test_jump_is_verified_by_the_rest_of_the_header(tmp_path: Path, flaw: str) -> None:
    """Files the exact walk accepts but that fail the jump's extra checks: read again exactly."""
    tokens, _ = fake_vocab(gguf_reader._JUMP_MIN_STRINGS + 900, 0, seed=6)
    kvs = [
        raw_kv("general.architecture", T_STRING, raw_string("llama")),
        raw_string_array("tokenizer.ggml.tokens", tokens),
        raw_kv("tokenizer.ggml.bos_token_id", T_UINT32, U32.pack(1)),
        raw_kv("general.name", T_STRING, raw_string("m")),
    ]
    tensors = [raw_tensor_info("a", [64], 0), raw_tensor_info("b", [64], 0, 256)]
    data_bytes = 512
    if flaw == "overlap":
        tensors[1] = raw_tensor_info("b", [64], 0, 128)  # overlaps "a" (256 bytes at 0)
        data_bytes = 384
    elif flaw == "trailing-bytes":
        data_bytes += 4096
    else:
        kvs.append(raw_kv("general.naïve", T_UINT32, U32.pack(1)))
    path = _write(tmp_path, raw_gguf(kvs, tensors, data_bytes))
    before = _jump_stats()
    meta = read_gguf(path)
    assert _delta(before) == (0, 1)
    assert meta == _exact(path)
    assert meta.vocab_size == len(tokens) and meta.parameters == 128


@pytest.mark.parametrize("seed", range(6))
def test_string_array_skipping_matches_a_plain_walk(tmp_path: Path, seed: int) -> None:
    """Random lengths (0 .. >255, NULs, bytes that look like length prefixes) and counts."""
    rng = random.Random(seed)
    arrays = []
    for _ in range(4):
        count = rng.choice([0, 1, 31, 32, 33, 1023, 1024, 1025, 2100, rng.randrange(5000)])
        strings = []
        for _ in range(count):
            kind = rng.random()
            if kind < 0.9:
                n = rng.randrange(0, 24)
            elif kind < 0.97:
                n = rng.randrange(24, 300)
            else:
                n = rng.randrange(300, 3000)
            alphabet = [b"\x00", b"\x05", b"a", b"\xc4\xa0", bytes([n & 0xFF])]
            strings.append(b"".join(rng.choice(alphabet) for _ in range(n))[:n])
        arrays.append(strings)
    kvs = [raw_kv("general.architecture", T_STRING, raw_string("llama"))]
    for i, strings in enumerate(arrays):
        items = b"".join(raw_string(s) for s in strings)
        kvs.append(raw_kv(f"test.strings{i}", T_ARRAY, raw_array(T_STRING, len(strings), items)))
        kvs.append(raw_kv(f"test.after{i}", T_UINT32, U32.pack(1000 + i)))
    kvs.append(raw_kv("llama.context_length", T_UINT32, U32.pack(777)))
    data = raw_header(0, len(kvs)) + b"".join(kvs)
    path = tmp_path / "strings.gguf"
    path.write_bytes(data)
    meta = read_gguf(path)
    assert meta.context_length == 777
    assert meta.architecture == "llama"


@pytest.mark.parametrize("typical", [3, 9, 14, 40])
def test_big_string_arrays_of_every_length_profile(tmp_path: Path, typical: int) -> None:
    """Arrays big enough to be sampled: each pattern family, with long and empty strings."""
    rng = random.Random(typical)
    strings = [b"x" * max(0, typical + rng.randrange(-3, 4)) for _ in range(6000)]
    for i in rng.sample(range(6000), 40):
        strings[i] = b"L" * rng.choice([0, 255, 256, 1000])
    items = b"".join(raw_string(s) for s in strings)
    kvs = [
        raw_kv("tokenizer.ggml.tokens", T_ARRAY, raw_array(T_STRING, len(strings), items)),
        raw_kv("general.architecture", T_STRING, raw_string("llama")),
        raw_kv("llama.block_count", T_UINT32, U32.pack(12)),
    ]
    meta = read_gguf(_write(tmp_path, raw_header(0, len(kvs)) + b"".join(kvs)))
    assert meta.vocab_size == 6000
    assert meta.n_layers == 12
    # One byte short anywhere in the last string: truncated, never misparsed.
    cut = raw_header(0, 1) + kvs[0][:-1]
    _raises(_write(tmp_path, cut, "cut.gguf"), "truncated")


def test_split_set_sums_shards(tmp_path: Path) -> None:
    shards = write_split_gguf(tmp_path, "Split-F16", 3)
    assert all(p.exists() for p in shards)
    first = read_gguf(shards[0])
    assert first.split_count == 3 and first.extra["split_no"] == 0
    assert first.parameters == 16 * 64
    second = read_gguf(shards[1])
    assert second.architecture is None  # only split.* keys in later shards
    assert second.extra["split_no"] == 1

    whole = read_gguf_set(reversed(shards))
    assert whole.split_count == 3
    assert whole.parameters == 3 * 16 * 64
    assert whole.tensor_bytes == 3 * 16 * 64 * 2
    assert whole.architecture == "llama" and whole.name == "Split Llama"
    assert whole.quantization == "F16"
    assert whole.extra["n_tensors"] == 3
    assert whole.extra["shard_files"] == [p.name for p in shards]
    assert read_gguf_model(shards[1]) == whole
    assert gguf_shard_paths(shards[2]) == shards


def test_split_set_errors(tmp_path: Path) -> None:
    shards = write_split_gguf(tmp_path, "s", 3)
    with pytest.raises(MetadataError, match="missing shard"):
        read_gguf_set(shards[:2])
    with pytest.raises(MetadataError, match="twice"):
        read_gguf_set([*shards, shards[0]])
    other = write_split_gguf(tmp_path, "t", 2)
    with pytest.raises(MetadataError, match="not one split GGUF set"):
        read_gguf_set([*shards, *other])
    with pytest.raises(MetadataError, match="no GGUF files"):
        read_gguf_set([])
    # A 2-shard set copied under 3-shard names: the header disagrees with the names.
    renamed = [tmp_path / f"v-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    for src, dst in zip([other[0], other[1], other[1]], renamed, strict=True):
        dst.write_bytes(src.read_bytes())
    with pytest.raises(MetadataError, match=r"split\.count=2"):
        read_gguf_set(renamed)
    # Shards swapped on disk.
    swapped = [tmp_path / f"w-{i:05d}-of-00002.gguf" for i in (1, 2)]
    swapped[0].write_bytes(other[1].read_bytes())
    swapped[1].write_bytes(other[0].read_bytes())
    with pytest.raises(MetadataError, match=r"split\.no=1"):
        read_gguf_set(swapped)
    shards[1].unlink()
    with pytest.raises(MetadataError, match="missing shard"):
        read_gguf_set([shards[0], shards[2]])
    with pytest.raises(MetadataError, match="cannot read"):
        read_gguf_model(shards[0])


def test_single_non_shard_set(small_gguf: Path) -> None:
    assert read_gguf_set([small_gguf]) == read_gguf(small_gguf)
    assert read_gguf_model(small_gguf) == read_gguf(small_gguf)
    assert gguf_shard_paths(small_gguf) == [small_gguf]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model-00001-of-00003.gguf", ("model", 1, 3)),
        ("/x/Qwen3-Q4_K_M-00003-of-00003.GGUF", ("Qwen3-Q4_K_M", 3, 3)),
        ("a-b-00002-of-00010.gguf", ("a-b", 2, 10)),
        ("model-00000-of-00003.gguf", None),
        ("model-00004-of-00003.gguf", None),
        ("model-0001-of-0003.gguf", None),
        ("model-00001-of-00003.safetensors", None),
        ("model.gguf", None),
    ],
)
def test_split_gguf_info(name: str, expected: tuple[str, int, int] | None) -> None:
    assert split_gguf_info(name) == expected


# -- quant tables -------------------------------------------------------------------------------


def test_file_type_table_covers_llama_ftype() -> None:
    for ftype in LlamaFileType:
        if ftype is LlamaFileType.GUESSED:
            continue
        expected = ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        assert file_type_name(int(ftype)) == expected
    assert file_type_name(15) == "Q4_K_M"
    assert file_type_name(32) == "BF16"
    assert file_type_name(38) == "MXFP4_MOE"
    assert file_type_name(36) == "TQ1_0" and file_type_name(37) == "TQ2_0"
    assert file_type_name(15 | 1024) == "Q4_K_M"
    assert file_type_name(None) is None and file_type_name(12345) is None
    assert file_type_name(True) is None  # type: ignore[arg-type]
    assert len(FILE_TYPE_NAMES) == 41


def test_tensor_type_table_matches_gguf_py() -> None:
    for qtype, (block, size) in GGML_QUANT_SIZES.items():
        assert GGML_TYPES[int(qtype)] == (qtype.name, block, size)
    assert tensor_type_name(12) == "Q4_K" and tensor_type_name(4) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model-Q4_K_M.gguf", "Q4_K_M"),
        ("llama-2-7b.q8_0.gguf", "Q8_0"),
        ("Qwen3-8B-IQ3_XXS.gguf", "IQ3_XXS"),
        ("x-IQ3_XS.gguf", "IQ3_XS"),
        ("gemma-bf16.gguf", "BF16"),
        ("ggml-model-f16.gguf", "F16"),
        ("model-fp32.gguf", "F32"),
        ("Qwen3-30B-A3B-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("gpt-oss-20b-mxfp4.gguf", "MXFP4_MOE"),
        ("m-TQ1_0.gguf", "TQ1_0"),
        ("m-IQ4_NL.gguf", "IQ4_NL"),
        ("Q5_K_M/model-00001-of-00002.gguf", "Q5_K_M"),
        ("q8_0", "Q8_0"),
        ("llama-7b.gguf", None),
        ("xq8_0.gguf", None),
        ("mf16x.gguf", None),
    ],
)
def test_guess_quant_from_filename(name: str, expected: str | None) -> None:
    assert guess_quant_from_filename(name) == expected


# -- hostile and truncated input ----------------------------------------------------------------


def _write(tmp_path: Path, data: bytes, name: str = "bad.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _minimal(kvs: list[bytes], tensors: Sequence[bytes] = (), tail: bytes = b"") -> bytes:
    return raw_header(len(tensors), len(kvs)) + b"".join(kvs) + b"".join(tensors) + tail


def _raises(path: Path, match: str | None = None) -> MetadataError:
    start = time.perf_counter()
    with pytest.raises(MetadataError, match=match) as info:
        read_gguf(path)
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert isinstance(info.value, ModelDeckError)
    return info.value


def test_every_truncation_raises_metadata_error(
    small_gguf: Path, tmp_path: Path, jump_mode: str
) -> None:
    data = small_gguf.read_bytes()
    assert len(data) % 32 == 0 and len(data) < 16_000
    before = _jump_stats()
    read_gguf(small_gguf)
    assert _delta(before) == ((2, 0) if jump_mode == "jump" else (0, 0))  # tokens, merges
    cut = tmp_path / "cut.gguf"
    for size in range(len(data)):
        cut.write_bytes(data[:size])
        try:
            read_gguf(cut)
        except MetadataError:
            continue
        pytest.fail(f"truncation at {size} of {len(data)} bytes was not detected")


def test_random_corruption_never_raises_anything_else(
    small_gguf: Path, tmp_path: Path, jump_mode: str
) -> None:
    data = small_gguf.read_bytes()
    rng = random.Random(1234)
    path = tmp_path / "fuzz.gguf"
    header_end = 2400  # mutate mostly the header, where the parsing happens
    for _ in range(1500):
        mutated = bytearray(data)
        for _ in range(rng.choice([1, 1, 2, 4, 16])):
            i = rng.randrange(min(header_end, len(mutated)))
            mutated[i] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        path.write_bytes(bytes(mutated))
        start = time.perf_counter()
        try:
            meta = read_gguf(path)
        except MetadataError:
            meta = None
        assert time.perf_counter() - start < 1.0
        if jump_mode == "jump" and meta is not None:
            # A jump skips the array's inner lengths, so it may accept a file whose array
            # interior is corrupt; when the exact walk reads the file too, they agree.
            exact = _exact(path)
            assert isinstance(exact, MetadataError) or repr(meta) == repr(exact)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty file"),
        (b"GG", "truncated"),
        (b"GGML" + bytes(40), "bad magic|not a GGUF"),
        (b"\x7fELF" + bytes(40), "not a GGUF"),
        (raw_header(version=1), "unsupported GGUF version 1"),
        (raw_header(version=4), "unsupported GGUF version 4"),
        (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
        (raw_header(n_kv=2**63), "metadata keys"),
        (raw_header(n_tensors=2**40), "tensors"),
        (raw_header(n_tensors=1_000_001), "limit"),
        (raw_header(n_tensors=1000, n_kv=10) + bytes(100), "more than the file can hold"),
    ],
    ids=_param_id,
)
def test_bad_headers(tmp_path: Path, data: bytes, match: str) -> None:
    _raises(_write(tmp_path, data), match)


def test_tiny_file_declaring_2_63_elements_fails_fast(tmp_path: Path) -> None:
    # 24-byte header + empty key + value type + element type + element count = 48 bytes.
    data = raw_header(0, 1) + raw_kv("", T_ARRAY, raw_array(T_UINT8, 2**63))
    assert len(data) == 48
    _raises(_write(tmp_path, data), "declares 9223372036854775808 elements")
    # Same with a string array and with a truncated count field (43 bytes).
    _raises(_write(tmp_path, raw_header(0, 1) + raw_kv("a", T_ARRAY, raw_array(T_STRING, 2**63))))
    _raises(_write(tmp_path, data[:43]), "truncated")


@pytest.mark.parametrize(
    ("kv", "match"),
    [
        (raw_string("k", declared=2**63), "truncated"),  # key length
        (raw_string("k" * 70_000), "a metadata key is 70000 bytes long"),
        (raw_kv("k", T_STRING, raw_string("v", declared=2**40)), "truncated"),
        (raw_kv("k", 13, b"\0" * 8), "unknown GGUF value type 13"),
        (raw_kv("k", 0xFFFFFFFF, b"\0" * 8), "unknown GGUF value type"),
        (raw_kv("k", T_ARRAY, raw_array(99, 1, b"\0" * 8)), "unknown element type 99"),
        (
            raw_kv(
                "k", T_ARRAY, raw_array(T_STRING, 3, raw_string("a") + raw_string("b", declared=99))
            ),
            "truncated",
        ),
        (
            raw_kv("k", T_ARRAY, raw_array(T_STRING, 2, raw_string("a", declared=2**62))),
            "truncated",
        ),
        (
            raw_kv("k", T_ARRAY, raw_array(T_ARRAY, 1, raw_array(T_ARRAY, 1, raw_array(0, 0)))),
            "nests arrays deeper",
        ),
        (
            raw_kv("k", T_ARRAY, raw_array(T_ARRAY, 70_000, raw_array(0, 0) * 70_000)),
            "nested arrays",
        ),
        (
            raw_kv("tokenizer.chat_template", T_STRING, raw_string("x" * (1024 * 1024 + 1))),
            "chat template",
        ),
        (raw_kv("general.alignment", T_UINT32, U32.pack(0)), "power of two"),
        (raw_kv("general.alignment", T_UINT32, U32.pack(48)), "power of two"),
        (raw_kv("general.alignment", T_FLOAT32, struct.pack("<f", 32.0)), "power of two"),
    ],
    ids=_param_id,
)
def test_hostile_key_values(tmp_path: Path, kv: bytes, match: str) -> None:
    _raises(_write(tmp_path, _minimal([kv], tail=bytes(64))), match)


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    kv = raw_kv("general.name", T_STRING, raw_string("x"))
    _raises(_write(tmp_path, _minimal([kv, kv])), "duplicate")


def test_long_plain_strings_are_skipped_not_fatal(tmp_path: Path) -> None:
    kvs = [
        raw_kv("general.description", T_STRING, raw_string("d" * 100_000)),
        raw_kv("general.architecture", T_STRING, raw_string("llama")),
        raw_kv(
            "llama.attention.head_count",
            T_ARRAY,
            raw_array(T_INT32, 3, struct.pack("<3i", 4, -1, 8)),
        ),
        raw_kv("general.nested", T_ARRAY, raw_array(T_ARRAY, 2, raw_array(0, 1, b"\1") * 2)),
        raw_kv("general.name", T_UINT32, U32.pack(5)),  # wrong type: ignored
    ]
    meta = read_gguf(_write(tmp_path, _minimal(kvs)))
    assert meta.architecture == "llama" and meta.n_heads == 8 and meta.name is None


@pytest.mark.parametrize(
    ("tensor", "data_bytes", "match"),
    [
        (raw_tensor_info("t", [1] * 100, 0), 0, "100 dimensions"),
        (raw_tensor_info("t", [1] * 9, 0), 0, "9 dimensions"),
        (raw_tensor_info("t" * 70_000, [1], 0), 0, "name is 70000 bytes"),
        (raw_string("t", declared=2**63), 0, "truncated"),
        (raw_tensor_info("t", [2**62, 4], 0), 0, "too many"),
        (raw_tensor_info("t", [2**40, 2**20], 0), 0, "tensor data needs"),
        (raw_tensor_info("t", [64], 0, offset=16), 256, "not a multiple of 32"),
        (raw_tensor_info("t", [33], 8), 64, "block size 32"),
        (raw_tensor_info("t", [], 8), 64, "row of 1 elements"),
        (raw_tensor_info("t", [64], 0), 255, "tensor data needs"),
    ],
    ids=_param_id,
)
def test_hostile_tensor_infos(tmp_path: Path, tensor: bytes, data_bytes: int, match: str) -> None:
    body = _minimal([], [tensor])
    padded = body + bytes(-len(body) % 32) + bytes(data_bytes)
    _raises(_write(tmp_path, padded), match)


def test_unknown_tensor_types_are_tolerated(tmp_path: Path) -> None:
    tensors = [raw_tensor_info("a", [64, 2], 0), raw_tensor_info("b", [10, 10], 200, offset=512)]
    body = _minimal([], tensors)
    meta = read_gguf(_write(tmp_path, body + bytes(-len(body) % 32) + bytes(512)))
    assert meta.parameters == 228
    assert meta.tensor_bytes is None
    assert meta.extra["unknown_tensor_types"] == [200]
    assert meta.extra["tensor_types"] == {"200": 100, "F32": 128}


def test_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="cannot read"):
        read_gguf(tmp_path / "missing.gguf")
    with pytest.raises(MetadataError, match="not a regular file"):
        read_gguf(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_like_a_model_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "model-Q4_K_M.gguf"
    os.mkfifo(fifo)
    _raises(fifo, "not a regular file")


def test_package_exports_the_readers_lazily() -> None:
    import tui.metadata as package

    assert package.read_gguf is read_gguf
    assert package.read_gguf_set is read_gguf_set
    assert package.guess_quant_from_filename is guess_quant_from_filename
    with pytest.raises(AttributeError):
        _ = package.not_a_reader


def test_runtime_imports_stay_light() -> None:
    code = (
        "import sys, tui.metadata.gguf, tui.metadata.safetensors, tui.metadata.quant;"
        "print(sorted(m for m in ('gguf', 'numpy', 'textual') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert out.stdout.strip() == "[]"


def test_matches_gguf_reader_on_a_real_file(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", n_vocab=1500, n_merges=1400, extra_tensors=5)
    reader = GGUFReader(path)
    meta = read_gguf(path)
    assert meta.vocab_size == len(reader.fields["tokenizer.ggml.tokens"].data)
    assert (meta.parameters, meta.tensor_bytes) == reference_counts(path)
    assert meta.extra["n_kv"] == len(reader.fields) - 3  # GGUF.* pseudo-fields
    assert meta.extra["n_tensors"] == len(reader.tensors) == 8
