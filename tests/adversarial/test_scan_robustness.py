"""`modeldeck scan` over hostile trees: one bad file is one line, never an aborted scan.

Good and hostile models share one models folder; the scan (a real ``python -m tui`` child)
exits 0, reports each bad file on one line, registers every good one, and changes nothing
outside ModelDeck's own state. FIFOs and device nodes are never opened, also where a
registered model used to be: the scan returns (a child with a timeout, so a block fails the
test) and the model is marked missing.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from tui.cli import main
from tui.discovery import Scanner, ScanReport
from tui.metadata.types import ModelMetadata
from tui.store import ModelFile, ModelRecord

from tests.adversarial.test_hostile_files import (
    hostile_config,
    patch_header,
    write_gguf_with,
)
from tests.support.checks import assert_one_line_error, run_modeldeck, tree_digest
from tests.support.gguf import T_STRING, raw_gguf, raw_kv, raw_string, raw_tensor_info, write_gguf
from tests.support.safetensors import write_safetensors_folder

U64_MAX = 2**64 - 1


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "models").mkdir()
    (tmp_path / "state").mkdir()
    return {
        "MODELDECK_MODELS_DIR": str(tmp_path / "models"),
        "MODELDECK_STATE_DIR": str(tmp_path / "state"),
        "MODELDECK_SCAN_HF_CACHE": "0",
    }


def scan(env: dict[str, str], *args: str):
    """``modeldeck scan`` in a child; it must return (a block fails the test), exit 0 and
    print no traceback."""
    proc = run_modeldeck("scan", *args, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stderr.strip(), proc.stderr
    return proc


def cli_json(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys, *args: str):
    """An in-process ``modeldeck ARGS --json`` (after the child proved the scan clean)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = main([*args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_bad_files_are_reported_one_line_each_and_good_ones_registered(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    models = tmp_path / "models"
    good = {
        "good.gguf": write_gguf(models / "good.gguf", name="Good"),
        "st-good": write_safetensors_folder(models / "st-good"),
    }
    # Tolerated: registered, the out-of-range values unknown (and noted).
    tolerated = {
        "u64.gguf": write_gguf_with(
            models / "u64.gguf",
            lambda w: (w.add_uint64("llama.context_length", U64_MAX),
                       w.add_uint64("llama.block_count", U64_MAX)),
        ),
        "st-config": hostile_config(write_safetensors_folder(models / "st-config")),
    }
    # Refused: reported on one line each, not registered.
    arch = [raw_kv("general.architecture", T_STRING, raw_string("llama"))]
    # Keyed by how each one shows in the report.
    bad = {
        "dims.gguf": models / "dims.gguf",
        "sum.gguf": models / "sum.gguf",
        "st-bad": write_safetensors_folder(models / "st-bad"),
        "latin-\\xe9.gguf": models / os.fsdecode(b"latin-\xe9.gguf"),
    }
    bad["dims.gguf"].write_bytes(raw_gguf(arch, [raw_tensor_info("t", [2**32, 2**32, 4], 0)]))
    bad["sum.gguf"].write_bytes(
        raw_gguf(arch, [raw_tensor_info(f"t{i}", [2**62], 99) for i in range(3)], 64)
    )
    patch_header(bad["st-bad"] / "model.safetensors",
                 lambda h: h["lm_head.weight"].update(shape=[-1, 5]))
    shutil.copyfile(good["good.gguf"], bad["latin-\\xe9.gguf"])  # a good file, name not UTF-8

    before = tree_digest(tmp_path, skip=(tmp_path / "state",))
    out = scan(env).stdout
    for shown in bad:  # the undecodable byte is shown as \xe9, not printed raw
        lines = [line for line in out.splitlines() if "skipped" in line and f"/{shown}:" in line]
        assert len(lines) == 1, (shown, out)
    assert "ignored context_length 18446744073709551615" in out

    listed = {m["path"]: m for m in cli_json(env, monkeypatch, capsys, "ls")}
    assert set(listed) == {str(p) for p in [*good.values(), *tolerated.values()]}
    assert all(m["status"] == "installed" for m in listed.values())
    u64 = listed[str(tolerated["u64.gguf"])]
    assert u64["context_length"] is None and u64["metadata"]["n_layers"] is None
    st = listed[str(tolerated["st-config"])]
    assert st["context_length"] is None and st["name"] == "name?"
    for model in listed.values():
        info = cli_json(env, monkeypatch, capsys, "info", model["id"])
        assert info["path"] == model["path"]

    # A rescan reads nothing again and reports the same bad files from the cache.
    again = scan(env, "--json").stdout
    report = json.loads(again)
    assert report["files_read"] == 0
    assert {Path(e["path"]).name for e in report["errors"]} == set(bad)
    assert tree_digest(tmp_path, skip=(tmp_path / "state",)) == before


def test_scan_cache_left_by_an_older_version_cannot_overflow(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # Older versions cached a header's metadata before registering it (and then crashed on
    # the overflow): a cached context_length of 2**64-1 must not abort today's scan.
    models = tmp_path / "models"
    good = write_gguf(models / "good.gguf")
    cached = write_gguf(models / "cached.gguf", seed=1)
    scan(env)
    db = tmp_path / "state" / "modeldeck.db"
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM models WHERE path = ?", (str(cached),))
        row = conn.execute(
            "SELECT metadata FROM scan_cache WHERE path = ?", (str(cached),)
        ).fetchone()
        meta = json.loads(row[0])
        meta["context_length"] = U64_MAX
        meta["parameters"] = -(2**70)
        conn.execute(
            "UPDATE scan_cache SET metadata = ? WHERE path = ?", (json.dumps(meta), str(cached))
        )
    conn.close()
    scan(env)
    listed = {m["path"]: m for m in cli_json(env, monkeypatch, capsys, "ls")}
    assert set(listed) == {str(good), str(cached)}
    assert listed[str(cached)]["context_length"] is None
    assert listed[str(cached)]["parameters"] is None


def test_a_record_sqlite_refuses_is_reported_and_the_others_kept(services, settings) -> None:
    # The last line of defence: whatever a reader missed, one record SQLite cannot take is
    # reported on its own and the batch beside it is still written.
    def record(name: str) -> ModelRecord:
        path = str(settings.models_dir / f"{name[:4]}.gguf")
        return ModelRecord(id=name[:4], name=name, format="gguf", path=path, source="scan",
                           metadata=ModelMetadata(format="gguf"),
                           files=[ModelFile(path, 1)])

    scanner = Scanner(settings, services.inventory)
    report = ScanReport()
    failed = scanner._register([record("good"), record("bad-\ud800"), record("fine")], report)
    assert failed == {"bad-"}
    assert services.inventory.model_ids() == {"good", "fine"}
    assert len(report.errors) == 1 and report.errors[0][1].startswith("cannot register: ")


def test_the_inventory_stores_out_of_range_ints_as_null_with_a_note(services, settings) -> None:
    # Behind the readers' bounds: whatever builds a record, SQLite never sees an int it cannot
    # hold (OverflowError) and the metadata JSON never holds NaN or a bigint.
    path = str(settings.models_dir / "m.gguf")
    meta = ModelMetadata(format="gguf", n_layers=2**64, parameters=2**70,
                         extra={"rope_freq_base": float("nan"), "big": [-(2**80)]})
    record = ModelRecord(id="m", name="m", format="gguf", path=path, source="scan",
                         parameters=2**70, context_length=-(2**64), metadata=meta,
                         files=[ModelFile(path, 1)])
    services.inventory.upsert_model(record)
    stored = services.inventory.require_model("m")
    assert stored.parameters is None and stored.context_length is None
    assert stored.metadata.n_layers is None and stored.metadata.parameters is None
    assert stored.metadata.extra["rope_freq_base"] is None
    assert stored.metadata.extra["big"] == [None]
    notes = stored.metadata.extra["ignored_values"]
    assert {"parameters", "context_length", "n_layers"} <= set(notes)
    assert meta.n_layers == 2**64  # the caller's record is left as it was


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_the_models_dir_is_never_opened(tmp_path: Path, env: dict[str, str]) -> None:
    models = tmp_path / "models"
    write_gguf(models / "good.gguf")
    os.mkfifo(models / "fifo-Q4_K_M.gguf")
    (models / "st").mkdir()
    os.mkfifo(models / "st" / "model.safetensors")
    before = tree_digest(tmp_path, skip=(tmp_path / "state",))
    report = json.loads(scan(env, "--json").stdout)
    assert report["added"] == ["good"] and report["errors"] == []
    assert tree_digest(tmp_path, skip=(tmp_path / "state",)) == before


def _make_special(path: Path, kind: str) -> None:
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("this platform has no FIFOs (os.mkfifo)")
        os.mkfifo(path)
        return
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root (os.mknod of a char device)")
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # what /dev/null is
    except PermissionError as exc:
        pytest.skip(f"os.mknod refused here even as root: {exc}")


@pytest.mark.parametrize("kind", ["fifo", "char device"])
def test_a_special_file_where_a_model_was_is_marked_missing_not_read(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys, kind: str
) -> None:
    models = tmp_path / "models"
    first = write_gguf(models / "first.gguf")
    shutil.copyfile(first, models / "copy.gguf")  # same size: the duplicate check samples both
    st = write_safetensors_folder(models / "st")
    scan(env)
    first.unlink()
    _make_special(first, kind)
    shutil.rmtree(st)
    _make_special(st, kind)  # a folder model whose folder became a special file
    before = tree_digest(tmp_path, skip=(tmp_path / "state",))

    report = json.loads(scan(env, "--verify-duplicates", "--json").stdout)
    assert sorted(report["missing"]) == ["first", "st"]
    assert report["duplicates"] == []
    status = {m["id"]: m["status"] for m in cli_json(env, monkeypatch, capsys, "ls")}
    assert status == {"first": "missing", "copy": "installed", "st": "missing"}
    scan(env)  # reconcile at the next start keeps them missing
    status = {m["id"]: m["status"] for m in cli_json(env, monkeypatch, capsys, "ls")}
    assert status == {"first": "missing", "copy": "installed", "st": "missing"}
    assert tree_digest(tmp_path, skip=(tmp_path / "state",)) == before


@pytest.mark.parametrize("kind", ["fifo", "char device"])
def test_info_on_a_special_file_is_one_line(
    tmp_path: Path, env: dict[str, str], kind: str
) -> None:
    path = tmp_path / "models" / "special.gguf"
    _make_special(path, kind)
    proc = run_modeldeck("info", str(path), env=env, timeout=60)
    assert_one_line_error(proc, str(path), "not a regular file")


def test_arguments_that_are_not_utf8_are_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    """A file name or id with undecodable bytes (a surrogate in Python) never reaches SQLite."""
    models = Path(env["MODELDECK_MODELS_DIR"])
    good = write_gguf(models / "ok.gguf")
    bad = os.fsdecode(os.fsencode(str(models)) + b"/bad\xff\x1b[2J.gguf")
    os.rename(good, bad)
    before = tree_digest(models)
    proc = run_modeldeck("info", bad, env=env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "\\x1b[2J" in proc.stdout and "\x1b" not in proc.stdout
    for args in (("rm", "x\udcff", "-y"), ("info", "x\udcff")):
        assert_one_line_error(run_modeldeck(*args, env=env), "x\\udcff")
    assert tree_digest(models) == before
