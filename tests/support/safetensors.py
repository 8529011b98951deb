"""safetensors model folders for tests (header and zero weights written by hand)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np


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
