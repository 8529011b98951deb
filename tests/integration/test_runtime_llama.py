"""The runtime on real llama-cpp-python with tiny GGUFs made by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from tui.errors import ModelDeckError, NotFoundError
from tui.runtime import (
    GenerationMetrics,
    GenParams,
    LoadError,
    LoadOptions,
    ModelState,
    RuntimeEvent,
    TemplateError,
    WontFitError,
)
from tui.runtime.service import RuntimeService

from tests.support.runtime import GiB, make_runtime, register_model
from tests.support.tiny_models import tiny_gguf

HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]
GREEDY = GenParams(temperature=0, max_tokens=24, seed=1)


async def collect(runtime: RuntimeService, model: str, params: GenParams = GREEDY):
    text: list[str] = []
    metrics: GenerationMetrics | None = None
    async for item in runtime.generate(model, HELLO, params):
        if isinstance(item, str):
            text.append(item)
        else:
            metrics = item
    assert metrics is not None
    return "".join(text), metrics


@pytest.fixture
async def runtime(tmp_path: Path):
    rt = make_runtime(tmp_path)
    yield rt
    await rt.aclose()


def events_of(rt: RuntimeService) -> list[RuntimeEvent]:
    seen: list[RuntimeEvent] = []
    rt.subscribe(seen.append)
    return seen


async def test_load_stream_metrics_recorded(runtime: RuntimeService) -> None:
    path = tiny_gguf()
    register_model(runtime.inventory, "tiny", path, "gguf")
    seen = events_of(runtime)
    info = await runtime.load("tiny", LoadOptions(context_length=256, threads=1))
    assert info.id == "tiny" and info.kind == "gguf" and info.fit_label == "CPU only"
    assert [e.state for e in seen] == [ModelState.LOADING, ModelState.LOADED]
    assert seen[-1].seconds and seen[-1].seconds > 0
    text, m = await collect(runtime, "tiny")
    assert text.strip()
    assert m.completion_tokens == 24 and m.finish_reason == "length"
    assert m.prompt_tokens > 5 and m.ttft_ms is not None and m.tokens_per_s
    # greedy decoding with a fixed seed is reproducible
    again, m2 = await collect(runtime, "tiny")
    assert again == text
    record = runtime.inventory.require_model("tiny")
    assert record.load_seconds == pytest.approx(info.load_seconds)
    assert record.tokens_per_s == pytest.approx(m2.tokens_per_s)
    assert record.prompt_tokens_per_s == pytest.approx(m2.prompt_tokens_per_s)
    assert record.ttft_ms is not None and record.last_used_at


async def test_stop_strings_and_max_tokens(runtime: RuntimeService) -> None:
    path = str(tiny_gguf())
    text, _ = await collect(runtime, path, GenParams(temperature=0, max_tokens=40))
    stop = text.strip()[3:6]
    cut, m = await collect(runtime, path, GenParams(temperature=0, max_tokens=40, stop=(stop,)))
    assert stop not in cut and text.startswith(cut)
    assert m.finish_reason == "stop"


async def test_immediate_end_token_still_reports_ttft(
    runtime: RuntimeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llama_cpp

    from tui.app.views import MetricsView, metrics_text

    sample = llama_cpp.llama_sampler_sample
    eos = 2  # make_tiny_gguf's end token

    def end_first(smpl: object, ctx: object, idx: int) -> int:
        sample(smpl, ctx, idx)
        return eos

    monkeypatch.setattr(llama_cpp, "llama_sampler_sample", end_first)
    text, m = await collect(runtime, str(tiny_gguf()))
    assert text == ""
    assert m.finish_reason == "stop" and m.completion_tokens == 0
    assert m.ttft_ms is not None and m.ttft_ms > 0 and m.tokens_per_s is None
    view = MetricsView(ttft_ms=m.ttft_ms, tokens_per_s=m.tokens_per_s, tokens=0)
    assert metrics_text(view) == f"TTFT {m.ttft_ms:.0f} ms | 0 tokens"


async def test_cancel_mid_stream_stops_quickly(runtime: RuntimeService) -> None:
    path = str(tiny_gguf(context_length=32768))
    await runtime.load(path, LoadOptions(context_length=32768))
    params = GenParams(temperature=0, max_tokens=30000)
    got = 0
    metrics = None
    started = None
    async for item in runtime.generate(path, HELLO, params):
        if isinstance(item, str):
            got += 1
            if started is None:
                started = time.perf_counter()
                assert runtime.cancel()
        else:
            metrics = item
    assert started is not None and metrics is not None
    assert time.perf_counter() - started < 1.0
    assert metrics.finish_reason == "cancelled"
    assert metrics.completion_tokens < 500
    # the model still answers afterwards
    _, m = await collect(runtime, path)
    assert m.finish_reason == "length"


async def test_leaving_the_loop_stops_the_backend(runtime: RuntimeService) -> None:
    path = str(tiny_gguf(context_length=32768))
    await runtime.load(path, LoadOptions(context_length=32768))
    started = time.perf_counter()
    stream = runtime.generate(path, HELLO, GenParams(temperature=0, max_tokens=30000))
    async with contextlib.aclosing(stream):
        async for _item in stream:
            break
    assert time.perf_counter() - started < 2.0
    assert not runtime.generating
    _, m = await collect(runtime, path)
    assert m.completion_tokens == GREEDY.max_tokens


async def test_backpressure_bounded_buffer(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, stream_buffer=2)
    try:
        path = str(tiny_gguf())
        chunks = 0
        async for item in rt.generate(path, HELLO, GenParams(temperature=0, max_tokens=60)):
            if isinstance(item, str):
                chunks += 1
                await asyncio.sleep(0.002)  # slow consumer: the worker waits, nothing is lost
            else:
                assert item.completion_tokens == 60
        assert chunks >= 50
    finally:
        await rt.aclose()


async def test_switch_unloads_previous(runtime: RuntimeService) -> None:
    a, b = str(tiny_gguf(seed=1)), str(tiny_gguf(seed=2))
    seen = events_of(runtime)
    await runtime.load(a)
    await runtime.load(b)
    assert [m.id for m in runtime.loaded()] == [b]
    states = [(e.model_id, e.state) for e in seen]
    assert states == [
        (a, ModelState.LOADING), (a, ModelState.LOADED), (a, ModelState.UNLOADING),
        (a, ModelState.UNLOADED), (b, ModelState.LOADING), (b, ModelState.LOADED),
    ]
    assert "evicted" in seen[3].message
    # generating on an unloaded model loads it (and evicts the other)
    await collect(runtime, a)
    assert [m.id for m in runtime.loaded()] == [a]


async def test_lru_eviction_with_two_slots(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, max_loaded_models=2)
    try:
        a, b, c = (str(tiny_gguf(seed=s)) for s in (11, 12, 13))
        await rt.load(a)
        await rt.load(b)
        await collect(rt, a)  # a becomes most recently used
        await rt.load(c)
        assert [m.id for m in rt.loaded()] == [a, c]
    finally:
        await rt.aclose()


async def test_memory_budget_evicts_lru(tmp_path: Path) -> None:
    a, b = str(tiny_gguf(seed=21)), str(tiny_gguf(seed=22))
    probe_rt = make_runtime(tmp_path / "probe")
    need = (await probe_rt.fit(a)).estimate.total_bytes
    await probe_rt.aclose()
    rt = make_runtime(tmp_path, max_loaded_models=4, memory_budget=int(need * 1.5))
    try:
        await rt.load(a)
        await rt.load(b)
        assert [m.id for m in rt.loaded()] == [b]
        small = make_runtime(tmp_path / "small", memory_budget=need // 2)
        with pytest.raises(WontFitError, match="memory budget"):
            await small.load(a)
        await small.aclose()
    finally:
        await rt.aclose()


async def test_keep_alive_unloads_idle_model(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, keep_alive_seconds=1.0)
    try:
        seen = events_of(rt)
        path = str(tiny_gguf())
        await rt.load(path)
        await asyncio.sleep(0.6)
        await collect(rt, path)  # use resets the timer
        await asyncio.sleep(0.5)
        assert rt.is_loaded(path)
        for _ in range(50):
            await asyncio.sleep(0.1)
            if rt.state(path) == ModelState.UNLOADED:
                break
        assert not rt.is_loaded(path)
        assert seen[-1].state == ModelState.UNLOADED and "idle" in seen[-1].message
    finally:
        await rt.aclose()


async def test_keep_alive_from_settings_zero_means_never(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, keep_alive_minutes=0.0)
    try:
        await rt.load(str(tiny_gguf()))
        await asyncio.sleep(0.2)
        assert len(rt.loaded()) == 1
    finally:
        await rt.aclose()


async def test_wont_fit_is_refused_unless_forced(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, ram_free=520 * (1 << 20))
    try:
        path = str(tiny_gguf())
        with pytest.raises(WontFitError, match="won't fit") as info:
            await rt.load(path)
        assert "\n" not in str(info.value) and "--force" in str(info.value)
        info2 = await rt.load(path, LoadOptions(force=True))
        assert info2.id == path
    finally:
        await rt.aclose()


async def test_bad_gguf_keeps_current_model(runtime: RuntimeService, tmp_path: Path) -> None:
    good = str(tiny_gguf())
    await runtime.load(good)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + b"\xff" * 200)
    not_gguf = tmp_path / "text.gguf"
    not_gguf.write_text("hello")
    for bad in (garbage, not_gguf):
        with pytest.raises(LoadError) as info:
            await runtime.load(str(bad))
        assert "\n" not in str(info.value)
        assert runtime.is_loaded(good)
    with pytest.raises(NotFoundError):
        await runtime.load(str(tmp_path / "missing.gguf"))
    assert runtime.state(str(garbage)) == ModelState.FAILED
    _, m = await collect(runtime, good)
    assert m.completion_tokens == GREEDY.max_tokens


async def test_llama_rejects_file(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, max_loaded_models=2)
    try:
        good = str(tiny_gguf())
        await rt.load(good)
        data = tiny_gguf().read_bytes()
        cut = tmp_path / "cut.gguf"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(LoadError, match="truncated") as info:
            await rt.load(str(cut))
        assert "\n" not in str(info.value)
        # a well-formed header that llama.cpp itself refuses
        alien = str(tiny_gguf(architecture="mystery"))
        with pytest.raises(LoadError, match=r"llama\.cpp cannot load") as info:
            await rt.load(alien)
        assert "\n" not in str(info.value) and rt.state(alien) == ModelState.FAILED
        assert [m.id for m in rt.loaded()] == [good]
    finally:
        await rt.aclose()


async def test_failed_switch_restores_the_evicted_model(runtime: RuntimeService) -> None:
    """One slot: loading a file llama.cpp refuses (its header passes every check) evicts the
    loaded model first; it is loaded again, so the failed switch leaves things as they were."""
    good = str(tiny_gguf(seed=41))
    await runtime.load(good)
    seen = events_of(runtime)
    alien = str(tiny_gguf(architecture="mystery"))
    with pytest.raises(LoadError, match=r"llama\.cpp cannot load"):
        await runtime.load(alien)
    assert [m.id for m in runtime.loaded()] == [good]
    states = [(e.model_id, e.state) for e in seen]
    assert (good, ModelState.UNLOADED) in states  # it really was evicted...
    assert states[-1] == (good, ModelState.LOADED)  # ...and is back
    _, m = await collect(runtime, good)
    assert m.completion_tokens == GREEDY.max_tokens


async def test_malicious_template_is_blocked(runtime: RuntimeService) -> None:
    evil = str(tiny_gguf(chat_template="{{ ''.__class__.__mro__[1].__subclasses__() }}"))
    await runtime.load(evil)
    with pytest.raises(TemplateError, match="sandbox"):
        await collect(runtime, evil)
    assert runtime.is_loaded(evil) and not runtime.generating
    plain = str(tiny_gguf(chat_template=None))  # no template: ChatML fallback
    text, _ = await collect(runtime, plain)
    assert text


async def test_model_deleted_while_loaded(runtime: RuntimeService, tmp_path: Path) -> None:
    path = tmp_path / "copy.gguf"
    shutil.copy(tiny_gguf(), path)
    register_model(runtime.inventory, "doomed", path, "gguf")
    await runtime.load("doomed")
    path.unlink()
    # the weights are mapped in memory: the loaded model keeps answering
    _, m = await collect(runtime, "doomed")
    assert m.completion_tokens == GREEDY.max_tokens
    assert await runtime.unload("doomed")
    with pytest.raises(NotFoundError, match="gone from disk") as info:
        await runtime.load("doomed")
    assert isinstance(info.value, ModelDeckError) and "\n" not in str(info.value)
    runtime.inventory.delete_model("doomed")  # record gone too: metrics writes are no-ops


async def test_concurrent_loads_queue(runtime: RuntimeService) -> None:
    a, b = str(tiny_gguf(seed=31)), str(tiny_gguf(seed=32))
    seen = events_of(runtime)
    first, second = await asyncio.gather(runtime.load(a), runtime.load(b))
    assert first.id == a and second.id == b
    states = [e.state for e in seen]
    # strictly one after the other: never two LOADING in a row
    assert states == [
        ModelState.LOADING, ModelState.LOADED, ModelState.UNLOADING, ModelState.UNLOADED,
        ModelState.LOADING, ModelState.LOADED,
    ]


async def test_unload_frees_and_reports(runtime: RuntimeService) -> None:
    path = str(tiny_gguf())
    await runtime.load(path)
    backend = runtime._models[path].backend
    engine = backend.engine
    assert engine is not None and engine.loaded
    assert await runtime.unload(path)
    # closed and dropped: llama.cpp freed model and context, the engine thread is gone
    assert backend.engine is None and engine.ctx is None and engine.model is None
    assert not engine.loaded
    assert not await runtime.unload(path)
    assert runtime.loaded() == [] and runtime.state(path) == ModelState.UNLOADED


async def test_gpu_layer_plan_on_fake_gpu(tmp_path: Path) -> None:
    from tui.runtime.memory import GpuFree

    rt = make_runtime(tmp_path, gpus=(GpuFree(0, 8 * GiB, 8 * GiB, "fake"),))
    try:
        info = await rt.load(str(tiny_gguf()))  # CPU build: llama.cpp ignores the layers
        assert info.gpu_layers == -1 and info.fit_label == "fits on GPU"
    finally:
        await rt.aclose()


async def test_reload_with_new_options(runtime: RuntimeService) -> None:
    path = str(tiny_gguf())
    first = await runtime.load(path, LoadOptions(context_length=128))
    assert first.context_length == 128
    same = await runtime.load(path, LoadOptions(context_length=128))
    assert same.loaded_at == first.loaded_at
    assert (await runtime.load(path)).loaded_at == first.loaded_at  # no options: as loaded
    bigger = await runtime.load(path, LoadOptions(context_length=256))
    assert bigger.context_length == 256 and runtime.state(path) == ModelState.LOADED


async def test_sampling_seed_is_reproducible(runtime: RuntimeService) -> None:
    path = str(tiny_gguf())
    hot = GenParams(temperature=1.5, top_p=1.0, max_tokens=30, seed=42)
    a, _ = await collect(runtime, path, hot)
    b, _ = await collect(runtime, path, hot)
    other = GenParams(temperature=1.5, top_p=1.0, max_tokens=30, seed=7)
    c, _ = await collect(runtime, path, other)
    assert a == b and a != c
