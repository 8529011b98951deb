"""Conversations and remembered load options in the inventory's SQLite (migration 7).

``conversations`` holds one row per chat (model, title, system prompt), ``chat_messages``
its messages in order, ``load_options`` the options a model was last loaded with from the
dashboard. Conversations stay when their model is removed (they are the user's text). What is
read back is checked: a damaged row is skipped, never shown as something else.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tui.chat.options import from_json, to_json
from tui.chat.session import ChatSession, Message, title_of
from tui.runtime.types import LoadOptions
from tui.store.db import Database

MAX_LISTED = 500  # conversations a list shows (newest first)
MAX_MESSAGES = 20_000  # messages read back per conversation (the newest)
ROLES = ("user", "assistant")


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """A saved conversation, as the list shows it."""

    id: str
    model_id: str
    title: str
    messages: int
    created_at: float
    updated_at: float


class ChatStore:
    """Reads and writes conversations; each call is one short transaction (blocking)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, session: ChatSession, messages: Sequence[Message]) -> None:
        """Save ``messages`` (the newest turns of ``session``) after those already saved;
        creates the conversation on its first save, and keeps its title and system prompt."""
        now = time.time()
        with self.db.write() as tx:
            tx.execute(
                "INSERT INTO conversations (id, model_id, title, system, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET title = excluded.title,"
                " system = excluded.system, updated_at = excluded.updated_at",
                (session.id, session.model_id, session.title, session.system, now, now),
            )
            row = tx.execute("SELECT COALESCE(MAX(seq), -1) FROM chat_messages "
                             "WHERE conversation_id = ?", (session.id,)).fetchone()
            seq = int(row[0]) + 1
            for offset, message in enumerate(messages):
                tx.execute(
                    "INSERT INTO chat_messages (conversation_id, seq, role, content, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (session.id, seq + offset, message["role"], message["content"], now),
                )

    def set_system(self, session: ChatSession) -> None:
        """Save a changed system prompt (of a conversation already saved)."""
        with self.db.write() as tx:
            tx.execute("UPDATE conversations SET system = ?, updated_at = ? WHERE id = ?",
                       (session.system, time.time(), session.id))

    def clear(self, conversation_id: str) -> None:
        """Delete a conversation's messages (the conversation stays, empty, unlisted)."""
        with self.db.write() as tx:
            tx.execute("DELETE FROM chat_messages WHERE conversation_id = ?", (conversation_id,))
            tx.execute("UPDATE conversations SET title = '', updated_at = ? WHERE id = ?",
                       (time.time(), conversation_id))

    def delete(self, conversation_id: str) -> bool:
        """Delete a conversation and its messages; False if there was none."""
        with self.db.write() as tx:
            cur = tx.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            return cur.rowcount > 0

    def rename(self, conversation_id: str, title: str) -> bool:
        """Give a conversation another title (its first line, cut short); False if none."""
        with self.db.write() as tx:
            cur = tx.execute("UPDATE conversations SET title = ? WHERE id = ?",
                             (title_of(title), conversation_id))
            return cur.rowcount > 0

    def list(self, model_id: str, limit: int = MAX_LISTED) -> list[ConversationInfo]:
        """The model's conversations that have messages, most recently used first."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT c.id, c.model_id, c.title, c.created_at, c.updated_at, "
                "(SELECT COUNT(*) FROM chat_messages m WHERE m.conversation_id = c.id) "
                "FROM conversations c WHERE c.model_id = ? "
                "AND EXISTS (SELECT 1 FROM chat_messages m WHERE m.conversation_id = c.id) "
                "ORDER BY c.updated_at DESC, c.rowid DESC LIMIT ?",
                (model_id, max(0, limit)),
            ).fetchall()
        out = []
        for row in rows:
            if not all(isinstance(row[i], str) for i in range(3)):
                continue
            created, updated = (r if isinstance(r, int | float) else 0.0 for r in row[3:5])
            out.append(ConversationInfo(row[0], row[1], row[2], int(row[5]), float(created),
                                        float(updated)))
        return out

    def open(self, conversation_id: str) -> ChatSession | None:
        """The conversation with its messages (the newest :data:`MAX_MESSAGES`), or None.
        Messages of an unknown role or not text are left out."""
        with self.db.read() as conn:
            head = conn.execute("SELECT model_id, title, system FROM conversations WHERE id = ?",
                                (conversation_id,)).fetchone()
            if head is None:
                return None
            rows = conn.execute(
                "SELECT role, content FROM (SELECT seq, role, content FROM chat_messages "
                "WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                (conversation_id, MAX_MESSAGES),
            ).fetchall()
        model_id, title, system = (v if isinstance(v, str) else "" for v in head)
        turns = [{"role": r[0], "content": r[1]} for r in rows
                 if r[0] in ROLES and isinstance(r[1], str)]
        return ChatSession(model_id=model_id, system=system, turns=turns, id=conversation_id,
                           title=title)

    def load_options(self, model_id: str) -> LoadOptions | None:
        """The options remembered for ``model_id`` (None: none, or unreadable)."""
        with self.db.read() as conn:
            row = conn.execute("SELECT options FROM load_options WHERE model_id = ?",
                               (model_id,)).fetchone()
        return from_json(row[0]) if row is not None else None

    def set_load_options(self, model_id: str, options: LoadOptions | None) -> None:
        """Remember ``options`` for ``model_id`` (None forgets them)."""
        with self.db.write() as tx:
            if options is None:
                tx.execute("DELETE FROM load_options WHERE model_id = ?", (model_id,))
                return
            tx.execute(
                "INSERT INTO load_options (model_id, options, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(model_id) DO UPDATE SET options = excluded.options, "
                "updated_at = excluded.updated_at",
                (model_id, to_json(options), time.time()),
            )
