"""Safetensors folder/file reader: configs, shards, chat templates, hostile headers."""

from __future__ import annotations

import json
import math
import os
import random
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tui.errors import MetadataError
from tui.metadata.safetensors import (
    DTYPE_BITS,
    read_safetensors,
    read_safetensors_file,
    read_safetensors_folder,
)

LLAMA_CONFIG: dict[str, Any] = {
    "_name_or_path": "acme/tiny-llama",
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "max_position_embeddings": 8192,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "hidden_size": 256,
    "vocab_size": 32000,
    "rope_theta": 500000.0,
    "torch_dtype": "bfloat16",
}


def _param_id(value: object) -> str:
    """Short test ids: strings as they are, anything else (raw bytes) as "data"."""
    return value if isinstance(value, str) and len(value) <= 40 else "data"


def header_bytes(
    tensors: dict[str, tuple[str, list[int]]], metadata: dict[str, str] | None = None
) -> tuple[bytes, int]:
    """(8-byte length + JSON header padded to 8 bytes, data length) for zero-filled tensors."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, (dtype, shape) in tensors.items():
        nbytes = (math.prod(shape) * DTYPE_BITS[dtype] + 7) // 8
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offset


def write_st(
    path: Path,
    tensors: dict[str, tuple[str, list[int]]],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a safetensors file by hand: header length, JSON header, zero bytes."""
    head, data_len = header_bytes(tensors, metadata)
    path.write_bytes(head + bytes(data_len))
    return path


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


TENSORS: dict[str, tuple[str, list[int]]] = {
    "model.embed_tokens.weight": ("BF16", [32, 16]),
    "model.layers.0.self_attn.q_proj.weight": ("BF16", [16, 16]),
    "model.norm.weight": ("F32", [16]),
}
PARAMS = 32 * 16 + 16 * 16 + 16
NBYTES = (32 * 16 + 16 * 16) * 2 + 16 * 4


@pytest.fixture
def llama_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-llama"
    folder.mkdir()
    write_json(folder / "config.json", LLAMA_CONFIG)
    write_st(folder / "model.safetensors", TENSORS, {"format": "pt"})
    write_json(
        folder / "tokenizer_config.json",
        {"chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"},
    )
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02 not really a pickle")
    (folder / "training_args.bin").write_bytes(b"x")
    return folder


def test_folder_fields(llama_folder: Path) -> None:
    meta = read_safetensors_folder(llama_folder)
    assert meta.format == "safetensors"
    assert meta.architecture == "llama"
    assert meta.name == "acme/tiny-llama"
    assert meta.context_length == 8192
    assert meta.n_layers == 4
    assert meta.n_heads == 8
    assert meta.n_kv_heads == 2
    assert meta.embedding_size == 256
    assert meta.head_dim == 32
    assert meta.vocab_size == 32000
    assert meta.parameters == PARAMS
    assert meta.tensor_bytes == NBYTES
    assert meta.dtype == "BF16"
    assert meta.quantization == "BF16"
    assert meta.file_type is None and meta.split_count is None
    assert meta.has_chat_template is True
    assert meta.chat_template is not None and meta.chat_template.startswith("{{ bos_token }}")
    assert meta.extra["hf_architecture"] == "LlamaForCausalLM"
    assert meta.extra["pickle_weights"] == ["pytorch_model.bin", "training_args.bin"]
    assert meta.extra["weight_files"] == ["model.safetensors"]
    assert meta.extra["n_tensors"] == 3
    assert meta.extra["rope_freq_base"] == 500000.0
    assert meta.extra["torch_dtype"] == "bfloat16"
    json.dumps(meta.to_dict())
    assert read_safetensors(llama_folder) == meta


def test_file_written_by_the_safetensors_package(tmp_path: Path) -> None:
    st_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "weights.safetensors"
    st_numpy.save_file(
        {
            "a": np.zeros((3, 5), dtype=np.float16),
            "b": np.zeros((7,), dtype=np.float32),
            "c": np.zeros((2, 2, 2), dtype=np.int8),
        },
        str(path),
        metadata={"format": "np"},
    )
    meta = read_safetensors_file(path)
    assert meta.parameters == 15 + 7 + 8
    assert meta.tensor_bytes == 30 + 28 + 8
    assert meta.dtype == "F16" and meta.quantization == "F16"
    assert meta.extra["n_tensors"] == 3
    assert meta.extra["header_metadata"] == {"format": "np"}
    assert meta.architecture is None
    assert read_safetensors(path) == meta


def test_sharded_with_index_ignores_other_files(tmp_path: Path) -> None:
    shard1 = {"a": ("F16", [64, 64])}
    shard2 = {"b": ("F16", [64, 32]), "c": ("F32", [10])}
    write_st(tmp_path / "model-00001-of-00002.safetensors", shard1)
    write_st(tmp_path / "model-00002-of-00002.safetensors", shard2)
    write_st(
        tmp_path / "consolidated.safetensors", {"x": ("F32", [1000])}
    )  # same weights, other layout
    write_json(
        tmp_path / "model.safetensors.index.json",
        {
            "metadata": {"total_size": 64 * 64 * 2 + 64 * 32 * 2 + 40},
            "weight_map": {
                "a": "model-00001-of-00002.safetensors",
                "b": "model-00002-of-00002.safetensors",
                "c": "model-00002-of-00002.safetensors",
            },
        },
    )
    meta = read_safetensors_folder(tmp_path)
    assert meta.parameters == 64 * 64 + 64 * 32 + 10
    assert meta.tensor_bytes == 64 * 64 * 2 + 64 * 32 * 2 + 40
    assert meta.extra["index_total_size"] == meta.tensor_bytes
    assert meta.extra["weight_files"] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert meta.extra["index_file"] == "model.safetensors.index.json"
    assert meta.architecture is None  # no config.json
    assert "pickle_weights" not in meta.extra

    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(MetadataError, match="missing shard model-00002-of-00002"):
        read_safetensors_folder(tmp_path)


def test_sharded_without_index(tmp_path: Path) -> None:
    for i in (1, 2, 3):
        write_st(tmp_path / f"model-0000{i}-of-00003.safetensors", {f"t{i}": ("BF16", [8, 8])})
    write_st(tmp_path / "adapter_model.safetensors", {"lora": ("F32", [4])})
    meta = read_safetensors_folder(tmp_path)
    assert meta.parameters == 3 * 64
    assert len(meta.extra["weight_files"]) == 3
    (tmp_path / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(MetadataError, match="missing shard model-00002-of-00003"):
        read_safetensors_folder(tmp_path)


def test_all_single_files_are_summed_without_model_safetensors(tmp_path: Path) -> None:
    write_st(tmp_path / "a.safetensors", {"x": ("F32", [4])})
    write_st(tmp_path / "b.safetensors", {"y": ("F32", [6])})
    assert read_safetensors_folder(tmp_path).parameters == 10


@pytest.mark.parametrize(
    "target",
    ["../outside.safetensors", "/etc/passwd", "sub/x.safetensors", "x.bin", 5, ["a"], None],
)
def test_index_cannot_point_outside_the_folder(tmp_path: Path, target: Any) -> None:
    write_st(tmp_path / "model-00001-of-00001.safetensors", {"a": ("F32", [1])})
    write_json(tmp_path / "model.safetensors.index.json", {"weight_map": {"a": target}})
    with pytest.raises(MetadataError, match="weight_map"):
        read_safetensors_folder(tmp_path)


def test_no_safetensors(tmp_path: Path) -> None:
    write_json(tmp_path / "config.json", LLAMA_CONFIG)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(MetadataError, match=r"no \.safetensors weights in"):
        read_safetensors_folder(tmp_path)
    with pytest.raises(MetadataError, match="cannot list"):
        read_safetensors_folder(tmp_path / "missing")


def test_multimodal_text_config_and_quantization(tmp_path: Path) -> None:
    config = {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "text_config": {
            "model_type": "mistral",
            "max_position_embeddings": 32768,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "hidden_size": 4096,
            "head_dim": 128,
            "vocab_size": 131072,
            "num_local_experts": 8,
            "num_experts_per_tok": 2,
        },
        "vision_config": {"hidden_size": 1024, "num_attention_heads": 16},
        "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128},
    }
    write_json(tmp_path / "config.json", config)
    write_st(tmp_path / "model.safetensors", {"q": ("I32", [16, 4]), "s": ("F16", [4])})
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    meta = read_safetensors_folder(tmp_path)
    assert meta.architecture == "llava"
    assert meta.extra["hf_architecture"] == "LlavaForConditionalGeneration"
    assert meta.context_length == 32768
    assert meta.n_layers == 32
    assert meta.n_heads == 32 and meta.n_kv_heads == 32
    assert meta.embedding_size == 4096 and meta.head_dim == 128
    assert meta.vocab_size == 131072
    assert meta.extra["expert_count"] == 8 and meta.extra["expert_used_count"] == 2
    assert meta.quantization == "GPTQ-4bit"
    assert meta.dtype == "I32"
    assert meta.chat_template == "{{ messages }}"


def test_chat_template_variants(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors", {"a": ("F32", [1])})
    assert read_safetensors_folder(tmp_path).has_chat_template is False
    write_json(
        tmp_path / "tokenizer_config.json",
        {
            "chat_template": [
                {"name": "tool_use", "template": "T"},
                {"name": "default", "template": "D"},
            ]
        },
    )
    assert read_safetensors_folder(tmp_path).chat_template == "D"
    write_json(tmp_path / "tokenizer_config.json", {"eos_token": "</s>"})
    write_json(tmp_path / "chat_template.json", {"chat_template": "P"})
    meta = read_safetensors_folder(tmp_path)
    assert meta.has_chat_template and meta.chat_template == "P"
    (tmp_path / "chat_template.jinja").write_text("x" * (1024 * 1024 + 1))
    with pytest.raises(MetadataError, match=r"chat_template\.jinja"):
        read_safetensors_folder(tmp_path)


def test_multi_query_config(tmp_path: Path) -> None:
    write_json(
        tmp_path / "config.json",
        {
            "model_type": "gpt_bigcode",
            "n_head": 16,
            "n_embd": 1024,
            "n_layer": 2,
            "n_positions": 2048,
            "multi_query": True,
        },
    )
    write_st(tmp_path / "model.safetensors", {"a": ("F32", [1])})
    meta = read_safetensors_folder(tmp_path)
    assert (meta.n_heads, meta.n_kv_heads, meta.head_dim) == (16, 1, 64)
    assert meta.context_length == 2048 and meta.n_layers == 2


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("config.json", b"{not json", "config.json: not valid JSON"),
        ("config.json", b"[1, 2]", "not a JSON object"),
        ("config.json", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not valid JSON"),
        ("tokenizer_config.json", b"\xff\xfe garbage", "tokenizer_config.json"),
        ("model.safetensors.index.json", b'{"weight_map": {}}', "no weight_map"),
    ],
    ids=_param_id,
)
def test_bad_json_files(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    write_st(tmp_path / "model.safetensors", {"a": ("F32", [1])})
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MetadataError, match=match):
        read_safetensors_folder(tmp_path)


def test_oversized_config_is_refused_without_reading_it(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors", {"a": ("F32", [1])})
    with open(tmp_path / "config.json", "wb") as fp:
        fp.truncate(33 << 20)  # sparse
    with pytest.raises(MetadataError, match="too large"):
        read_safetensors_folder(tmp_path)


def _file_error(tmp_path: Path, data: bytes, match: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    start = time.perf_counter()
    with pytest.raises(MetadataError, match=match) as info:
        read_safetensors_file(path)
    assert time.perf_counter() - start < 1.0
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _header(obj: Any, data: bytes = b"") -> bytes:
    raw = json.dumps(obj).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "truncated"),
        (b"\x01\x02\x03", "truncated"),
        (struct.pack("<Q", (64 << 20) + 1) + b"{}", "limit 64 MiB"),
        (struct.pack("<Q", 2**64 - 1), "limit 64 MiB"),
        (struct.pack("<Q", 1000) + b"{}", "truncated"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
        (struct.pack("<Q", 4) + b"{abc", "not valid JSON"),
        (_header({"a": ("F32", [1])}), "no description"),
        (_header({"a": 5}), "no description"),
        (_header({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}), "invalid"),
        (_header({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}), "invalid"),
        (
            _header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, bytes(4)),
            "invalid",
        ),
        (_header({"a": {"dtype": 3, "shape": [1], "data_offsets": [0, 4]}}, bytes(4)), "invalid"),
        (
            _header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(3)),
            "truncated",
        ),
        (
            _header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)),
            "needs 8",
        ),
        (
            _header(
                {"a": {"dtype": "F32", "shape": [2**40] * 3, "data_offsets": [0, 4]}}, bytes(4)
            ),
            "elements",
        ),
    ],
    ids=_param_id,
)
def test_hostile_headers(tmp_path: Path, data: bytes, match: str) -> None:
    _file_error(tmp_path, data, match)


def test_unknown_dtype_and_sub_byte_dtypes(tmp_path: Path) -> None:
    header = {
        "a": {"dtype": "F4", "shape": [4, 8], "data_offsets": [0, 16]},
        "b": {"dtype": "F8_E4M3", "shape": [8], "data_offsets": [16, 24]},
        "c": {"dtype": "X99", "shape": [3], "data_offsets": [24, 30]},
        "__metadata__": {"format": "pt", "n": 5},
    }
    path = tmp_path / "m.safetensors"
    path.write_bytes(_header(header, bytes(30)))
    meta = read_safetensors_file(path)
    assert meta.parameters == 32 + 8 + 3
    assert meta.tensor_bytes == 30
    assert meta.dtype == "F4"
    assert meta.extra["header_metadata"] == {"format": "pt"}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_and_folders_are_not_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "model.safetensors")
    with pytest.raises(MetadataError, match="not a regular file"):
        read_safetensors_file(tmp_path / "model.safetensors")
    with pytest.raises(MetadataError, match=r"no \.safetensors weights"):
        read_safetensors_folder(tmp_path)  # the FIFO is not a weight file
    with pytest.raises(MetadataError, match="not a regular file"):
        read_safetensors_file(tmp_path)
    with pytest.raises(MetadataError, match="cannot read"):
        read_safetensors_file(tmp_path / "missing.safetensors")


def test_every_truncation_raises(tmp_path: Path) -> None:
    head, data_len = header_bytes(TENSORS)
    data = head + bytes(data_len)
    path = tmp_path / "cut.safetensors"
    for size in range(len(data)):
        path.write_bytes(data[:size])
        with pytest.raises(MetadataError):
            read_safetensors_file(path)
    path.write_bytes(data)
    assert read_safetensors_file(path).parameters == PARAMS


def test_random_corruption_never_raises_anything_else(tmp_path: Path) -> None:
    head, data_len = header_bytes(TENSORS, {"format": "pt"})
    data = head + bytes(data_len)
    rng = random.Random(7)
    path = tmp_path / "fuzz.safetensors"
    for _ in range(1000):
        mutated = bytearray(data)
        for _ in range(rng.choice([1, 2, 8])):
            i = rng.randrange(len(head))
            mutated[i] = rng.choice(b'{}[]",:0123456789-e. \x00\xff')
        path.write_bytes(bytes(mutated))
        try:
            read_safetensors_file(path)
        except MetadataError:
            pass
