"""Behaviour under load: continuous batching in the llama.cpp backend and the per-model
scheduler (real llama-cpp-python, tiny real GGUFs).

Answers are held open deterministically with backpressure: with ``stream_buffer=1`` an answer
whose reader does not read sits out the engine's steps after one delta, keeping its slot.
Nothing here measures time; waits are on conditions (with a generous limit so that a hang
fails instead of blocking the suite).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from tui.runtime import (
    AnswerStoppedError,
    GenerationError,
    GenerationMetrics,
    GenParams,
    LoadOptions,
    ModelBusyError,
    ModelState,
    QueueFullError,
    RuntimeEvent,
)
from tui.runtime.backends.llama_batch import BatchEngine, BatchRequest
from tui.runtime.service import RuntimeService
from tui.runtime.templates import render_chat

from tests.support.runtime import make_runtime
from tests.support.tiny_models import tiny_gguf

GREEDY = GenParams(temperature=0, max_tokens=48)
LONG = GenParams(temperature=0, max_tokens=400)  # held open by its reader, never finished
LIMIT = 30.0  # seconds before a wait that should succeed at once is called a hang


def ask(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {i}: tell me about the water model"}]


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait for a condition (polling the loop), failing after :data:`LIMIT`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LIMIT
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Reader:
    """One request's stream, read step by step."""

    def __init__(self, rt: RuntimeService, model: str, messages: list[dict[str, str]],
                 params: GenParams, request_id: str | None = None) -> None:
        kwargs = {"request_id": request_id} if request_id is not None else {}
        self.stream: AsyncIterator[str | GenerationMetrics] = rt.generate(
            model, messages, params, **kwargs
        )
        self.text: list[str] = []
        self.metrics: GenerationMetrics | None = None

    def _take(self, item: str | GenerationMetrics) -> None:
        if isinstance(item, str):
            self.text.append(item)
        else:
            self.metrics = item

    async def first(self) -> str:
        """Read until the first text delta (the request is then running)."""
        while not self.text:
            self._take(await asyncio.wait_for(self.stream.__anext__(), LIMIT))
        return self.text[0]

    async def rest(self) -> tuple[str, GenerationMetrics]:
        async for item in self.stream:
            self._take(item)
        assert self.metrics is not None
        return "".join(self.text), self.metrics

    async def close(self) -> None:
        await self.stream.aclose()


async def collect(rt: RuntimeService, model: str, messages: list[dict[str, str]],
                  params: GenParams = GREEDY, request_id: str | None = None
                  ) -> tuple[str, GenerationMetrics]:
    return await Reader(rt, model, messages, params, request_id).rest()


def serving(rt: RuntimeService) -> list[RuntimeEvent]:
    seen: list[RuntimeEvent] = []
    rt.subscribe(lambda e: seen.append(e) if e.state == ModelState.SERVING else None)
    return seen


def has(events: list[RuntimeEvent], request_id: str, what: str) -> bool:
    return any(e.request_id == request_id and e.message == what for e in events)


@pytest.fixture
async def rt(tmp_path: Path):
    runtime = make_runtime(tmp_path, stream_buffer=1)
    yield runtime
    await runtime.aclose()


# -- batching ------------------------------------------------------------------------------


async def test_eight_concurrent_greedy_answers_match_each_alone(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, parallel_requests=8)
    try:
        path = str(tiny_gguf())
        info = await rt.load(path, LoadOptions(context_length=256))
        assert info.slots == 8 and info.context_length == 256
        alone = [await collect(rt, path, ask(i)) for i in range(8)]
        seen = serving(rt)
        together = await asyncio.gather(*(collect(rt, path, ask(i)) for i in range(8)))
        assert [t for t, _ in together] == [t for t, _ in alone]
        assert all(m.completion_tokens == 48 and m.finish_reason == "length" for _, m in together)
        # all eight ran at once: none waited for a slot
        assert max(e.running or 0 for e in seen) == 8
        assert not any(e.message == "queued" for e in seen)
        stats = rt.stats()[0]
        assert (stats.slots, stats.running, stats.queued) == (8, 0, 0)
        assert stats.requests == 16 and stats.tokens == 16 * 48
    finally:
        await rt.aclose()


def _engine_request(engine: BatchEngine, i: int, params: GenParams) -> tuple[BatchRequest,
                                                                              list[str]]:
    prompt = render_chat(engine.meta("tokenizer.chat_template"), ask(i),
                         bos_token=engine.token_text(engine.bos))
    tokens = engine.tokenize(prompt.encode(), add_special=True)
    out: list[str] = []
    return BatchRequest(tokens, params, out.append, threading.Event(), None,
                        params.max_tokens), out


@pytest.mark.parametrize("params", [
    GenParams(temperature=0, max_tokens=40),
    GenParams(temperature=1.2, top_p=0.9, max_tokens=40, seed=1234),
], ids=["greedy", "seeded"])
def test_engine_decodes_eight_answers_in_one_batch(params: GenParams) -> None:
    """Eight requests submitted before the engine starts are admitted in one step: the first
    ``llama_decode`` holds all eight prompts, and every answer matches the same request
    decoded alone (greedy and seeded sampling)."""
    engine = BatchEngine(tiny_gguf(), slots=8, n_ctx=256, threads=1)
    engine.load(start=False)
    try:
        batch = [_engine_request(engine, i, params) for i in range(8)]
        for request, _ in batch:
            engine.submit(request)
        engine.start()
        for request, _ in batch:
            assert request.done.wait(LIMIT) and request.error is None
        assert engine.peak == 8
        for i, (request, out) in enumerate(batch):
            alone, alone_out = _engine_request(engine, i, params)
            assert engine.run(alone) == request.stats
            assert "".join(out) == "".join(alone_out)
        assert any(r.stats and r.stats.completion_tokens == 40 for r, _ in batch)
    finally:
        engine.close()
    assert not engine.loaded


async def test_a_slow_reader_does_not_stall_the_others(rt: RuntimeService) -> None:
    path = str(tiny_gguf())
    await rt.load(path)
    alone, _ = await collect(rt, path, ask(2))
    stalled = Reader(rt, path, ask(1), LONG)
    await stalled.first()  # then not read: its answer waits, holding its slot
    text, m = await asyncio.wait_for(collect(rt, path, ask(2)), LIMIT)
    assert text == alone and m.completion_tokens == GREEDY.max_tokens
    assert rt.stats()[0].running == 1  # the stalled answer is still there
    await stalled.close()


async def test_two_models_answer_at_the_same_time(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, max_loaded_models=2, stream_buffer=1)
    try:
        a, b = str(tiny_gguf(seed=51)), str(tiny_gguf(seed=52))
        await rt.load(a)
        await rt.load(b)
        first = Reader(rt, a, ask(1), LONG)
        await first.first()
        second = Reader(rt, b, ask(2), LONG)
        await second.first()  # would wait for the other model's answer if serialized
        assert {s.model_id: s.running for s in rt.stats()} == {a: 1, b: 1}
        assert all(m.running == 1 for m in rt.loaded())
        await first.close()
        await second.close()
    finally:
        await rt.aclose()


# -- the scheduler ---------------------------------------------------------------------------


async def test_waiting_requests_start_in_arrival_order(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, parallel_requests=2, queue_limit=8, stream_buffer=1)
    try:
        path = str(tiny_gguf())
        await rt.load(path)
        seen = serving(rt)
        holders = [Reader(rt, path, ask(i), LONG, request_id=f"hold{i}") for i in range(2)]
        for holder in holders:
            await holder.first()
        tasks = []
        for i in range(5):
            reader = Reader(rt, path, ask(10 + i), GREEDY, request_id=f"q{i}")
            tasks.append(asyncio.create_task(reader.rest()))
            await until(lambda i=i: has(seen, f"q{i}", "queued"), f"q{i} queued")
        stats = rt.stats()[0]
        assert (stats.running, stats.queued) == (2, 5)
        info = rt.loaded()[0]
        assert (info.slots, info.running, info.queued) == (2, 2, 5)
        for holder in holders:
            await holder.close()
        results = await asyncio.wait_for(asyncio.gather(*tasks), LIMIT)
        assert all(m.completion_tokens == GREEDY.max_tokens for _, m in results)
        started = [e.request_id for e in seen
                   if e.message == "started" and (e.request_id or "").startswith("q")]
        assert started == ["q0", "q1", "q2", "q3", "q4"]
        assert all(m.queue_ms > 0 for _, m in results)
    finally:
        await rt.aclose()


async def test_full_queue_is_refused_with_retry_after(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, parallel_requests=1, queue_limit=1, stream_buffer=1)
    try:
        path = str(tiny_gguf())
        await rt.load(path)
        seen = serving(rt)
        holder = Reader(rt, path, ask(0), LONG)
        await holder.first()
        waiting = asyncio.create_task(Reader(rt, path, ask(1), GREEDY, "w").rest())
        await until(lambda: has(seen, "w", "queued"), "the second request queued")
        refused = rt.generate(path, ask(2), GREEDY)
        with pytest.raises(QueueFullError) as info:
            await refused.__anext__()
        message = str(info.value)
        assert "\n" not in message and "queue_limit 1" in message
        assert isinstance(info.value.retry_after, int) and 1 <= info.value.retry_after <= 300
        assert f"{info.value.retry_after} s" in message
        stats = rt.stats()[0]
        assert (stats.running, stats.queued) == (1, 1)  # the refusal changed nothing
        assert [e.message for e in seen][-1] == "refused"
        await holder.close()
        text, m = await asyncio.wait_for(waiting, LIMIT)
        assert text and m.finish_reason == "length"
    finally:
        await rt.aclose()


async def test_closing_a_stream_frees_its_slot_and_the_others_go_on(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, parallel_requests=2, stream_buffer=1)
    try:
        path = str(tiny_gguf())
        await rt.load(path)
        alone_b, _ = await collect(rt, path, ask(2))
        alone_c, _ = await collect(rt, path, ask(3))
        seen = serving(rt)
        a = Reader(rt, path, ask(1), LONG, request_id="a")
        b = Reader(rt, path, ask(2), GREEDY, request_id="b")
        await a.first()
        await b.first()
        c_task = asyncio.create_task(collect(rt, path, ask(3), request_id="c"))
        await until(lambda: has(seen, "c", "queued"), "c queued")
        await a.close()  # the client went away
        # by the time the stream is closed, a's slot went to c
        assert has(seen, "a", "finished") and has(seen, "c", "started")
        text_b, m_b = await b.rest()
        text_c, m_c = await asyncio.wait_for(c_task, LIMIT)
        assert (text_b, text_c) == (alone_b, alone_c)
        assert m_b.completion_tokens == m_c.completion_tokens == GREEDY.max_tokens
        engine = rt._models[path].backend.engine
        assert engine is not None and engine.loaded
        assert rt.stats()[0].running == 0 and not rt.generating
    finally:
        await rt.aclose()


async def test_a_request_cancelled_while_queued_never_starts(rt: RuntimeService) -> None:
    path = str(tiny_gguf())
    await rt.load(path, LoadOptions(parallel=1))
    seen = serving(rt)
    holder = Reader(rt, path, ask(0), LONG, request_id="holder")
    await holder.first()
    by_id = asyncio.create_task(collect(rt, path, ask(1), request_id="by-id"))
    await until(lambda: has(seen, "by-id", "queued"), "by-id queued")
    dropped = asyncio.create_task(collect(rt, path, ask(2), request_id="dropped"))
    await until(lambda: has(seen, "dropped", "queued"), "dropped queued")
    assert rt.cancel("by-id")
    text, m = await asyncio.wait_for(by_id, LIMIT)
    assert text == "" and m.finish_reason == "cancelled" and m.completion_tokens == 0
    dropped.cancel()  # the client of a queued request went away
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert rt.stats()[0].queued == 0
    await holder.close()
    _, after = await collect(rt, path, ask(3))
    assert after.completion_tokens == GREEDY.max_tokens
    for request_id in ("by-id", "dropped"):
        assert not has(seen, request_id, "started")
        assert has(seen, request_id, "finished")


async def test_cancel_without_id_spares_named_requests(rt: RuntimeService) -> None:
    path = str(tiny_gguf())
    await rt.load(path)
    alone, _ = await collect(rt, path, ask(5))
    named = Reader(rt, path, ask(5), GREEDY, request_id="client-1")
    console = Reader(rt, path, ask(6), LONG)
    await named.first()
    await console.first()
    duplicate = rt.generate(path, ask(7), GREEDY, request_id="client-1")
    with pytest.raises(GenerationError, match="already in use"):
        await duplicate.__anext__()
    assert rt.cancel()  # the console's "stop"
    _, m = await console.rest()
    assert m.finish_reason == "cancelled"
    text, m = await named.rest()
    assert text == alone and m.finish_reason == "length"
    assert not rt.cancel() and not rt.cancel("client-1") and not rt.cancel("nobody")


# -- limits of one request -------------------------------------------------------------------


async def test_limits_and_errors_stay_with_their_request(rt: RuntimeService) -> None:
    path = str(tiny_gguf())
    await rt.load(path, LoadOptions(context_length=128))
    plain, _ = await collect(rt, path, ask(1), GenParams(temperature=0, max_tokens=40))
    stop = plain.strip()[3:6]
    long_chat = [{"role": "user", "content": "word " * 400}]
    short_chat = [{"role": "user", "content": "hi"}]
    results = await asyncio.gather(
        collect(rt, path, ask(1), GenParams(temperature=0, max_tokens=7)),
        collect(rt, path, ask(1), GenParams(temperature=0, max_tokens=40, stop=(stop,))),
        collect(rt, path, long_chat),
        collect(rt, path, short_chat, GenParams(temperature=0, max_tokens=0)),
        return_exceptions=True,
    )
    capped, stopped, too_long, to_the_end = results
    assert isinstance(capped, tuple) and capped[1].completion_tokens == 7
    assert capped[1].finish_reason == "length" and plain.startswith(capped[0])
    assert isinstance(stopped, tuple) and stopped[1].finish_reason == "stop"
    assert stop not in stopped[0] and plain.startswith(stopped[0])
    assert isinstance(too_long, GenerationError)
    assert "\n" not in str(too_long) and "context holds 128" in str(too_long)
    # no max_tokens: the answer ends where the slot's context does
    assert isinstance(to_the_end, tuple)
    m = to_the_end[1]
    assert m.finish_reason == "length" and m.prompt_tokens + m.completion_tokens == 128
    assert rt.stats()[0].running == 0


# -- a busy model is never unloaded silently ------------------------------------------------


async def test_busy_model_is_not_unloaded_evicted_or_reloaded(rt: RuntimeService) -> None:
    a, b = str(tiny_gguf(seed=61)), str(tiny_gguf(seed=62))
    await rt.load(a)
    alone, _ = await collect(rt, a, ask(1))
    reader = Reader(rt, a, ask(1), GREEDY)
    await reader.first()
    with pytest.raises(ModelBusyError) as info:
        await rt.unload(a)
    assert "\n" not in str(info.value)
    assert "is answering 1 request;" in str(info.value) and "force" in str(info.value)
    with pytest.raises(ModelBusyError, match=r"cannot load .* answering 1 request"):
        await rt.load(b)  # max_loaded_models 1: a would have to go
    with pytest.raises(ModelBusyError, match="cannot reload"):
        await rt.load(a, LoadOptions(context_length=128))
    assert rt.is_loaded(a) and not rt.is_loaded(b)
    text, m = await reader.rest()  # the answer went on, whole
    assert text == alone and m.completion_tokens == GREEDY.max_tokens
    await rt.load(b)  # idle now: evicted as before
    assert [x.id for x in rt.loaded()] == [b]


async def test_unload_with_force_stops_answers_and_says_so(rt: RuntimeService) -> None:
    path = str(tiny_gguf())
    await rt.load(path, LoadOptions(parallel=1))
    seen = serving(rt)
    running = Reader(rt, path, ask(1), LONG)
    await running.first()
    queued = asyncio.create_task(collect(rt, path, ask(2), request_id="queued"))
    await until(lambda: has(seen, "queued", "queued"), "the second request queued")
    assert await rt.unload(path, "switching models", force=True)
    assert not rt.is_loaded(path)
    with pytest.raises(AnswerStoppedError, match=r"stopped after \d+ tokens?: .* was unloaded "
                       r"\(switching models\)") as info:
        await running.rest()
    assert "\n" not in str(info.value)
    with pytest.raises(AnswerStoppedError, match="before it started"):
        await asyncio.wait_for(queued, LIMIT)
    assert not has(seen, "queued", "started")


async def test_cancel_then_unload_waits_for_the_cancelled_answer(rt: RuntimeService) -> None:
    """The dashboard's `u` while the console answers: cancel(), then unload() — no force."""
    path = str(tiny_gguf())
    await rt.load(path)
    reader = Reader(rt, path, ask(1), LONG)
    await reader.first()
    assert rt.cancel()
    assert await asyncio.wait_for(rt.unload(path), LIMIT)
    _, m = await reader.rest()
    assert m.finish_reason == "cancelled" and not rt.is_loaded(path)


async def test_keep_alive_waits_until_the_model_is_idle(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, keep_alive_seconds=0.2, stream_buffer=1)
    try:
        path = str(tiny_gguf())
        await rt.load(path)
        reader = Reader(rt, path, ask(1), LONG)
        await reader.first()
        await asyncio.sleep(1.0)  # five keep-alive periods, the answer still open
        assert rt.is_loaded(path)
        await reader.close()
        await until(lambda: rt.state(path) == ModelState.UNLOADED, "the idle model unloaded")
        assert not rt.is_loaded(path)
    finally:
        await rt.aclose()
