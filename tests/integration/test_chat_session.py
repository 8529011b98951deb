"""Chats on real parts: the ChatStore on SQLite (migration 7), token counting and trimming
through the real runtime with a tiny GGUF, and the ``modeldeck run`` REPL (``/new``,
``/clear``, ``/system``, ``/help``, a full context)."""

from __future__ import annotations

import io
import sqlite3
import sys
from pathlib import Path

import pytest

from tui.chat import ChatSession, ChatStore, ContextFullError, answer_reserve
from tui.chat.session import title_of
from tui.cli import main
from tui.runtime.types import GenParams, LoadOptions
from tui.store import Database
from tui.store.salvage import salvage
from tui.store.schema import MIGRATIONS

from tests.support.runtime import make_runtime
from tests.support.tiny_models import tiny_gguf


@pytest.fixture
def store(tmp_path: Path):
    db = Database(tmp_path / "state" / "modeldeck.db")
    yield ChatStore(db)
    db.close()


def test_migration_7_adds_the_chat_tables(store: ChatStore) -> None:
    assert len(MIGRATIONS) >= 7 and store.db.schema_version == len(MIGRATIONS)
    with store.db.read() as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"conversations", "chat_messages", "load_options"} <= tables


def test_conversations_are_saved_listed_reopened_renamed_and_deleted(store: ChatStore) -> None:
    first = ChatSession("tiny", "be brief")
    first.add_user("[bold]hello[/] \x1b[2J\nsecond line")
    first.add_assistant("hi there")
    store.append(first, first.turns)
    first.add_user("more")
    first.add_assistant("sure")
    store.append(first, first.turns[-2:])
    other = ChatSession("tiny")
    other.add_user("another chat")
    other.add_assistant("ok")
    store.append(other, other.turns)
    elsewhere = ChatSession("other-model")
    elsewhere.add_user("not listed for tiny")
    elsewhere.add_assistant("x")
    store.append(elsewhere, elsewhere.turns)

    listed = store.list("tiny")
    assert [c.id for c in listed] == [other.id, first.id]  # newest first
    assert listed[1].title == "[bold]hello[/] \x1b[2J" and listed[1].messages == 4

    reopened = store.open(first.id)
    assert reopened is not None
    assert reopened.system == "be brief" and reopened.model_id == "tiny"
    assert reopened.turns == first.turns and reopened.title == first.title

    assert store.rename(first.id, "  renamed\nignored")
    assert store.open(first.id).title == "renamed"  # type: ignore[union-attr]
    first.system = "be verbose"
    store.set_system(first)
    assert store.open(first.id).system == "be verbose"  # type: ignore[union-attr]

    store.clear(first.id)  # emptied: unlisted, but the same conversation goes on
    assert [c.id for c in store.list("tiny")] == [other.id]
    first.clear()
    first.add_user("fresh start")
    first.add_assistant("ok")
    store.append(first, first.turns)
    assert store.open(first.id).turns == first.turns  # type: ignore[union-attr]
    assert store.list("tiny")[0].title == "fresh start"

    assert store.delete(other.id) and not store.delete(other.id)
    assert store.open(other.id) is None
    with store.db.read() as conn:
        left = conn.execute("SELECT COUNT(*) FROM chat_messages WHERE conversation_id = ?",
                            (other.id,)).fetchone()[0]
    assert left == 0


def test_damaged_rows_are_skipped_not_shown_as_something_else(store: ChatStore) -> None:
    session = ChatSession("tiny")
    session.add_user("hello")
    session.add_assistant("hi")
    store.append(session, session.turns)
    with store.db.write() as tx:
        tx.execute("INSERT INTO chat_messages VALUES (?, 5, 'system', 'injected', 0)",
                   (session.id,))
        tx.execute("INSERT INTO chat_messages VALUES (?, 6, 'user', X'00ff', 0)", (session.id,))
        tx.execute("INSERT INTO load_options VALUES ('tiny', '{\"context_length\": 1e999}', 0)")
    reopened = store.open(session.id)
    assert reopened is not None and reopened.turns == session.turns
    assert store.load_options("tiny") == LoadOptions()


def test_load_options_are_remembered_per_model(store: ChatStore) -> None:
    assert store.load_options("tiny") is None
    options = LoadOptions(context_length=320, gpu_layers=0, threads=2, parallel=2)
    store.set_load_options("tiny", options)
    assert store.load_options("tiny") == options
    assert store.load_options("other") is None
    store.set_load_options("tiny", LoadOptions(gpu_layers="all"))
    assert store.load_options("tiny") == LoadOptions(gpu_layers="all")
    store.set_load_options("tiny", None)
    assert store.load_options("tiny") is None


def test_repair_salvages_conversations(store: ChatStore, tmp_path: Path) -> None:
    session = ChatSession("tiny", "sys")
    session.add_user("keep me")
    session.add_assistant("kept")
    store.append(session, session.turns)
    store.set_load_options("tiny", LoadOptions(context_length=512))
    with store.db.read() as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    fresh_db = Database(tmp_path / "fresh.db")
    try:
        copied = salvage(store.db.path, fresh_db)
        assert copied["conversations"] == (1, 0) and copied["chat_messages"] == (2, 0)
        fresh = ChatStore(fresh_db)
        assert fresh.open(session.id).turns == session.turns  # type: ignore[union-attr]
        assert fresh.load_options("tiny") == LoadOptions(context_length=512)
    finally:
        fresh_db.close()


# -- the real runtime ----------------------------------------------------------------------


async def test_count_tokens_is_what_the_model_is_fed_and_trimming_keeps_answering(
    tmp_path: Path,
) -> None:
    pytest.importorskip("llama_cpp")
    runtime = make_runtime(tmp_path)
    try:
        info = await runtime.load(tiny_gguf(), LoadOptions(context_length=256, parallel=1))
        assert info.context_length == 256
        params = GenParams(temperature=0, max_tokens=40)
        session = ChatSession(info.id, "You are a tiny test model.")

        async def count(messages: object) -> int:
            tokens = await runtime.count_tokens(info.id, messages)  # type: ignore[arg-type]
            assert tokens is not None
            return tokens

        notes = []
        for i in range(8):
            session.add_user(f"question {i}: tell me about the model and the world of tokens")
            trimmed = await session.amessages_for(256, count, answer_reserve(256, 40))
            assert trimmed.messages[0] == {"role": "system",
                                           "content": "You are a tiny test model."}
            assert trimmed.messages[-1] == session.turns[-1]
            assert trimmed.tokens <= 256 - 40
            if trimmed.note():
                notes.append(trimmed.note())
            parts, metrics = [], None
            async for item in runtime.generate(info.id, trimmed.messages, params):
                if isinstance(item, str):
                    parts.append(item)
                else:
                    metrics = item
            assert metrics is not None and metrics.prompt_tokens == trimmed.tokens
            session.add_assistant("".join(parts))
        assert notes and notes[-1].endswith("to fit the 256-token context")
        assert len(session.turns) == 16  # nothing was lost from the conversation itself

        session.add_user("word " * 400)  # alone it is past the context: one clear error
        with pytest.raises(ContextFullError) as error:
            await session.amessages_for(256, count, answer_reserve(256, 40))
        assert "256-token context" in str(error.value)
        assert session.discard_last_user() is not None
        with pytest.raises(Exception, match="not loaded"):
            await runtime.count_tokens("nope", [{"role": "user", "content": "x"}])
    finally:
        await runtime.aclose()


# -- the REPL ------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("llama_cpp")
    monkeypatch.setenv("MODELDECK_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("MODELDECK_KEEP_ALIVE_MINUTES", "0")
    base = ["--models-dir", str(tmp_path / "models"), "--state-dir", str(tmp_path / "state")]

    def run(stdin: str, *args: str) -> int:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        return main([*base, *args])

    return run


def test_repl_trims_a_full_context_and_never_exits_on_it(cli, capsys) -> None:
    prompts = "".join(f"question {i}: tell me about the model and the tokens\n"
                      for i in range(6))
    too_long = "word " * 400 + "\n"
    code = cli(prompts + too_long + "still here?\n", "run", str(tiny_gguf()), "--ctx", "256",
               "--max-tokens", "40", "--temperature", "0", "--system", "be brief")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "earlier turns left out to fit the 256-token context)" in err
    errors = [line for line in err.splitlines() if line.startswith("modeldeck: error:")]
    assert len(errors) == 1 and "256-token context" in errors[0] and "--ctx" in errors[0]
    assert "Traceback" not in err
    # every prompt but the one that could not fit was answered, the last one too
    assert err.count("40 tokens") + err.count(", stop") >= 7
    assert err.rstrip().splitlines()[-1].endswith(("length", "stop"))


def test_repl_commands(cli, capsys) -> None:
    stdin = ("/help\nhello\n/system be brief\n/clear\n/new\n/bogus\n/usr/bin is a folder\n"
             "/exit\nnever sent\n")
    code = cli(stdin, "run", str(tiny_gguf()), "--max-tokens", "5", "--temperature", "0")
    err = capsys.readouterr().err
    assert code == 0
    assert "/new: a new conversation" in err and "/system TEXT" in err
    assert "system prompt set" in err and "conversation cleared" in err
    assert "new conversation" in err and "unknown command /bogus; /help lists them" in err
    assert err.count("5 tokens") == 2  # "hello" and the path-like prompt, not the commands


def test_title_of_a_saved_chat_comes_from_the_first_prompt() -> None:
    assert title_of("what is a gguf?\nand more") == "what is a gguf?"


def test_the_chat_tables_reject_a_message_without_its_conversation(store: ChatStore) -> None:
    with pytest.raises(sqlite3.IntegrityError), store.db.write() as tx:
        tx.execute("INSERT INTO chat_messages VALUES ('nope', 0, 'user', 'x', 0)")
