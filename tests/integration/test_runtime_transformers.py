"""The runtime on real transformers + torch (CPU) with a tiny random Llama folder."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tui.runtime import GenParams, LoadError, LoadOptions, ModelState

from tests.support.runtime import make_runtime, register_model
from tests.support.tiny_models import tiny_gguf, tiny_transformers

HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]


@pytest.fixture
async def runtime(tmp_path: Path):
    rt = make_runtime(tmp_path, max_loaded_models=2)
    yield rt
    await rt.aclose()


async def test_load_stream_cancel(runtime) -> None:
    folder = tiny_transformers(context_length=8192)
    register_model(runtime.inventory, "hf-tiny", folder, "safetensors")
    info = await runtime.load("hf-tiny", LoadOptions(context_length=8192))
    assert info.kind == "safetensors" and info.fit_label == "CPU only"
    backend = runtime._models["hf-tiny"].backend
    assert backend.model.dtype.is_floating_point and str(backend.model.device) == "cpu"

    text, metrics = [], None
    async for item in runtime.generate("hf-tiny", HELLO, GenParams(temperature=0, max_tokens=20)):
        if isinstance(item, str):
            text.append(item)
        else:
            metrics = item
    assert "".join(text) and metrics is not None
    assert metrics.completion_tokens == 20 and metrics.finish_reason == "length"
    assert metrics.prompt_tokens > 5 and metrics.tokens_per_s
    assert runtime.inventory.require_model("hf-tiny").tokens_per_s == pytest.approx(
        metrics.tokens_per_s
    )

    started = None
    long = GenParams(temperature=0.8, max_tokens=5000)
    async for item in runtime.generate("hf-tiny", HELLO, long):
        if isinstance(item, str) and started is None:
            started = time.perf_counter()
            runtime.cancel()
        elif not isinstance(item, str):
            metrics = item
    assert started is not None and time.perf_counter() - started < 1.0
    assert metrics.finish_reason == "cancelled" and metrics.completion_tokens < 200

    # a GGUF loads beside it (two slots), then unloading frees the transformers model
    await runtime.load(str(tiny_gguf()))
    assert len(runtime.loaded()) == 2
    assert await runtime.unload("hf-tiny")
    assert backend.model is None and runtime.state("hf-tiny") == ModelState.UNLOADED


async def test_pickle_weights_refused(runtime, tmp_path: Path) -> None:
    folder = tiny_transformers(weights="pickle")
    with pytest.raises(LoadError, match="pickle") as info:
        await runtime.load(str(folder))
    assert "--allow-pickle" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(LoadError, match="no weights"):
        await runtime.load(str(tiny_transformers(weights="none")))


async def test_unknown_architecture_and_broken_weights(runtime, tmp_path: Path) -> None:
    good = str(tiny_gguf())
    await runtime.load(good)
    with pytest.raises(LoadError, match="does not know the architecture 'mystery_arch'"):
        await runtime.load(str(tiny_transformers(model_type="mystery_arch")))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_transformers(), broken)
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad json}")
    with pytest.raises(LoadError) as info:
        await runtime.load(str(broken))
    assert "\n" not in str(info.value)
    assert runtime.is_loaded(good)


async def test_cancelled_load_is_cleaned_up(runtime) -> None:
    import asyncio

    folder = str(tiny_transformers())
    seen = []
    runtime.subscribe(seen.append)
    task = asyncio.create_task(runtime.load(folder))
    while not seen:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not runtime.is_loaded(folder)
    assert runtime.state(folder) == ModelState.FAILED and seen[-1].message == "load cancelled"
    info = await runtime.load(folder)  # the queue is free again
    assert info.id == folder and runtime.is_loaded(folder)


async def test_immediate_end_token_reports_ttft_and_no_tokens(runtime) -> None:
    from transformers import LogitsProcessor, LogitsProcessorList

    folder = str(tiny_transformers())
    await runtime.load(folder)
    backend = runtime._models[folder].backend
    eos = backend.tokenizer.eos_token_id
    assert eos is not None

    class OnlyEos(LogitsProcessor):
        def __call__(self, input_ids, scores):  # type: ignore[no-untyped-def]
            forced = scores.new_full(scores.shape, float("-inf"))
            forced[:, eos] = 0.0
            return forced

    generate = backend.model.generate

    def end_first(**kwargs):  # type: ignore[no-untyped-def]
        return generate(**kwargs, logits_processor=LogitsProcessorList([OnlyEos()]))

    backend.model.generate = end_first
    text, metrics = [], None
    async for item in runtime.generate(folder, HELLO, GenParams(temperature=0, max_tokens=20)):
        if isinstance(item, str):
            text.append(item)
        else:
            metrics = item
    assert text == [] and metrics is not None
    assert metrics.finish_reason == "stop" and metrics.completion_tokens == 0
    assert metrics.ttft_ms is not None and metrics.tokens_per_s is None
