"""Shared fixtures: isolated settings/state per test, tiny model files on disk."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from tui.services import Services, build_services
from tui.settings import Settings


@pytest.fixture(autouse=True)
def _isolate_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No test reads the developer's config, tokens or HF cache, or reaches the real Hub."""
    home = tmp_path_factory.mktemp("home")
    for var in list(os.environ):
        if var.startswith("MODELDECK_") or var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local/state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("HF_HOME", str(home / ".cache/huggingface"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("MODELDECK_WORKSPACE_ROOT", str(home / "no-workspace"))
    yield


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with models and state in the test's temp dir; HF cache scanning off."""
    return Settings(
        models_dir=tmp_path / "models",
        state_dir=tmp_path / "state",
        scan_hf_cache=False,
    )


@pytest.fixture
def services(settings: Settings):
    """A service container on real SQLite in a temp dir."""
    svc: Services = build_services(settings)
    yield svc
    svc.close()


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
    """Write a small but valid GGUF file with the ``gguf`` package's writer."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    if name:
        writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_context_length(context_length)
    writer.add_block_count(n_layers)
    writer.add_embedding_length(n_embd)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_kv_heads)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"t{i}" for i in range(n_vocab)])
    if chat_template:
        writer.add_chat_template(chat_template)
    for key, value in (extra_kv or {}).items():
        writer.add_uint32(key, value)
    rng = np.random.default_rng(seed)
    for i, shape in enumerate(tensor_shapes):
        writer.add_tensor(f"blk.{i}.weight", rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_safetensors_folder(
    folder: Path,
    *,
    model_type: str = "llama",
    shapes: dict[str, tuple[int, ...]] | None = None,
    dtype: str = "F16",
    shards: int = 1,
) -> Path:
    """A folder with config.json, tokenizer_config.json and safetensors weight files."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = shapes or {"model.embed_tokens.weight": (32, 16), "lm_head.weight": (32, 16)}
    (folder / "config.json").write_text(json.dumps({
        "model_type": model_type,
        "architectures": ["LlamaForCausalLM"],
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_size": 16,
        "vocab_size": 32,
        "max_position_embeddings": 2048,
        "torch_dtype": "float16",
    }))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    width = {"F16": 2, "BF16": 2, "F32": 4}[dtype]
    names = sorted(shapes)
    per_shard = [names[i::shards] for i in range(shards)]
    for i, shard_names in enumerate(per_shard, start=1):
        header = {}
        offset = 0
        for n in shard_names:
            count = int(np.prod(shapes[n]))
            end = offset + count * width
            header[n] = {"dtype": dtype, "shape": list(shapes[n]), "data_offsets": [offset, end]}
            offset += count * width
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        fname = (
            "model.safetensors" if shards == 1 else f"model-{i:05d}-of-{shards:05d}.safetensors"
        )
        with open(folder / fname, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            f.write(bytes(offset))
    return folder
