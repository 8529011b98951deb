"""The ``civitai`` fixture (registered for every test in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from safetensors.numpy import save

from .server import FakeCivitai


def lora_bytes(seed: int = 0) -> bytes:
    """A real (tiny) SDXL LoRA in safetensors, as kohya writes it."""
    rng = np.random.default_rng(seed)
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    return save({f"{name}.lora_down.weight": rng.random((4, 32), dtype=np.float32),
                 f"{name}.lora_up.weight": rng.random((32, 4), dtype=np.float32),
                 f"{name}.alpha": np.array(4.0, dtype=np.float32)},
                metadata={"ss_base_model_version": "sdxl_base_v1-0"})


def vae_bytes() -> bytes:
    """A real (tiny) VAE-shaped safetensors file."""
    return save({"encoder.conv_in.weight": np.zeros((8, 3, 3, 3), dtype=np.float16),
                 "decoder.conv_out.weight": np.zeros((3, 8, 3, 3), dtype=np.float16)})


@pytest.fixture
def civitai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCivitai]:
    """A running FakeCivitai with ``CIVITAI_ENDPOINT`` pointing at it (no token set)."""
    server = FakeCivitai().start()
    monkeypatch.setenv("CIVITAI_ENDPOINT", server.url)
    monkeypatch.delenv("CIVITAI_TOKEN", raising=False)
    yield server
    server.stop()
