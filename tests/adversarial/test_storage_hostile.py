"""Hostile layouts for `organize` and `reclaim`: a recorded file swapped for a symlink or
another file, a kind folder that leads outside, a garbled move record, names with control
characters. Each is left alone, said in one line, and nothing of the user's is touched."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tui.cli import main

from tests.support.checks import assert_no_control_chars, tree_digest
from tests.support.gguf import write_gguf


@pytest.fixture
def deck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    d = SimpleNamespace(tmp=tmp_path, models=tmp_path / "models", state=tmp_path / "state",
                        outside=tmp_path / "outside")
    d.models.mkdir()
    d.outside.mkdir()
    monkeypatch.setenv("MODELDECK_MODELS_DIR", str(d.models))
    monkeypatch.setenv("MODELDECK_STATE_DIR", str(d.state))
    monkeypatch.setenv("MODELDECK_SCAN_HF_CACHE", "false")

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    def models() -> dict[str, dict]:
        code, out, _ = cli("ls", "--json")
        assert code == 0
        return {m["id"]: m for m in json.loads(out)}

    d.cli, d.models_json = cli, models
    return d


def test_a_recorded_file_now_a_symlink_is_not_moved(deck) -> None:
    g = write_gguf(deck.models / "m.gguf")
    assert deck.cli("scan")[0] == 0
    [model] = deck.models_json().values()
    mine = write_gguf(deck.outside / "mine.gguf")
    g.unlink()
    g.symlink_to(mine)
    before = tree_digest(deck.tmp, skip=(deck.state,))
    code, out, _ = deck.cli("organize", "-y")
    assert code == 0 and f"stays  {model['id']}" in out
    assert "not the file ModelDeck recorded" in out and "nothing to move" in out
    assert tree_digest(deck.tmp, skip=(deck.state,)) == before


def test_a_kind_folder_leading_outside_is_not_used(deck) -> None:
    write_gguf(deck.models / "m.gguf")
    (deck.models / "llm").symlink_to(deck.outside, target_is_directory=True)
    assert deck.cli("scan")[0] == 0
    before = tree_digest(deck.tmp, skip=(deck.state,))
    code, out, _ = deck.cli("organize", "-y")
    assert code == 0 and "leads out of the models dir" in out
    assert list(deck.outside.iterdir()) == []
    assert tree_digest(deck.tmp, skip=(deck.state,)) == before


def test_a_garbled_move_record_is_dropped_with_one_line(deck) -> None:
    write_gguf(deck.models / "m.gguf")
    assert deck.cli("scan")[0] == 0
    [model] = deck.models_json().values()
    conn = sqlite3.connect(deck.state / "modeldeck.db")
    with conn:
        conn.execute("INSERT INTO model_moves (model_id, moves, created_at) VALUES (?, ?, ?)",
                     (model["id"], '{"pairs": [["/etc/passwd"', time.time()))
    conn.close()
    before = tree_digest(deck.tmp, skip=(deck.state,))
    code, _, err = deck.cli("organize", "--dry-run")
    assert code == 0 and err.count("\n") == 1 and "unreadable move record" in err
    assert tree_digest(deck.tmp, skip=(deck.state,)) == before
    assert deck.models_json()[model["id"]]["path"] == str(deck.models / "m.gguf")


def test_a_move_record_naming_files_of_the_user_is_not_carried_out(deck) -> None:
    """A record that is well-formed but whose sources are not the model's files (edited
    database): only files the model records are ever renamed."""
    write_gguf(deck.models / "m.gguf")
    assert deck.cli("scan")[0] == 0
    [model] = deck.models_json().values()
    mine = write_gguf(deck.outside / "mine.gguf")
    record = {"pairs": [[str(mine), str(deck.models / "llm" / "mine.gguf")]], "path": None}
    conn = sqlite3.connect(deck.state / "modeldeck.db")
    with conn:
        conn.execute("INSERT INTO model_moves (model_id, moves, created_at) VALUES (?, ?, ?)",
                     (model["id"], json.dumps(record), time.time()))
    conn.close()
    before = tree_digest(deck.tmp, skip=(deck.state,))
    code, _, err = deck.cli("ls")
    assert code == 0 and "not one of its files" in err and len(err.strip().splitlines()) == 1
    assert mine.is_file() and tree_digest(deck.tmp, skip=(deck.state,)) == before


def test_a_swapped_file_is_never_proposed_by_reclaim(deck) -> None:
    g = write_gguf(deck.models / "m.gguf", seed=1)
    assert deck.cli("scan")[0] == 0
    data = write_gguf(deck.tmp / "other.gguf", seed=2).read_bytes()
    other = g.with_name("m.new")
    other.write_bytes(data)  # same size, another file (inode, mtime): not the one recorded
    os.utime(other, ns=(1, 1))
    os.replace(other, g)
    before = tree_digest(deck.tmp, skip=(deck.state,))
    code, out, _ = deck.cli("reclaim", "--free", "1", "-y")
    assert code == 1 and "nothing to reclaim" in out
    assert tree_digest(deck.tmp, skip=(deck.state,)) == before


def test_names_with_control_characters_are_shown_escaped(deck) -> None:
    write_gguf(deck.models / "evil\x1b[31m\x07.gguf")
    assert deck.cli("scan")[0] == 0
    code, out, err = deck.cli("organize", "--dry-run")
    assert code == 0
    assert_no_control_chars(out + err)
    code, out, err = deck.cli("reclaim", "--free", "1", "--dry-run")
    assert code == 0
    assert_no_control_chars(out + err)
    code, out, err = deck.cli("organize", "-y")
    assert code == 0 and "moved 1 model" in out
    assert_no_control_chars(out + err)
    assert [p.name for p in (deck.models / "llm").iterdir()] == ["evil\x1b[31m\x07.gguf"]
    assert os.path.isfile(next(iter(deck.models_json().values()))["path"])
