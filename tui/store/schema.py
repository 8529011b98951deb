"""Schema migrations. Append new steps; never edit a step that has shipped.

``PRAGMA user_version`` holds the number of steps applied.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE models (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        format TEXT NOT NULL,
        path TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        source_ref TEXT,
        revision TEXT,
        catalog_id TEXT,
        status TEXT NOT NULL DEFAULT 'installed',
        architecture TEXT,
        quantization TEXT,
        parameters INTEGER,
        context_length INTEGER,
        size_bytes INTEGER NOT NULL DEFAULT 0,
        metadata TEXT,
        installed_at REAL NOT NULL,
        last_used_at REAL,
        load_seconds REAL,
        tokens_per_s REAL,
        prompt_tokens_per_s REAL,
        ttft_ms REAL
    );
    CREATE TABLE model_files (
        model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT,
        mtime_ns INTEGER,
        PRIMARY KEY (model_id, path)
    );
    CREATE INDEX model_files_path ON model_files(path);
    CREATE TABLE custom_entries (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE scan_cache (
        path TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sample_hash TEXT,
        metadata TEXT,
        error TEXT,
        scanned_at REAL NOT NULL
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        model_id TEXT,
        dest TEXT,
        total_bytes INTEGER,
        done_bytes INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        priority INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE job_files (
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        url TEXT NOT NULL,
        dest TEXT NOT NULL,
        size INTEGER,
        sha256 TEXT,
        etag TEXT,
        last_modified TEXT,
        commit_hash TEXT,
        state TEXT NOT NULL,
        done_bytes INTEGER NOT NULL DEFAULT 0,
        segments TEXT,
        error TEXT,
        PRIMARY KEY (job_id, path)
    );
    """,
    # 2: download jobs: cross-process control requests, display name, git blob ids, file order.
    """
    ALTER TABLE jobs ADD COLUMN control TEXT;
    ALTER TABLE jobs ADD COLUMN name TEXT;
    ALTER TABLE job_files ADD COLUMN blob_sha1 TEXT;
    ALTER TABLE job_files ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_state ON jobs(state);
    """,
    # 3: safe deletion: each file's identity at install (device + inode), and the folders
    # ModelDeck created (removed only when empty, and only while still the same folder).
    """
    ALTER TABLE model_files ADD COLUMN dev INTEGER;
    ALTER TABLE model_files ADD COLUMN ino INTEGER;
    CREATE TABLE owned_dirs (
        path TEXT PRIMARY KEY,
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    # 4: how a downloaded file was verified (sha256, git-blob, size+ranges, ranges).
    """
    ALTER TABLE model_files ADD COLUMN verified TEXT;
    """,
    # 5: one counter per watched table, bumped by every change from any process, so a dashboard
    # tells what changed from a single read (tui.store.changes).
    """
    CREATE TABLE change_counters (
        name TEXT PRIMARY KEY,
        seq INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO change_counters (name, seq) VALUES ('models', 0), ('custom_entries', 0),
        ('jobs', 0);
    CREATE TRIGGER models_insert_counted AFTER INSERT ON models BEGIN
        UPDATE change_counters SET seq = seq + 1 WHERE name = 'models';
    END;
    CREATE TRIGGER models_update_counted AFTER UPDATE ON models BEGIN
        UPDATE change_counters SET seq = seq + 1 WHERE name = 'models';
    END;
    CREATE TRIGGER models_delete_counted AFTER DELETE ON models BEGIN
        UPDATE change_counters SET seq = seq + 1 WHERE name = 'models';
    END;
    CREATE TRIGGER custom_entries_insert_counted AFTER INSERT ON custom_entries BEGIN
        UPDATE change_counters SET seq = seq + 1 WHERE name = 'custom_entries';
    END;
    CREATE TRIGGER custom_entries_update_counted AFTER UPDATE ON custom_entries BEGIN
        UPDATE change_counters SET seq = seq + 1 WHERE name = 'custom_entries';
    END;
    CREATE TRIGGER custom_entries_delete_counted AFTER DELETE ON custom_entries BEGIN
        UPDATE change_counters SET seq = seq + 1 WHERE name = 'custom_entries';
    END;
    CREATE TRIGGER jobs_insert_counted AFTER INSERT ON jobs BEGIN
        UPDATE change_counters SET seq = seq + 1 WHERE name = 'jobs';
    END;
    CREATE TRIGGER jobs_update_counted AFTER UPDATE ON jobs BEGIN
        UPDATE change_counters SET seq = seq + 1 WHERE name = 'jobs';
    END;
    CREATE TRIGGER jobs_delete_counted AFTER DELETE ON jobs BEGIN
        UPDATE change_counters SET seq = seq + 1 WHERE name = 'jobs';
    END;
    """,
    # 6: updates: the revision a Hub model follows, the commit (and files, kept aside) it had
    # before its last update, an update's file swaps while they happen, the Hub's last answer.
    """
    CREATE TABLE model_history (
        model_id TEXT PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
        tracked TEXT,
        previous_commit TEXT,
        previous_files TEXT,
        pending TEXT,
        hub_commit TEXT,
        checked_at REAL,
        updated_at REAL NOT NULL
    );
    """,
    # 7: chats: conversations per model and their messages (kept when the model is removed:
    # they are the user's text), and the load options remembered per model.
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        model_id TEXT NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        system TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX conversations_model ON conversations(model_id, updated_at);
    CREATE TABLE chat_messages (
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    );
    CREATE TABLE load_options (
        model_id TEXT PRIMARY KEY,
        options TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 8: each model's kind (tui.kinds: llm, vlm, lora, diffusion, ...) as read from its files.
    # The scan cache is emptied so that the next scan reads every file once more and finds
    # its kind; records until then get theirs from their stored metadata.
    """
    ALTER TABLE models ADD COLUMN kind TEXT;
    CREATE INDEX models_kind ON models(kind);
    DELETE FROM scan_cache;
    """,
    # 9: storage: models pinned against `modeldeck reclaim`, and the moves `modeldeck organize`
    # is making (recorded before the first rename, so a crash is finished at the next start).
    """
    ALTER TABLE models ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE model_moves (
        model_id TEXT PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
        moves TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    """,
]
