"""Storage by kind: new downloads land in their kind folder; `modeldeck organize` renames
installed models there atomically (crash-safe, same volume only, never over a file) and the
inventory follows."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from pathlib import Path

import pytest

from tui.catalog import Catalog
from tui.discovery import Scanner
from tui.download import JobSpec
from tui.inventory_ops import reconcile
from tui.organize import organize, plan_organize
from tui.store import CustomEntry

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes, make_service
from tests.support.checks import tree_digest
from tests.support.formats import write_lora
from tests.support.gguf import write_gguf
from tests.support.storage import organize_killed_after_rename, organize_killed_before_rename


def _ls(cli) -> dict[str, dict]:
    code, out, _ = cli("ls", "--json")
    assert code == 0
    return {m["id"]: m for m in json.loads(out)}


def _flat_models(cli) -> dict[str, Path]:
    """An LLM and a LoRA found by a scan in the flat layout; their ids by kind."""
    write_gguf(cli.models / "tiny-Q4_K_M.gguf", name="Tiny")
    write_lora(cli.models / "styles" / "ink.safetensors")
    assert cli("scan")[0] == 0
    return {m["kind"]: m["id"] for m in _ls(cli).values()}


# -- new downloads -------------------------------------------------------------------------


async def test_new_downloads_land_in_their_kind_folder(hub: FakeHub, dl_settings,
                                                       tmp_path: Path) -> None:
    lora = write_lora(tmp_path / "src" / "ink.safetensors").read_bytes()
    settings = dataclasses.replace(dl_settings, organize_by_kind=True)
    service = make_service(settings)
    try:
        service.catalog = Catalog(service.inventory)
        service.inventory.add_custom(CustomEntry(id="ink-lora", kind="hf", data={
            "repo": "acme/ink", "kind": "lora", "include": ["*"]}))
        hub.add_repo("acme/tiny", {"tiny-Q4_K_M.gguf": gguf_bytes(4000, 1)})
        hub.add_repo("acme/ink", {"ink.safetensors": lora})
        url = hub.add_file("direct.gguf", gguf_bytes(2000, 2))
        ids = [service.enqueue(JobSpec(kind="hf", repo="acme/tiny")),
               service.enqueue(JobSpec(kind="catalog", catalog_id="ink-lora")),
               service.enqueue(JobSpec(kind="url", url=url))]
        jobs = await service.run_until_complete(ids)
        assert [j.state for j in jobs] == ["done"] * 3, [j.error for j in jobs]
        models = settings.models_dir
        assert (models / "llm/acme/tiny/tiny-Q4_K_M.gguf").is_file()
        assert (models / "lora/acme/ink/ink.safetensors").is_file()
        assert (models / "llm/direct/direct.gguf").is_file()
        assert not (models / "acme").exists() and not (models / "direct").exists()
        # pulling again finds it installed in its kind folder: nothing fetched twice
        again = service.enqueue(JobSpec(kind="hf", repo="acme/tiny"))
        [job] = await service.run_until_complete([again])
        assert job.state == "done" and "already installed" in (service.note(again) or "")
    finally:
        await service.stop()
        service.db.close()


async def test_a_repo_installed_flat_stays_flat(hub: FakeHub, dl_settings) -> None:
    """Existing layouts are untouched: a repo installed before (flat) is found there."""
    hub.add_repo("acme/tiny", {"tiny-Q4_K_M.gguf": gguf_bytes(4000, 1)})
    flat = make_service(dl_settings)
    try:
        [job] = await flat.run_until_complete([flat.enqueue(JobSpec(kind="hf",
                                                                    repo="acme/tiny"))])
        assert job.state == "done"
    finally:
        await flat.stop()
        flat.db.close()
    by_kind = make_service(dataclasses.replace(dl_settings, organize_by_kind=True))
    try:
        again = by_kind.enqueue(JobSpec(kind="hf", repo="acme/tiny"))
        [job] = await by_kind.run_until_complete([again])
        assert job.state == "done" and "already installed" in (by_kind.note(again) or "")
        assert not (dl_settings.models_dir / "llm").exists()
    finally:
        await by_kind.stop()
        by_kind.db.close()


# -- organize ------------------------------------------------------------------------------


def test_dry_run_lists_the_moves_and_changes_nothing(cli) -> None:
    ids = _flat_models(cli)
    before = tree_digest(cli.models)
    db_before = _ls(cli)
    code, out, _ = cli("organize", "--dry-run")
    assert code == 0 and "dry run: nothing moved" in out
    assert ids["llm"] in out and ids["lora"] in out
    assert str(cli.models / "llm" / "tiny-Q4_K_M.gguf") in out
    assert str(cli.models / "lora" / "styles" / "ink.safetensors") in out
    assert tree_digest(cli.models) == before and _ls(cli) == db_before


def test_organize_renames_and_the_inventory_follows(cli) -> None:
    ids = _flat_models(cli)
    before = {m["id"]: m for m in _ls(cli).values()}
    inodes = {i: os.stat(before[i]["path"]).st_ino for i in ids.values()}
    code, out, err = cli("organize", "-y")
    assert code == 0, err
    assert "moved 2 models" in out
    after = _ls(cli)
    llm, lora = after[ids["llm"]], after[ids["lora"]]
    assert llm["path"] == str(cli.models / "llm" / "tiny-Q4_K_M.gguf")
    assert lora["path"] == str(cli.models / "lora" / "styles" / "ink.safetensors")
    assert llm["status"] == lora["status"] == "installed"
    # renamed, not copied: the same inodes, nothing left at the old places
    assert {i: os.stat(after[i]["path"]).st_ino for i in ids.values()} == inodes
    assert not (cli.models / "tiny-Q4_K_M.gguf").exists()
    assert not (cli.models / "styles" / "ink.safetensors").exists()
    code, out, _ = cli("info", ids["lora"])
    assert code == 0 and "lora" in out
    assert cli("scan")[0] == 0 and set(_ls(cli)) == set(ids.values())  # no second record
    code, out, _ = cli("organize", "--dry-run")
    assert code == 0 and "nothing to move" in out
    # the moved model is deleted through the safe path at its new place
    code, out, _ = cli("rm", ids["llm"], "-y")
    assert code == 0 and not (cli.models / "llm" / "tiny-Q4_K_M.gguf").exists()


def test_never_overwrites_a_file_at_the_target(cli) -> None:
    ids = _flat_models(cli)
    squatter = cli.models / "llm" / "tiny-Q4_K_M.gguf"
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"the user's own file")
    code, out, _ = cli("organize", "-y")
    assert code == 0, out
    assert f"stays  {ids['llm']}" in out and "exists already; not overwriting" in out
    assert squatter.read_bytes() == b"the user's own file"
    assert _ls(cli)[ids["llm"]]["path"] == str(cli.models / "tiny-Q4_K_M.gguf")
    assert (cli.models / "tiny-Q4_K_M.gguf").is_file()
    assert _ls(cli)[ids["lora"]]["path"].startswith(str(cli.models / "lora"))


def test_a_cross_device_move_is_refused_and_nothing_changes(services, settings) -> None:
    write_gguf(settings.models_dir / "a" / "one.gguf")
    write_gguf(settings.models_dir / "a" / "two.gguf", seed=3)
    Scanner(settings, services.inventory).scan()
    before = tree_digest(settings.models_dir)
    records = {m.id: m.path for m in services.inventory.list_models()}
    calls = []

    def exdev(src: str, dst: str) -> None:
        calls.append(src)
        if len(calls) == 2:
            raise OSError(errno.EXDEV, "Invalid cross-device link", src)
        os.rename(src, dst)

    moves = plan_organize(settings, services.inventory)
    assert len([m for m in moves if m.pairs]) == 2
    done = organize(settings, services.inventory, moves, rename=exdev)
    assert len(calls) == 2
    failed = [m for m in done if not m.done]
    assert len(failed) == 1 and "another volume" in failed[0].note
    moved = [m for m in done if m.done]
    # the refused one is exactly as it was; the first one moved whole
    assert services.inventory.require_model(failed[0].model.id).path == \
        records[failed[0].model.id]
    assert Path(records[failed[0].model.id]).is_file()
    assert services.inventory.require_model(moved[0].model.id).path.startswith(
        str(settings.models_dir / "llm"))
    with services.db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM model_moves").fetchone()[0] == 0
    assert before != tree_digest(settings.models_dir)  # (the first did move)


def test_cross_device_is_one_line_from_the_cli(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    _flat_models(cli)
    before = tree_digest(cli.models)

    def exdev(src, dst, *a, **k):
        raise OSError(errno.EXDEV, "Invalid cross-device link", src)

    monkeypatch.setattr(os, "rename", exdev)
    code, out, err = cli("organize", "-y")
    monkeypatch.undo()
    assert code == 1 and "moved 0 models" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all("another volume" in line for line in lines)
    assert "Traceback" not in err
    assert tree_digest(cli.models) == before  # not even an empty kind folder is left


def test_a_crash_between_rename_and_commit_is_finished_at_the_next_start(
        services, settings) -> None:
    g = write_gguf(settings.models_dir / "one.gguf")
    Scanner(settings, services.inventory).scan()
    [model] = services.inventory.list_models()

    organize_killed_after_rename(settings, services.inventory)
    new = settings.models_dir / "llm" / "one.gguf"
    assert new.is_file() and not g.exists()
    assert services.inventory.require_model(model.id).path == str(g)  # not committed yet
    report = reconcile(settings, services.inventory)
    assert report.finished_moves == [f"{model.id}: finished the interrupted move"]
    assert report.marked_missing == []
    after = services.inventory.require_model(model.id)
    assert after.path == str(new) and after.files[0].path == str(new)
    assert after.status == "installed"


def test_a_crash_mid_model_is_finished_forward(services, settings) -> None:
    """Two files of one model (a split GGUF): the first renamed, then the crash."""
    from tests.support.gguf import write_split_gguf

    shards = write_split_gguf(settings.models_dir / "big", "big", 2)
    Scanner(settings, services.inventory).scan()
    [model] = services.inventory.list_models()
    assert len(model.files) == 2
    organize_killed_before_rename(settings, services.inventory)
    assert sum(p.exists() for p in shards) == 1
    reconcile(settings, services.inventory)
    after = services.inventory.require_model(model.id)
    assert all(Path(f.path).is_file() for f in after.files)
    assert all(Path(f.path).is_relative_to(settings.models_dir / "llm") for f in after.files)
    assert not any(p.exists() for p in shards)


def test_loaded_and_downloading_models_stay(services, settings) -> None:
    write_gguf(settings.models_dir / "one.gguf")
    write_gguf(settings.models_dir / "two.gguf", seed=2)
    Scanner(settings, services.inventory).scan()
    one, two = sorted(services.inventory.list_models(), key=lambda m: m.path)
    moves = {m.model.id: m for m in plan_organize(settings, services.inventory,
                                                   loaded={one.id}, busy={two.id})}
    assert not moves[one.id].pairs and "loaded" in moves[one.id].note
    assert not moves[two.id].pairs and "download" in moves[two.id].note
    before = tree_digest(settings.models_dir)
    organize(settings, services.inventory, list(moves.values()))
    assert tree_digest(settings.models_dir) == before


async def test_a_hub_model_moves_whole_and_stays_updatable(hub: FakeHub, dl_settings,
                                                           tmp_path: Path) -> None:
    """owner/repo → llm/owner/repo; the folders the download made go; the moved model is
    still a Hub model ModelDeck can update, and pulling it again fetches nothing."""
    from tui.updates import model_root

    data = write_gguf(tmp_path / "src" / "tiny.gguf").read_bytes()
    hub.add_repo("acme/tiny", {"tiny-Q4_K_M.gguf": data})
    service = make_service(dl_settings)
    try:
        spec = JobSpec(kind="hf", repo="acme/tiny", include=["*"])
        [job] = await service.run_until_complete([service.enqueue(spec)])
        assert job.state == "done"
        inventory = service.inventory
        moves = plan_organize(dl_settings, inventory)
        assert [len(m.pairs) for m in moves] == [1]
        organize(dl_settings, inventory, moves)
        model = inventory.require_model(job.model_id)
        root = dl_settings.models_dir / "llm" / "acme" / "tiny"
        assert model.path == str(root / "tiny-Q4_K_M.gguf")
        assert model_root(dl_settings, model) == root
        assert not (dl_settings.models_dir / "acme").exists()  # ModelDeck's, empty: gone
        again = service.enqueue(JobSpec(kind="hf", repo="acme/tiny", include=["*"]))
        [job2] = await service.run_until_complete([again])
        assert job2.state == "done" and "already installed" in (service.note(again) or "")
    finally:
        await service.stop()
        service.db.close()


def test_a_recovery_that_cannot_rename_puts_the_files_back(services, settings) -> None:
    shards = [write_gguf(settings.models_dir / "m" / f"{n}.gguf", seed=i)
              for i, n in enumerate(("a", "b"))]
    # one model of two files: a GGUF and its folder's second file is another model; use one
    Scanner(settings, services.inventory).scan()
    models = services.inventory.list_models()
    moves = plan_organize(settings, services.inventory)
    organize_killed_before_rename(settings, services.inventory, moves=moves)
    # the first model moved and committed; the second's record is there, nothing renamed
    with services.db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM model_moves").fetchone()[0] == 1

    def exdev(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link", src)

    from tui.organize import finish_moves

    lines = finish_moves(settings, services.inventory, rename=exdev)
    assert len(lines) == 1 and "undone" in lines[0] and "another volume" in lines[0]
    with services.db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM model_moves").fetchone()[0] == 0
    paths = {m.id: services.inventory.require_model(m.id).path for m in models}
    assert all(Path(p).is_file() for p in paths.values())
    assert sorted(Path(p).name for p in paths.values()) == ["a.gguf", "b.gguf"]
    assert sum(Path(p) in shards for p in paths.values()) == 1


def test_a_folder_model_moves_its_recorded_files_and_says_what_stays(cli) -> None:
    from tests.support.safetensors import write_safetensors_folder

    folder = write_safetensors_folder(cli.models / "acme" / "st")
    (folder / "NOTES.md").write_text("the user's notes")
    assert cli("scan")[0] == 0
    [model] = _ls(cli).values()
    code, out, _ = cli("organize", "--dry-run")
    assert code == 0 and "leaves 1 file(s) ModelDeck did not record" in out
    assert str(folder / "NOTES.md") in out
    code, out, err = cli("organize", "-y")
    assert code == 0, err
    moved = cli.models / "llm" / "acme" / "st"
    assert _ls(cli)[model["id"]]["path"] == str(moved)
    assert (moved / "model.safetensors").is_file() and (moved / "config.json").is_file()
    assert (folder / "NOTES.md").read_text() == "the user's notes"  # not ModelDeck's: stays


def test_a_recovery_never_overwrites_a_file_that_appeared(services, settings) -> None:
    """Crash after the first of two renames; then a file of the user's appears where the
    second should go: the move is undone instead, and that file is left alone."""
    from tests.support.gguf import write_split_gguf

    shards = write_split_gguf(settings.models_dir / "big", "big", 2)
    Scanner(settings, services.inventory).scan()
    [model] = services.inventory.list_models()
    organize_killed_before_rename(settings, services.inventory)
    second = settings.models_dir / "llm" / "big" / shards[1].name
    second.write_bytes(b"the user's file")
    report = reconcile(settings, services.inventory)
    assert len(report.finished_moves) == 1 and "undone" in report.finished_moves[0]
    assert "not overwriting" in report.finished_moves[0]
    assert second.read_bytes() == b"the user's file"
    assert all(p.is_file() for p in shards)
    after = services.inventory.require_model(model.id)
    assert sorted(f.path for f in after.files) == sorted(str(p) for p in shards)
    with services.db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM model_moves").fetchone()[0] == 0
