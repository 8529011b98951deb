"""Runtime pieces without a model: fit maths, sandboxed templates, stop strings, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tui.errors import ModelDeckError
from tui.metadata.types import ModelMetadata
from tui.runtime.errors import TemplateError
from tui.runtime.fit import (
    MiB,
    bits_per_weight,
    check_fit,
    estimate_from_catalog,
    estimate_from_metadata,
    kv_cache_bytes,
)
from tui.runtime.memory import GpuFree, MemorySnapshot
from tui.runtime.stops import StopMatcher
from tui.runtime.templates import FALLBACK_TEMPLATE, render_chat, render_template
from tui.runtime.types import LoadOptions

from tests.support.checks import REPO
from tests.support.runtime import GiB, make_runtime
from tests.support.tiny_models import tiny_gguf, tiny_transformers

# -- fit ----------------------------------------------------------------------------------------

LLAMA8B = ModelMetadata(
    format="gguf", n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128, embedding_size=4096,
    context_length=131072, vocab_size=128256, parameters=8_030_000_000,
)


def test_kv_cache_formula() -> None:
    # Llama 3 8B at 8k context, f16: 2 × 32 × 8 × 128 × 8192 × 2 = 1 GiB
    assert kv_cache_bytes(32, 8, 128, 8192) == 1 * GiB
    assert kv_cache_bytes(32, 8, 128, 8192, bytes_per_element=1) == GiB // 2


def test_verdicts_against_fixed_memory() -> None:
    est = estimate_from_metadata(LLAMA8B, weights_bytes=4_920_000_000, context=8192)
    assert est.kv_cache_bytes == GiB
    assert est.context_length == 8192
    big_gpu = MemorySnapshot(32 * GiB, 64 * GiB, (GpuFree(0, 24 * GiB, 24 * GiB),))
    assert check_fit(est, big_gpu).verdict == "gpu"
    assert check_fit(est, big_gpu).label == "fits on GPU"
    small_gpu = MemorySnapshot(32 * GiB, 64 * GiB, (GpuFree(0, 4 * GiB, 8 * GiB),))
    partial = check_fit(est, small_gpu)
    assert partial.verdict == "partial"
    assert 0 < partial.gpu_layers < 32
    assert partial.label == f"partial offload ({partial.gpu_layers} of 32 layers)"
    expected = int((4 * GiB - 256 * MiB - est.compute_bytes) // est.per_layer_bytes)
    assert partial.gpu_layers == expected
    no_gpu = MemorySnapshot(32 * GiB, 64 * GiB)
    assert check_fit(est, no_gpu).verdict == "cpu"
    assert check_fit(est, no_gpu).label == "CPU only"
    tiny = MemorySnapshot(2 * GiB, 4 * GiB)
    result = check_fit(est, tiny)
    assert result.verdict == "wont_fit" and not result.ok
    assert "won't fit" in result.summary() and "free RAM 2.0 GiB" in result.summary()
    # explicit layer requests that cannot be honoured
    assert check_fit(est, small_gpu, "all").verdict == "wont_fit"
    assert check_fit(est, small_gpu, 0).verdict == "cpu"
    assert check_fit(est, small_gpu, 2).verdict == "partial"
    # two GPUs add up
    two = MemorySnapshot(32 * GiB, 64 * GiB, (GpuFree(0, 4 * GiB, 8 * GiB),) * 2)
    assert check_fit(est, two).gpu_layers > partial.gpu_layers


def test_catalog_estimate_states_assumptions() -> None:
    est = estimate_from_catalog(8_000_000_000, quantization="Q4_K_M", context=4096)
    assert est.weights_bytes == int(8e9 * 4.89 / 8)
    assert any("4.89 bits/weight" in a for a in est.assumptions)
    assert any("KV cache guessed" in a for a in est.assumptions)
    exact = estimate_from_catalog(
        8_000_000_000, quantization="Q4_K_M", context=4096, n_layers=32, n_kv_heads=8,
        head_dim=128,
    )
    assert exact.kv_cache_bytes == kv_cache_bytes(32, 8, 128, 4096)
    unknown = estimate_from_catalog(1_000_000_000)
    assert unknown.weights_bytes == 2_000_000_000
    assert any("16 bits/weight assumed" in a for a in unknown.assumptions)
    assert bits_per_weight("Q8_0") == 8.5 and bits_per_weight("weird") is None


async def test_fit_uses_real_file_sizes(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    runtime = make_runtime(tmp_path, ram_free=8 * GiB)
    try:
        gguf = tiny_gguf()
        result = await runtime.fit(str(gguf), LoadOptions(context_length=256))
        e = result.estimate
        assert e.weights_bytes == gguf.stat().st_size
        # llama.cpp gives each of the parallel_requests (4) answers its own 256-token cache
        assert e.parallel == 4 and e.kv_cache_bytes == kv_cache_bytes(2, 2, 16, 4 * 256)
        assert "4 × 256 ctx" in result.summary()
        assert e.n_layers == 2 and result.verdict == "cpu"
        one = await runtime.fit(str(gguf), LoadOptions(context_length=256, parallel=1))
        assert one.estimate.kv_cache_bytes == kv_cache_bytes(2, 2, 16, 256)
        folder = tiny_transformers()
        result = await runtime.fit(str(folder))
        weights = (folder / "model.safetensors").stat().st_size
        assert result.estimate.weights_bytes == weights
        # transformers answers one request at a time: one cache
        assert result.estimate.kv_cache_bytes == kv_cache_bytes(2, 2, 16, 512)
    finally:
        await runtime.aclose()


# -- templates ----------------------------------------------------------------------------------

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def test_render_chat_and_helpers() -> None:
    text = render_chat(None, MESSAGES)
    assert text == render_template(
        FALLBACK_TEMPLATE, messages=MESSAGES, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n") and "be brief" in text
    assert render_template("{{ bos_token }}{{ strftime_now('%Y')|length }}", bos_token="<s>") == (
        "<s>4"
    )
    with pytest.raises(TemplateError, match="refused the conversation: only user"):
        render_template("{{ raise_exception('only user and assistant roles') }}")


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ messages.__class__.__base__ }}",
        "{% set x = messages.append({'role': 'x'}) %}",
        "{{ self.__init__.__globals__ }}",
    ],
)
def test_sandbox_blocks_escapes(attack: str) -> None:
    with pytest.raises(TemplateError) as info:
        render_chat(attack, MESSAGES)
    assert isinstance(info.value, ModelDeckError)
    assert "\n" not in str(info.value)


def test_broken_template_is_clear() -> None:
    with pytest.raises(TemplateError, match="does not compile"):
        render_chat("{% for %}", MESSAGES)


# -- stop strings -------------------------------------------------------------------------------


def test_stop_matcher_across_chunks() -> None:
    out: list[str] = []
    m = StopMatcher(["</answer>", "STOP"], out.append)
    assert not m.feed("hello </ans")
    assert "".join(out) == "hello "
    assert m.feed("wer> ignored")
    assert "".join(out) == "hello "
    out.clear()
    m = StopMatcher(["</answer>"], out.append)
    m.feed("a </")
    m.feed("b")
    m.flush()
    assert "".join(out) == "a </b"


# -- imports ------------------------------------------------------------------------------------


def test_importing_runtime_pulls_in_no_model_library() -> None:
    code = (
        "import sys, tui, tui.runtime, tui.runtime.service, tui.runtime.fit, tui.cli.runtime_cmds\n"
        "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'textual', 'accelerate')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


# -- channel ------------------------------------------------------------------------------------


async def test_channel_backpressure_order_and_abort() -> None:
    import asyncio
    import threading

    from tui.runtime.channel import Channel

    loop = asyncio.get_running_loop()
    channel = Channel(loop, 3)
    seen_len: list[int] = []

    def produce() -> None:
        for i in range(50):
            channel.put(i)
            seen_len.append(len(channel.items))
        channel.put_final(None)

    thread = threading.Thread(target=produce)
    thread.start()
    got = []
    while (item := await channel.get()) is not None:
        got.append(item)
        if len(got) % 10 == 0:
            await asyncio.sleep(0.01)  # slow consumer
    thread.join(5)
    assert got == list(range(50)) and max(seen_len) <= 3

    blocked = Channel(loop, 1)
    blocked.put("a")
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(blocked.put("b")))
    thread.start()
    await asyncio.sleep(0.1)
    assert thread.is_alive()  # waiting for space
    blocked.abort()
    thread.join(2)
    assert results == [False]


def test_metrics_summary_counts_tokens_in_words() -> None:
    from tui.runtime.types import GenerationMetrics

    def summary(n: int) -> str:
        return GenerationMetrics("m", 3, n, 12.0, None, None, 0.1, "stop").summary()

    assert summary(1).startswith("1 token,") and summary(0).startswith("0 tokens,")
    assert summary(2).startswith("2 tokens,") and "TTFT 12 ms" in summary(1)
