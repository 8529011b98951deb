"""``/v1/models`` lists only the models this server can run: an image model, a LoRA or a
VAE is managed by ModelDeck but never listed, and a request naming one gets one OpenAI-shaped
400 ("not runnable here"), not a load attempt. Real server, real SQLite, the official client."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.safetensors import write_safetensors_folder
from tests.support.serve import LIMIT, serve_settings, served
from tests.support.tiny_models import tiny_gguf

ASK = [{"role": "user", "content": "hello"}]


def with_kind(services, model_id: str, kind: str) -> None:
    """Record ``kind`` for ``model_id`` (as discovery does from its contents)."""
    record = services.inventory.get_model(model_id)
    services.inventory.upsert_model(dataclasses.replace(record, kind=kind))


def test_models_that_are_not_runnable_are_not_listed_nor_answered(tmp_path: Path) -> None:
    lora = tmp_path / "adapter.gguf"
    shutil.copy(tiny_gguf(), lora)
    image = write_safetensors_folder(tmp_path / "sdxl")
    models = {"tiny": (tiny_gguf(), "gguf"), "adapter": (lora, "gguf"),
              "sdxl": (image, "safetensors")}
    with served(serve_settings(tmp_path), models) as s:
        with_kind(s.services, "adapter", "lora")
        with_kind(s.services, "sdxl", "diffusion")
        client = openai.OpenAI(base_url=s.v1, api_key="none", max_retries=0, timeout=LIMIT)
        assert [m.id for m in client.models.list()] == ["tiny"]

        for model_id, kind in (("adapter", "lora"), ("sdxl", "diffusion")):
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(model=model_id, messages=ASK, max_tokens=4)
            error = caught.value.body
            assert error["code"] == "model_not_runnable" and error["param"] == "model"
            assert error["message"].startswith(f"'{model_id}' is a {kind} model: not runnable here")
            with pytest.raises(openai.NotFoundError):
                client.models.retrieve(model_id)
            answer = httpx.post(s.v1 + "/embeddings", json={"model": model_id, "input": "x"},
                                timeout=LIMIT)
            assert answer.status_code == 400
            assert answer.json()["error"]["code"] == "model_not_runnable"
        assert s.loaded() == []  # nothing was loaded (nor anything evicted) for them

        # A runnable one still answers, and was listed.
        done = client.chat.completions.create(model="tiny", messages=ASK, max_tokens=4,
                                              temperature=0)
        assert done.choices[0].message.content is not None
