"""ChatSession: turns, failed prompts, and trimming to the context (a word-counting counter);
the load options' fields (pure)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tui.chat.options import (
    OptionError,
    describe_load,
    field_values,
    from_json,
    parse_load_options,
    to_json,
)
from tui.chat.session import ChatSession, ContextFullError, answer_reserve, title_of
from tui.runtime.types import LoadOptions

PER_MESSAGE = 4  # template tokens around each message


def words(messages: Sequence[dict[str, str]]) -> int:
    """A deterministic counter: a token per word plus a few per message."""
    return sum(len(m["content"].split()) + PER_MESSAGE for m in messages)


def chat(turns: int, words_each: int = 10, system: str = "be brief") -> ChatSession:
    session = ChatSession("m", system)
    for i in range(turns):
        session.add_user(f"q{i} " + "w " * (words_each - 1))
        session.add_assistant(f"a{i} " + "w " * (words_each - 1))
    return session


def test_everything_is_sent_when_it_fits() -> None:
    session = chat(2)
    session.add_user("last question")
    trimmed = session.messages_for(4096, words, reserve=512)
    assert trimmed.dropped == 0 and trimmed.note() is None
    assert trimmed.messages == session.messages()
    assert trimmed.messages[0] == {"role": "system", "content": "be brief"}
    assert trimmed.tokens == words(session.messages())


def test_oldest_turns_are_dropped_first_and_the_system_prompt_is_kept() -> None:
    session = chat(10)  # 10 turns of 2 x 14 tokens, system 6
    session.add_user("the newest prompt")
    counted: list[int] = []

    def counter(messages: Sequence[dict[str, str]]) -> int:
        counted.append(len(messages))
        return words(messages)

    # budget 100: system 6 + newest 7 = 13, each older turn 28: three fit (97)
    trimmed = session.messages_for(200, counter, reserve=100)
    assert trimmed.dropped == 7
    assert trimmed.tokens == 97 <= 100
    assert trimmed.messages[0] == {"role": "system", "content": "be brief"}
    assert trimmed.messages[1]["content"].startswith("q7 ")  # the three newest old turns
    assert trimmed.messages[-1] == {"role": "user", "content": "the newest prompt"}
    assert trimmed.note() == "7 earlier turns left out to fit the 200-token context"
    assert len(counted) <= 6  # everything, the newest alone, then a binary search
    assert len(session.turns) == 21  # the conversation itself is not changed


def test_one_dropped_turn_is_said_in_the_singular() -> None:
    session = chat(2)
    session.add_user("again")
    trimmed = session.messages_for(4096, words, reserve=4096 - 40)
    assert trimmed.dropped == 1
    assert trimmed.note() == "1 earlier turn left out to fit the 4,096-token context"


def test_a_prompt_that_cannot_fit_is_one_clear_error() -> None:
    session = chat(3)
    session.add_user("word " * 300)
    with pytest.raises(ContextFullError) as info:
        session.messages_for(256, words, reserve=128)
    error = info.value
    assert error.tokens == 6 + 304 and error.budget == 128 and error.context == 256
    text = str(error)
    assert "\n" not in text
    assert "310 tokens" in text and "256-token context" in text and "128" in text
    assert "shorten the prompt" in text and "larger context" in text
    # alone, without history, the same
    alone = ChatSession("m")
    alone.add_user("word " * 300)
    with pytest.raises(ContextFullError):
        alone.messages_for(256, words)


def test_a_failed_prompt_is_discarded_and_answers_are_not() -> None:
    session = ChatSession("m")
    session.add_user("first line\nsecond line")
    assert session.title == "first line"
    assert session.discard_last_user() == "first line\nsecond line"
    assert session.turns == [] and session.title == ""
    session.add_user("hello")
    session.add_assistant("hi")
    assert session.discard_last_user() is None  # answered: kept
    assert len(session.turns) == 2
    session.clear()
    assert session.turns == [] and session.title == "" and session.id


def test_titles_are_the_first_line_cut_short() -> None:
    assert title_of("\n\n  hello there \nmore") == "hello there"
    assert len(title_of("x" * 500)) == 80 and title_of("x" * 500).endswith("…")


def test_answer_reserve_leaves_the_prompt_half_the_context_at_least() -> None:
    assert answer_reserve(4096, 512) == 512
    assert answer_reserve(256, 512) == 128
    assert answer_reserve(256, 1) == 1


async def test_the_async_counter_gives_the_same_choice() -> None:
    session = chat(10)
    session.add_user("the newest prompt")

    async def counter(messages: Sequence[dict[str, str]]) -> int:
        return words(messages)

    assert await session.amessages_for(200, counter, 100) == session.messages_for(
        200, words, 100)


def test_load_options_fields_are_validated() -> None:
    options = parse_load_options({"context_length": "8,192", "gpu_layers": "ALL",
                                  "threads": "8", "parallel": "2"})
    assert options == LoadOptions(context_length=8192, gpu_layers="all", threads=8, parallel=2)
    assert parse_load_options({}) == LoadOptions()
    assert parse_load_options({"gpu_layers": "0"}).gpu_layers == 0
    bad = [
        ({"context_length": "abc"}, "context_length"),
        ({"context_length": "16"}, "context_length"),
        ({"context_length": "1e9"}, "context_length"),
        ({"context_length": "99999999999999"}, "context_length"),
        ({"gpu_layers": "lots"}, "gpu_layers"),
        ({"gpu_layers": "-1"}, "gpu_layers"),
        ({"threads": "0"}, "threads"),
        ({"parallel": "65"}, "parallel"),
    ]
    for values, field in bad:
        with pytest.raises(OptionError) as info:
            parse_load_options(values)
        assert info.value.field == field
        assert "\n" not in str(info.value)


def test_load_options_round_trip_and_damaged_json_is_dropped() -> None:
    options = LoadOptions(context_length=320, gpu_layers=0, threads=2)
    assert from_json(to_json(options)) == options
    assert field_values(options) == {"context_length": "320", "gpu_layers": "0",
                                     "threads": "2", "parallel": ""}
    assert describe_load(options) == "ctx 320 | gpu 0 | 2 threads"
    assert from_json("not json") is None and from_json("[1]") is None and from_json(7) is None
    # one bad value (hostile or damaged) costs only itself
    damaged = from_json('{"context_length": 1e400, "gpu_layers": "all", "threads": -3, '
                        '"parallel": true}')
    assert damaged == LoadOptions(gpu_layers="all")
