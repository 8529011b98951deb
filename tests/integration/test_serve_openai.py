"""``modeldeck serve``'s OpenAI-compatible API, driven by the official ``openai`` client.

A real server (uvicorn on 127.0.0.1, an ephemeral port) over real services: SQLite, a tiny
llama.cpp GGUF and a tiny transformers model, greedy decoding so answers can be compared.
Requests are held open deterministically: a request of the server's own (as the console's)
takes the only slot and parks after one token (``stream_buffer=1``). Waits are on conditions.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("openai")

import openai

from tests.support.serve import LIMIT, serve_settings, served, wait_until
from tests.support.tiny_models import tiny_gguf, tiny_transformers

ASK = [{"role": "user", "content": "tell me about the water model"}]


def client(url: str, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=kwargs.pop("api_key", "none"),
                         max_retries=0, timeout=LIMIT, **kwargs)


def ask(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {i}: what is the answer of the deck"}]


def stream_text(c: openai.OpenAI, **kwargs: object) -> tuple[str, list[object]]:
    chunks = list(c.chat.completions.create(stream=True, **kwargs))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    return text, chunks


def test_models_chat_and_completions_through_the_openai_client(tmp_path: Path) -> None:
    settings = serve_settings(tmp_path)
    with served(settings, {"tiny": (tiny_gguf(), "gguf")}) as s:
        c = client(s.url)
        assert [m.id for m in c.models.list()] == ["tiny"]
        assert c.models.retrieve("tiny").id == "tiny"
        assert s.loaded() == []  # installed, not loaded: the first request loads it (JIT)

        whole = c.chat.completions.create(model="tiny", messages=ASK, temperature=0,
                                          max_tokens=24)
        assert [m.id for m in s.loaded()] == ["tiny"]
        assert whole.object == "chat.completion" and whole.model == "tiny"
        choice = whole.choices[0]
        assert choice.message.role == "assistant" and choice.message.content
        assert choice.finish_reason == "length"
        assert whole.usage.completion_tokens == 24
        assert whole.usage.total_tokens == whole.usage.prompt_tokens + 24 > 24

        text, chunks = stream_text(c, model="tiny", messages=ASK, temperature=0,
                                   max_completion_tokens=24,
                                   stream_options={"include_usage": True})
        assert text == choice.message.content
        assert chunks[0].choices[0].delta.role == "assistant"
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
        assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
        assert len({ch.id for ch in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")

        # max_completion_tokens wins over max_tokens; a stop string ends the answer
        short = c.chat.completions.create(model="tiny", messages=ASK, temperature=0,
                                          max_tokens=24, max_completion_tokens=5)
        assert short.usage.completion_tokens == 5
        cut = text.split()[2]
        stopped = c.chat.completions.create(model="tiny", messages=ASK, temperature=0,
                                            max_tokens=24, stop=[cut])
        assert stopped.choices[0].finish_reason == "stop"
        assert cut not in stopped.choices[0].message.content

        done = c.completions.create(model="tiny", prompt="the water model is", temperature=0,
                                    max_tokens=12)
        assert done.object == "text_completion" and done.choices[0].text
        assert done.usage.completion_tokens == 12
        pieces = list(c.completions.create(model="tiny", prompt="the water model is",
                                           temperature=0, max_tokens=12, stream=True,
                                           stream_options={"include_usage": True}))
        assert "".join(p.choices[0].text for p in pieces if p.choices) == done.choices[0].text
        assert pieces[-1].usage.completion_tokens == 12
        # a raw prompt is not the chat template's: another continuation than the chat's
        assert done.choices[0].text != c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "the water model is"}],
            temperature=0, max_tokens=12).choices[0].message.content

        # seeded sampling repeats itself
        a, b = (c.chat.completions.create(model="tiny", messages=ASK, temperature=1.1,
                                          top_p=0.9, seed=7, max_tokens=16)
                .choices[0].message.content for _ in range(2))
        assert a == b


def test_transformers_model_streams_like_it_answers(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    settings = serve_settings(tmp_path)
    with served(settings, {"hf-tiny": (tiny_transformers(), "safetensors")}) as s:
        c = client(s.url)
        whole = c.chat.completions.create(model="hf-tiny", messages=ASK, temperature=0,
                                          max_tokens=12)
        text, chunks = stream_text(c, model="hf-tiny", messages=ASK, temperature=0,
                                   max_tokens=12, stream_options={"include_usage": True})
        assert whole.choices[0].message.content and text == whole.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 12
        with pytest.raises(openai.BadRequestError, match="cannot make embeddings"):
            c.embeddings.create(model="hf-tiny", input="hello")


def test_embeddings_of_a_gguf_model(tmp_path: Path) -> None:
    with served(serve_settings(tmp_path), {"tiny": (tiny_gguf(), "gguf")}) as s:
        c = client(s.url)
        # the client asks for base64 by default and decodes it; float on request
        got = c.embeddings.create(model="tiny", input=["hello world", "the water model"])
        floats = c.embeddings.create(model="tiny", input=["hello world", "the water model"],
                                     encoding_format="float")
        assert [d.index for d in got.data] == [0, 1]
        for a, b in zip(got.data, floats.data, strict=True):
            assert len(a.embedding) == len(b.embedding) == 64
            assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
            assert sum(x * x for x in a.embedding) == pytest.approx(1.0, abs=1e-4)
        assert got.data[0].embedding != pytest.approx(got.data[1].embedding, abs=1e-3)
        assert got.usage.prompt_tokens == got.usage.total_tokens > 2
        one = c.embeddings.create(model="tiny", input="hello world", encoding_format="float")
        assert one.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)


def test_an_embedding_gguf_makes_vectors_and_refuses_to_chat(tmp_path: Path) -> None:
    """A GGUF told an embedding model (its pooling type) loads for /v1/embeddings; a chat
    request gets a 400 that says what it is, not a load failure."""
    emb = tiny_gguf(extra_kv=(("uint32", "llama.pooling_type", 1),))
    with served(serve_settings(tmp_path), {"emb": (emb, "gguf")}) as s:
        c = client(s.url)
        got = c.embeddings.create(model="emb", input=["hello world"], encoding_format="float")
        assert len(got.data[0].embedding) == 64
        with pytest.raises(openai.BadRequestError, match="embedding model") as err:
            c.chat.completions.create(model="emb", messages=ASK, max_tokens=4)
        assert err.value.code == "not_a_chat_model"


def test_errors_have_openai_shapes_and_statuses(tmp_path: Path) -> None:
    settings = serve_settings(tmp_path, serve_max_tokens=64)
    with served(settings, {"tiny": (tiny_gguf(), "gguf")}) as s:
        c = client(s.url)
        with pytest.raises(openai.NotFoundError) as nf:
            c.chat.completions.create(model="nope", messages=ASK)
        assert nf.value.code == "model_not_found" and "GET /v1/models" in nf.value.message
        for kwargs, param in [
            ({"temperature": 5}, "temperature"),
            ({"n": 2}, "n"),
            ({"max_tokens": 65}, "max_tokens"),
            ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
            ({"extra_body": {"keep_alive": "soon"}}, "keep_alive"),
            ({"logprobs": True}, "logprobs"),
            ({"response_format": {"type": "json_object"}}, "response_format"),
            ({"tool_choice": "required", "tools": [{"type": "function",
                                                    "function": {"name": "f"}}]},
             "tool_choice"),
        ]:
            with pytest.raises(openai.BadRequestError) as bad:
                c.chat.completions.create(model="tiny", messages=ASK, **kwargs)
            assert bad.value.param == param, (kwargs, bad.value.body)
            assert bad.value.type == "invalid_request_error"
            assert "\n" not in bad.value.message
        with pytest.raises(openai.BadRequestError, match="messages"):
            c.chat.completions.create(model="tiny", messages=[])
        with pytest.raises(openai.BadRequestError, match="one string"):
            c.completions.create(model="tiny", prompt=[1, 2, 3])
        # the prompt does not fit the context: OpenAI's code for it
        with pytest.raises(openai.BadRequestError) as long:
            c.chat.completions.create(model="tiny", messages=[
                {"role": "user", "content": "water " * 2000}])
        assert long.value.code == "context_length_exceeded"


def test_tools_reach_the_chat_template(tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather",
                                               "parameters": {"type": "object"}}}]
    template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                "{% if tools %}TOOLS {{ tools | tojson }}\n{% endif %}assistant:")
    plain = tiny_gguf(chat_template=template)
    with served(serve_settings(tmp_path), {"t": (plain, "gguf")}) as s:
        c = client(s.url)
        without = c.chat.completions.create(model="t", messages=ASK, temperature=0,
                                            max_tokens=8)
        with_tools = c.chat.completions.create(model="t", messages=ASK, temperature=0,
                                               max_tokens=8, tools=tools)
        none = c.chat.completions.create(model="t", messages=ASK, temperature=0,
                                         max_tokens=8, tools=tools, tool_choice="none")
        assert with_tools.usage.prompt_tokens > without.usage.prompt_tokens
        assert none.usage.prompt_tokens == without.usage.prompt_tokens


def test_queue_full_is_429_with_retry_after(tmp_path: Path) -> None:
    settings = serve_settings(tmp_path, parallel_requests=1, queue_limit=0)
    with served(settings, {"tiny": (tiny_gguf(), "gguf")}, stream_buffer=1) as s:
        c = client(s.url)
        c.chat.completions.create(model="tiny", messages=ASK, max_tokens=2)  # loads it
        held = s.hold("tiny")
        try:
            with pytest.raises(openai.RateLimitError) as full:
                c.chat.completions.create(model="tiny", messages=ASK, max_tokens=4)
            assert int(full.value.response.headers["retry-after"]) >= 1
            assert full.value.code == "rate_limit_exceeded"
            assert "queue_limit" in full.value.message
            with pytest.raises(openai.RateLimitError):
                list(c.chat.completions.create(model="tiny", messages=ASK, max_tokens=4,
                                               stream=True))
        finally:
            held.release()
        assert c.chat.completions.create(model="tiny", messages=ASK, max_tokens=4).choices


def test_a_client_that_disconnects_mid_stream_stops_its_answer(tmp_path: Path) -> None:
    """The answer would run for tens of thousands of tokens; closing the stream after three
    chunks stops it and frees its slot long before that."""
    settings = serve_settings(tmp_path, serve_max_tokens=100_000, parallel_requests=1)
    big = tiny_gguf(context_length=65536)
    with served(settings, {"tiny": (big, "gguf")}) as s:
        import httpx

        r = httpx.post(s.url + "/api/models/tiny/load",
                       json={"context_length": 60000, "parallel": 1}, timeout=LIMIT)
        assert r.status_code == 200, r.text
        c = client(s.url)
        stream = c.chat.completions.create(model="tiny", messages=ASK, temperature=0,
                                           max_tokens=59000, stream=True)
        for _, _chunk in zip(range(3), stream, strict=False):
            pass
        assert s.stats()[0].running == 1
        stream.close()
        wait_until(lambda: s.stats()[0].running == 0, "the slot to free")
        stats = s.stats()[0]
        assert stats.requests == 1 and stats.tokens < 59000 // 2  # stopped, far from its end
        wait_until(lambda: 'status="499"' in httpx.get(s.url + "/metrics").text,
                   "the request to be counted as gone")
        # the model answers the next client at once
        assert c.chat.completions.create(model="tiny", messages=ASK, max_tokens=4).choices


def test_a_client_that_gives_up_while_queued_leaves_the_queue(tmp_path: Path) -> None:
    settings = serve_settings(tmp_path, parallel_requests=1)
    with served(settings, {"tiny": (tiny_gguf(), "gguf")}, stream_buffer=1) as s:
        c = client(s.url)
        c.chat.completions.create(model="tiny", messages=ASK, max_tokens=2)
        held = s.hold("tiny")
        try:
            with pytest.raises(openai.APITimeoutError):  # no answer while it waits: gives up
                c.with_options(timeout=1.0).chat.completions.create(
                    model="tiny", messages=ASK, max_tokens=4, stream=True)
            wait_until(lambda: s.stats()[0].queued == 0, "the request to leave the queue")
            assert s.stats()[0].running == 1  # the held one goes on
        finally:
            held.release()


def test_keep_alive_zero_unloads_after_the_answer(tmp_path: Path) -> None:
    with served(serve_settings(tmp_path), {"tiny": (tiny_gguf(), "gguf")}) as s:
        c = client(s.url)
        c.chat.completions.create(model="tiny", messages=ASK, max_tokens=4,
                                  extra_body={"keep_alive": "5m"})
        (m,) = s.loaded()
        assert m.keep_alive_s == 300 and 0 < m.unload_in_s <= 300
        c.chat.completions.create(model="tiny", messages=ASK, max_tokens=4,
                                  extra_body={"keep_alive": 0})
        wait_until(lambda: s.loaded() == [], "keep_alive 0 to unload the model")
        c.chat.completions.create(model="tiny", messages=ASK, max_tokens=4,
                                  extra_body={"keep_alive": -1})
        (m,) = s.loaded()
        assert m.keep_alive_s is None and m.unload_in_s is None  # pinned


def test_eight_concurrent_clients_first_in_first_out_and_429_when_full(tmp_path: Path) -> None:
    """Eight clients on one model while its four slots are taken (by requests of the server's
    own, as the console's): all eight wait, start in the order they came, and each gets the
    answer the same request gets alone; a ninth finds the queue full (429)."""
    settings = serve_settings(tmp_path, parallel_requests=4, queue_limit=8)
    with served(settings, {"tiny": (tiny_gguf(), "gguf")}, stream_buffer=1) as s:
        c = client(s.url)
        alone = [c.chat.completions.create(model="tiny", messages=ask(i), temperature=0,
                                           max_tokens=32).choices[0].message.content
                 for i in range(8)]
        holds = [s.hold("tiny", f"hold {i}") for i in range(4)]
        s.events.clear()

        async def eight() -> tuple[list[tuple[str, str | None, str]], BaseException | None]:
            ac = openai.AsyncOpenAI(base_url=s.v1, api_key="none", max_retries=0,
                                    timeout=LIMIT)

            async def one(i: int) -> tuple[str, str | None, str]:
                stream = await ac.chat.completions.create(
                    model="tiny", messages=ask(i), temperature=0, max_tokens=32, stream=True)
                parts, finish, rid = [], None, ""
                async for chunk in stream:
                    rid = chunk.id
                    parts.append(chunk.choices[0].delta.content or "")
                    finish = chunk.choices[0].finish_reason or finish
                return "".join(parts), finish, rid

            tasks = []
            try:
                for i in range(8):  # each one queued before the next is sent
                    tasks.append(asyncio.ensure_future(one(i)))
                    while len(s.serving("queued")) < i + 1:
                        await asyncio.sleep(0.01)
                refused = None
                try:
                    await ac.chat.completions.create(model="tiny", messages=ask(9),
                                                     max_tokens=4)
                except openai.RateLimitError as exc:
                    refused = exc
                for held in holds:
                    held.release()
                return list(await asyncio.gather(*tasks)), refused
            finally:
                for task in tasks:
                    task.cancel()
                await ac.close()

        answers, refused = asyncio.run(eight())
        assert isinstance(refused, openai.RateLimitError)
        assert int(refused.response.headers["retry-after"]) >= 1
        assert [a for a, _, _ in answers] == alone
        assert all(f == "length" for _, f, _ in answers)
        ids = [rid for _, _, rid in answers]
        assert [e.request_id for e in s.serving("queued")] == ids
        assert [e.request_id for e in s.serving("started")] == ids  # first in, first out
        stats = s.stats()[0]
        assert (stats.running, stats.queued) == (0, 0)
        assert max(e.running or 0 for e in s.serving()) == 4


def test_a_model_switch_while_another_answers_is_refused_clearly(tmp_path: Path) -> None:
    """One model may be loaded; while it answers, a request for another is refused (503,
    retry soon) and the answer in progress goes on untouched."""
    settings = serve_settings(tmp_path, max_loaded_models=1, parallel_requests=1)
    models = {"a": (tiny_gguf(seed=61), "gguf"), "b": (tiny_gguf(seed=62), "gguf")}
    with served(settings, models, stream_buffer=1) as s:
        c = client(s.url)
        c.chat.completions.create(model="a", messages=ASK, max_tokens=2)
        held = s.hold("a")
        try:
            with pytest.raises(openai.InternalServerError) as busy:
                c.chat.completions.create(model="b", messages=ASK, max_tokens=2)
            assert busy.value.status_code == 503 and busy.value.code == "model_busy"
            assert "max_loaded_models" in busy.value.message
            assert busy.value.response.headers["retry-after"] == "1"
            assert [m.id for m in s.loaded()] == ["a"] and s.stats()[0].running == 1
        finally:
            held.release()
        # once a is idle, b replaces it
        assert c.chat.completions.create(model="b", messages=ASK, max_tokens=2).choices
        assert [m.id for m in s.loaded()] == ["b"]
