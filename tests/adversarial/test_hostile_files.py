"""Hostile numbers in model files: every integer that leaves a reader is bounded.

GGUF u64/i64 values, safetensors shapes and config.json integers of thousands of digits either
become "unknown" with a note (``extra["ignored_values"]``) or make the file fail with one line;
nothing that leaves a reader can overflow SQLite's signed 64-bit INTEGER, blow up arithmetic or
make ``json.dumps`` write ``NaN``. Files are written by the real ``gguf`` and ``safetensors``
writers where they allow it, and byte by byte (``tests.support.gguf.raw_*``) where they refuse.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from tui.errors import MetadataError
from tui.metadata import read_gguf, read_safetensors_file, read_safetensors_folder
from tui.metadata.types import ModelMetadata

from tests.support.checks import assert_one_line_error, run_modeldeck, tree_digest
from tests.support.gguf import T_STRING, raw_gguf, raw_header, raw_kv, raw_string, raw_tensor_info
from tests.support.safetensors import write_safetensors_folder

U64_MAX = 2**64 - 1
SQLITE_INT_MIN, SQLITE_INT_MAX = -(2**63), 2**63 - 1  # what an INTEGER column holds


def assert_storable(meta: ModelMetadata) -> None:
    """Every number fits SQLite and the record is strict JSON (no NaN, no Infinity)."""

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, int) and not isinstance(value, bool):
            assert SQLITE_INT_MIN <= value <= SQLITE_INT_MAX, value

    data = meta.to_dict()
    walk(data)
    json.dumps(data, allow_nan=False)


# -- GGUF ------------------------------------------------------------------------------------


def write_gguf_with(path: Path, add: Callable[[gguf.GGUFWriter], None]) -> Path:
    """A small llama GGUF from ``gguf.GGUFWriter`` with the hostile values ``add`` writes."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    add(writer)
    writer.add_tensor("blk.0.weight", np.zeros((4, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    ("key", "kind", "value", "field", "expected"),
    [
        ("llama.context_length", "uint64", U64_MAX, "context_length", None),
        ("llama.context_length", "uint64", 2**63, "context_length", None),
        ("llama.block_count", "uint64", U64_MAX, "n_layers", None),
        ("llama.attention.head_count_kv", "uint64", 2**63, "n_kv_heads", 4),  # = head_count
        ("llama.attention.key_length", "int64", -1, "head_dim", 16),  # = 64 // 4
        ("llama.vocab_size", "uint64", U64_MAX, "vocab_size", None),
        ("general.file_type", "int64", -(2**63), "file_type", None),
    ],
    ids=lambda v: str(v),
)
def test_gguf_out_of_range_integers_become_unknown_with_a_reason(
    tmp_path: Path, key: str, kind: str, value: int, field: str, expected: int | None
) -> None:
    def add(writer: gguf.GGUFWriter) -> None:
        getattr(writer, f"add_{kind}")(key, value)

    meta = read_gguf(write_gguf_with(tmp_path / "m.gguf", add))
    assert getattr(meta, field) == expected
    assert str(value) in meta.extra["ignored_values"][field]
    assert meta.embedding_size == 64 and meta.parameters == 256  # the rest is still read
    assert_storable(meta)


def test_gguf_float_infinity_and_nan_are_dropped(tmp_path: Path) -> None:
    def add(writer: gguf.GGUFWriter) -> None:
        writer.add_float64("llama.rope.freq_base", float("inf"))
        writer.add_float32("llama.attention.layer_norm_rms_epsilon", float("nan"))

    meta = read_gguf(write_gguf_with(tmp_path / "m.gguf", add))
    assert "rope_freq_base" not in meta.extra
    assert_storable(meta)


def _tensor_file(path: Path, dims_list: list[list[int]], ggml_type: int) -> Path:
    kvs = [raw_kv("general.architecture", T_STRING, raw_string("llama"))]
    tensors = [raw_tensor_info(f"t{i}", dims, ggml_type) for i, dims in enumerate(dims_list)]
    path.write_bytes(raw_gguf(kvs, tensors, data_bytes=64))
    return path


def test_gguf_tensor_dims_multiplying_past_2_63_are_refused(tmp_path: Path) -> None:
    path = _tensor_file(tmp_path / "dims.gguf", [[2**32, 2**32, 2**8]], ggml_type=0)
    with pytest.raises(MetadataError, match="too many") as info:
        read_gguf(path)
    assert "\n" not in str(info.value)


def test_gguf_tensor_element_total_past_2_63_is_refused(tmp_path: Path) -> None:
    # Each tensor is below 2**63 elements, but of a type whose size is unknown, so the file
    # size does not bound them: their sum must not reach the inventory.
    path = _tensor_file(tmp_path / "sum.gguf", [[2**62], [2**62], [2**62]], ggml_type=99)
    with pytest.raises(MetadataError, match=r"more than 2\*\*63 elements in total"):
        read_gguf(path)


def test_gguf_declaring_2_31_tensors_is_refused_by_count(tmp_path: Path) -> None:
    path = tmp_path / "count.gguf"
    path.write_bytes(raw_header(n_tensors=2**31) + bytes(4096))
    with pytest.raises(MetadataError, match=r"2147483648 tensors \(limit"):
        read_gguf(path)


# -- safetensors -----------------------------------------------------------------------------


def write_st(path: Path) -> Path:
    """A real file from ``safetensors.numpy.save_file`` (two F32 tensors)."""
    save_file({"a": np.zeros((2, 4), dtype=np.float32), "b": np.ones(4, dtype=np.float32)}, path)
    return path


def patch_header(path: Path, change: Callable[[dict[str, Any]], Any], raw: bytes | None = None):
    """Rewrite the JSON header of ``path`` (``change`` edits the dict; ``raw`` replaces it)."""
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data)
    body = data[8 + n :]
    if raw is None:
        header = json.loads(data[8 : 8 + n])
        change(header)
        raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    return path


def _set(tensor: str, **fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda header: header[tensor].update(fields)


BIG_DIGITS = "9" * 5000


@pytest.mark.parametrize(
    ("change", "raw", "match"),
    [
        (_set("a", shape=[2**40, 2**40, 2**40]), None, r"more than 2\*\*63 elements"),
        (_set("a", shape=[-1, 5]), None, "invalid dtype, shape"),
        (_set("a", shape=[1] * 65), None, "invalid dtype, shape"),
        (_set("a", dtype="F" * 1000), None, "invalid dtype, shape"),
        (_set("a", data_offsets=[0, 2**64]), None, "truncated"),
        (_set("a", data_offsets=[0, 32], shape=[2, 2**61]), None, "needs"),
        (None, b'{"a": {"dtype": "F32", "shape": [' + BIG_DIGITS.encode() + b'], '
         b'"data_offsets": [0, 32]}}', "invalid dtype, shape"),
        (None, b'{"a": [' + b"[]," * 2_000_001 + b"[]]}", "tensors' worth of JSON"),
    ],
    ids=["2^120 elements", "negative dim", "65 dims", "long dtype", "offsets past the file",
         "shape past the data", "5000-digit dim", "2M arrays"],
)
def test_hostile_safetensors_headers_fail_with_one_line(
    tmp_path: Path, change: Callable | None, raw: bytes | None, match: str
) -> None:
    path = patch_header(write_st(tmp_path / "m.safetensors"), change or (lambda h: None), raw)
    with pytest.raises(MetadataError, match=match) as info:
        read_safetensors_file(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and len(message) < 1000
    assert "set_int_max_str_digits" not in message


def test_safetensors_header_of_100_mb_is_refused_by_size_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 100_000_000) + b"{")
        f.truncate(8 + 100_000_000 + 16)  # sparse: nothing is really written
    with pytest.raises(MetadataError, match="header is 100000000 bytes"):
        read_safetensors_file(path)


def test_safetensors_unknown_dtype_totals_past_2_63_become_unknown(tmp_path: Path) -> None:
    # Unknown dtypes have no byte size to check the shape against: each tensor is allowed,
    # their sum is not a count SQLite can hold.
    path = patch_header(write_st(tmp_path / "m.safetensors"), lambda h: h.update(
        a={"dtype": "X9", "shape": [2**61, 2], "data_offsets": [0, 32]},
        b={"dtype": "X9", "shape": [2**62], "data_offsets": [32, 48]},
    ))
    meta = read_safetensors_file(path)
    assert meta.parameters is None
    assert "parameters" in meta.extra["ignored_values"]
    assert_storable(meta)


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def hostile_config(folder: Path) -> Path:
    """config.json with a 5000-digit and a 4000-digit integer, 1e400, NaN, a negative count
    and a 200-deep object: written as text, since json.dumps would not write most of it."""
    (folder / "config.json").write_text(
        "{"
        '"model_type": "llama", "architectures": ["LlamaForCausalLM"], '
        f'"max_position_embeddings": {BIG_DIGITS}, '
        f'"num_hidden_layers": {"8" * 4000}, '
        '"hidden_size": 1e400, "rope_theta": 1e400, '
        '"num_attention_heads": NaN, "num_key_value_heads": -2, '
        '"vocab_size": 32, '
        f'"quantization_config": {nested(200)}, '
        '"_name_or_path": "name\\ud800"'
        "}"
    )
    return folder


def test_config_json_hostile_numbers_become_unknown(tmp_path: Path) -> None:
    folder = hostile_config(write_safetensors_folder(tmp_path / "st"))
    meta = read_safetensors_folder(folder)
    assert meta.context_length is None and meta.n_layers is None
    assert meta.embedding_size is None and meta.n_heads is None and meta.n_kv_heads is None
    assert meta.vocab_size == 32 and meta.architecture == "llama"
    assert meta.parameters == 2 * 32 * 16  # the weights are still read
    assert "rope_freq_base" not in meta.extra
    ignored = meta.extra["ignored_values"]
    assert ignored["context_length"] == "a 5000-digit number"
    assert ignored["n_layers"].startswith("a 4000-digit number")
    assert ignored["n_kv_heads"].startswith("-2")
    assert meta.name == "name?"  # a lone surrogate neither SQLite nor a terminal can take
    assert_storable(meta)


def test_config_json_of_50_mb_is_refused_by_size(tmp_path: Path) -> None:
    folder = write_safetensors_folder(tmp_path / "st")
    with open(folder / "config.json", "wb") as f:
        f.truncate(50 << 20)  # sparse
    with pytest.raises(MetadataError, match="too large"):
        read_safetensors_folder(folder)


# -- the CLI ---------------------------------------------------------------------------------


def test_info_on_hostile_paths_is_one_line_and_touches_nothing(tmp_path: Path) -> None:
    models, state = tmp_path / "models", tmp_path / "state"
    models.mkdir()
    state.mkdir()
    dims = _tensor_file(models / "dims.gguf", [[2**32, 2**32, 2**8]], ggml_type=0)
    header = tmp_path / "outside" / "model.safetensors"
    header.parent.mkdir()
    patch_header(write_st(header), _set("a", shape=[2**40, 2**40, 2**40]))
    env = {"MODELDECK_MODELS_DIR": str(models), "MODELDECK_STATE_DIR": str(state),
           "MODELDECK_SCAN_HF_CACHE": "0"}
    before = tree_digest(tmp_path, skip=(state,))
    for target, needle in ((dims, "too many"), (header, "2**63")):
        proc = run_modeldeck("info", str(target), env=env)
        assert_one_line_error(proc, str(target), needle)
    assert tree_digest(tmp_path, skip=(state,)) == before
