"""Deletion can only touch what ModelDeck owns: the real CLI (and the dashboard's dialog) on
real trees, each checked with a tree digest that nothing but the model's own recorded files
changed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tui import formatting as fmt
from tui.cli import main
from tui.store import Database, Inventory

from tests.fakehub import FakeHub
from tests.support.checks import REPO, assert_no_control_chars, tree_digest
from tests.support.gguf import write_gguf
from tests.support.safetensors import write_safetensors_folder

MIB = 1 << 20


@pytest.fixture
def deck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """The real CLI in-process on a models dir, an extra dir and a state dir under tmp_path."""
    d = SimpleNamespace(
        tmp=tmp_path, models=tmp_path / "models", extra=tmp_path / "extra",
        state=tmp_path / "state",
    )
    d.models.mkdir()
    d.extra.mkdir()
    monkeypatch.setenv("MODELDECK_MODELS_DIR", str(d.models))
    monkeypatch.setenv("MODELDECK_EXTRA_DIRS", str(d.extra))
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

    def digest() -> dict[str, tuple]:
        return tree_digest(tmp_path, skip=(d.state,))

    def rm(model_id: str) -> tuple[int, str, dict]:
        """``rm -y`` (text) and the digest after it."""
        code, out, err = cli("rm", model_id, "-y")
        assert err == "", err
        return code, out, digest()

    d.cli, d.models_json, d.digest, d.rm = cli, models, digest, rm
    return d


def _rel(deck: SimpleNamespace, paths) -> set[str]:
    return {str(Path(p).relative_to(deck.tmp)) for p in paths}


def _only_removed(before: dict, after: dict, removed: set[str]) -> None:
    """``after`` is ``before`` without exactly ``removed``."""
    assert set(before) - set(after) == removed
    assert {k: v for k, v in before.items() if k not in removed} == after


def _by_path(models: dict[str, dict]) -> dict[str, dict]:
    return {m["path"]: m for m in models.values()}


# -- a model at the top of a managed root ----------------------------------------------------


@pytest.mark.parametrize("where", ["models", "extra"])
def test_model_at_top_of_a_root_is_registered_by_files_and_rm_keeps_the_root(
    deck, where: str
) -> None:
    root: Path = getattr(deck, where)
    write_safetensors_folder(root)  # config.json, tokenizer_config.json, model.safetensors
    write_gguf(root / "other-Q4_K_M.gguf", seed=3)  # another model beside it
    (root / "notes.txt").write_text("my notes\n")
    (root / "settings.json").write_text("{}")
    (root / ".git" / "objects").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".hidden-stuff").mkdir()
    (root / ".hidden-stuff" / "keep.bin").write_bytes(b"k" * 1000)

    assert deck.cli("scan")[0] == 0
    models = deck.models_json()
    weights = str(root / "model.safetensors")
    (st,) = [m for m in models.values() if weights in {f["path"] for f in m["files"]}]
    own = {str(root / n) for n in ("model.safetensors", "config.json", "tokenizer_config.json")}

    before = deck.digest()
    code, out, after = deck.rm(st["id"])
    assert code == 0 and "freed" in out
    _only_removed(before, after, _rel(deck, own))  # its files; the root and the rest stay
    assert root.is_dir() and (root / "other-Q4_K_M.gguf").is_file()
    assert set(deck.models_json()) == set(models) - {st["id"]}
    # Registered by its files, never with the root as its folder.
    assert st["path"] == weights and {f["path"] for f in st["files"]} == own


def test_a_model_once_registered_as_the_root_is_moved_to_its_files_by_a_scan(deck) -> None:
    write_safetensors_folder(deck.models)
    deck.cli("scan")
    (model,) = deck.models_json().values()
    inventory = Inventory(Database(deck.state / "modeldeck.db"))
    legacy = inventory.require_model(model["id"])
    legacy.path = str(deck.models)  # as older versions registered it
    inventory.upsert_model(legacy)
    inventory.db.close()
    deck.cli("scan")
    assert {m["id"]: m["path"] for m in deck.models_json().values()} == {
        model["id"]: str(deck.models / "model.safetensors")}


# -- a model folder with a hidden cache ------------------------------------------------------


def test_hidden_cache_in_a_model_folder_stays_and_freed_counts_only_deleted_files(deck) -> None:
    folder = write_safetensors_folder(deck.models / "acme" / "st")
    cache = folder / ".cache" / "huggingface"
    cache.mkdir(parents=True)
    big = cache / "download.bin"
    with open(big, "wb") as f:
        f.truncate(80 * MIB)  # sparse: 80 MB of the user's data, cheap to make
    deck.cli("scan")
    (st,) = deck.models_json().values()
    recorded = {f["path"]: f["size"] for f in st["files"]}

    before = deck.digest()
    code, out, _ = deck.cli("rm", st["id"], "-y", "--json")
    assert code == 0
    _only_removed(before, deck.digest(), _rel(deck, recorded))
    assert big.stat().st_size == 80 * MIB and folder.is_dir()
    result = json.loads(out)
    assert result["freed_bytes"] == sum(recorded.values())
    assert sorted(result["deleted"]) == sorted(recorded) and result["refused"] == []


# -- what now sits where a recorded file was -------------------------------------------------


def _scan_three(deck) -> tuple[list[Path], dict[str, dict]]:
    paths = [write_gguf(deck.models / "m" / f"{n}.gguf", seed=i) for i, n in enumerate("abc")]
    deck.cli("scan")
    return paths, _by_path(deck.models_json())


def _refusal(out: str, path: Path) -> str:
    """The one line of ``out`` that says why ``path`` was not deleted."""
    lines = [line for line in out.splitlines() if "not deleted" in line and str(path) in line]
    assert len(lines) == 1, out
    return lines[0]


def test_folder_fifo_and_symlink_at_a_recorded_path_are_not_deleted(deck) -> None:
    (a, b, c), models = _scan_three(deck)
    a.unlink()
    a.mkdir()  # the user's folder, with files, where a.gguf was
    (a / "thesis.tex").write_text("years of work")
    b.unlink()
    os.mkfifo(b)
    elsewhere = write_gguf(deck.tmp / "elsewhere" / "real.gguf", seed=9)
    c.unlink()
    c.symlink_to(elsewhere)

    for path, why in ((a, "is now a folder"), (b, "is now a FIFO"), (c, "is now a symlink")):
        model = models[str(path)]
        before = deck.digest()
        code, out, after = deck.rm(model["id"])
        assert code == 0
        assert after == before  # nothing touched: not the path, not what it points at
        assert why in _refusal(out, path)  # one line says why, and only one
        assert model["id"] not in deck.models_json()  # the row goes, the user was told


def test_device_node_at_a_recorded_path_is_not_deleted(deck) -> None:
    (a, _b, _c), models = _scan_three(deck)
    a.unlink()
    try:
        os.mknod(a, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot create a character device here ({exc.strerror}); "
                    "needs root with CAP_MKNOD")
    before = deck.digest()
    code, out, after = deck.rm(models[str(a)]["id"])
    assert code == 0 and after == before
    assert "character device" in _refusal(out, a)


def test_a_different_file_now_at_a_downloaded_path_is_not_deleted(deck, hub: FakeHub) -> None:
    src = write_gguf(deck.tmp / "src" / "m-Q4_K_M.gguf")
    hub.add_repo("acme/dl", {"m-Q4_K_M.gguf": src.read_bytes()})
    assert deck.cli("pull", "acme/dl:Q4_K_M", "--quiet")[0] == 0
    (model,) = deck.models_json().values()
    dest = Path(model["path"])
    replacement = dest.with_name("mine.tmp")
    replacement.write_bytes(src.read_bytes()[::-1])  # same size, other bytes, other inode
    os.replace(replacement, dest)
    before = deck.digest()
    code, out, after = deck.rm(model["id"])
    assert code == 0 and after == before
    assert "changed since ModelDeck recorded it" in _refusal(out, dest)


def test_folders_a_download_made_go_only_when_empty_and_never_the_models_dir(
    deck, hub: FakeHub
) -> None:
    src = write_gguf(deck.tmp / "src" / "m-Q4_K_M.gguf").read_bytes()
    quants = ("Q4_K_M", "Q8_0", "Q5_K_M")
    hub.add_repo("acme/dl", {f"m-{q}.gguf": src for q in quants})
    for q in quants:
        assert deck.cli("pull", f"acme/dl:{q}", "--quiet")[0] == 0
    by_path = _by_path(deck.models_json())
    dl = deck.models / "acme" / "dl"
    ids = {q: by_path[str(dl / f"m-{q}.gguf")]["id"] for q in quants}

    code, out, _ = deck.rm(ids["Q4_K_M"])
    assert code == 0 and dl.is_dir() and "rmdir" not in out  # it still holds two models
    (dl / "README-mine.md").write_text("mine")  # the user puts a file in ModelDeck's folder
    before = deck.digest()
    code, out, after = deck.rm(ids["Q8_0"])
    assert code == 0 and "rmdir" not in out
    _only_removed(before, after, {"models/acme/dl/m-Q8_0.gguf"})  # the folder stays for it
    (dl / "README-mine.md").unlink()
    code, out, _ = deck.rm(ids["Q5_K_M"])
    assert code == 0 and out.count("rmdir") == 2  # acme/dl, then acme: both emptied
    assert not (deck.models / "acme").exists() and deck.models.is_dir()


def test_hard_linked_file_is_deleted_but_not_counted_as_freed(deck) -> None:
    g = write_gguf(deck.models / "h" / "h.gguf")
    backup = deck.tmp / "backup" / "h.gguf"
    backup.parent.mkdir()
    os.link(g, backup)
    deck.cli("scan")
    (model,) = deck.models_json().values()
    before = deck.digest()
    code, out, _ = deck.cli("rm", model["id"], "-y", "--json")
    assert code == 0 and json.loads(out)["freed_bytes"] == 0
    _only_removed(before, deck.digest(), {"models/h/h.gguf"})
    assert backup.read_bytes()  # the data lives on under its other name


# -- rm shows what it will delete before it asks ---------------------------------------------


def test_rm_lists_files_and_bytes_before_asking_and_no_changes_nothing(deck) -> None:
    folder = write_safetensors_folder(deck.models / "acme" / "st", shards=2, shapes={
        "a.weight": (64, 64), "b.weight": (64, 32)})
    deck.cli("scan")
    (model,) = deck.models_json().values()
    before = deck.digest()
    master, slave = os.openpty()
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, "-m", "tui", "rm", model["id"]], stdin=slave,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                text=True)
        os.close(slave)
        os.write(master, b"n\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 1 and err == "" and "Nothing deleted." in out
    listing, _, _ = out.partition("Delete? [y/N]")
    for f in model["files"]:
        line = next(x for x in listing.splitlines() if x.endswith(f["path"]))
        assert fmt.size(f["size"]) in line  # its size is on its line
    assert f"{len(model['files'])} files" in listing
    assert_no_control_chars(out)
    assert deck.digest() == before and folder.is_dir()
    assert model["id"] in deck.models_json()


def test_names_with_control_characters_are_listed_escaped(deck) -> None:
    odd = write_gguf(deck.models / "odd\x1b[2Jname\x07.gguf")
    deck.cli("scan")
    (model,) = deck.models_json().values()
    code, out, _ = deck.rm(model["id"])
    assert code == 0 and not odd.exists()
    assert_no_control_chars(out)
    assert "odd\\x1b[2Jname\\x07.gguf" in out


# -- reconcile finishes a `deleting` row under the same rules --------------------------------


def test_reconcile_of_a_deleting_row_obeys_the_same_rules(deck) -> None:
    folder = write_safetensors_folder(deck.models / "acme" / "st")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "blob").write_bytes(b"x" * 4096)
    deck.cli("scan")
    (model,) = deck.models_json().values()
    cfg = folder / "config.json"
    cfg.unlink()
    cfg.mkdir()  # a folder of the user's where a recorded file was
    (cfg / "keep.txt").write_text("keep")
    inventory = Inventory(Database(deck.state / "modeldeck.db"))
    inventory.set_status(model["id"], "deleting")  # ... and the process died here
    inventory.db.close()

    before = deck.digest()
    code, out, err = deck.cli("ls", "--json")  # `ls` finishes the delete first
    assert code == 0 and json.loads(out) == []
    weights = {f["path"] for f in model["files"] if f["path"] != str(cfg)}
    _only_removed(before, deck.digest(), _rel(deck, weights))
    assert (cfg / "keep.txt").read_text() == "keep" and folder.is_dir()
    (line,) = err.splitlines()  # one line on stderr says what was left alone, and why
    assert str(cfg) in line and "is now a folder" in line


# -- the dashboard's delete dialog lists the same files --------------------------------------


async def test_dashboard_delete_dialog_lists_the_plan(tmp_path: Path) -> None:
    from textual.widgets import Static

    from tui.app.screens import ConfirmScreen
    from tui.discovery import Scanner

    from tests.support.app import make_app, make_services, no_gpu_sampler, wait_for, wait_ready

    services = make_services(tmp_path)
    folder = write_safetensors_folder(services.settings.models_dir / "acme" / "st", shards=3,
                                      shapes={"a.w": (8, 8), "b.w": (8, 4), "c.w": (4,)})
    Scanner(services.settings, services.inventory).scan()
    (model,) = services.inventory.list_models()
    assert len(model.files) == 5
    app = make_app(services, sampler=no_gpu_sampler())
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_ready(app, pilot)
            table = app.model_table
            row = next(r for r in table.all_rows.values() if r.model_id == model.id)
            table.focus()
            table.move_cursor(row=table.get_row_index(row.key))
            await pilot.pause()
            await pilot.press("d")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
            screen = app.screen
            text = "\n".join(str(w.render()) for w in screen.query(Static))
            for f in model.files:  # every file, with its size, on one line of the dialog
                assert any(line.endswith(f.path) and fmt.size(f.size) in line
                           for line in text.splitlines()), f.path
            from tui.inventory_ops import describe, plan_removal

            # ... the very lines `modeldeck rm` prints, from the same plan.
            assert screen.details == describe(
                plan_removal(services.settings, services.inventory, model.id))
            await pilot.press("n")
            await pilot.pause()
    finally:
        services.close()
    assert sorted(p.name for p in folder.iterdir()) == sorted(Path(f.path).name
                                                             for f in model.files)


# -- the Hugging Face cache stays consistent -------------------------------------------------


def _cache_is_consistent(cache: Path) -> None:
    """No warnings from huggingface_hub, and every ref names a snapshot that exists."""
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(cache)
    assert info.warnings == []
    for repo in cache.glob("models--*"):
        for ref in (repo / "refs").rglob("*"):
            if ref.is_file():
                assert (repo / "snapshots" / ref.read_text()).is_dir(), ref


@pytest.fixture
def hf_cache(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The Hugging Face cache ModelDeck scans, filled by huggingface_hub from the fake hub."""
    from huggingface_hub import constants

    from tui.discovery import hf_cache_dir

    # huggingface_hub builds its URLs from this import-time template: point it at the fake hub.
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setenv("MODELDECK_SCAN_HF_CACHE", "true")
    return hf_cache_dir()


def test_hf_cache_stays_consistent_after_every_delete(
    deck, hub: FakeHub, hf_cache: Path
) -> None:
    from huggingface_hub import hf_hub_download

    cache = hf_cache
    src = deck.tmp / "src"
    data = {n: write_gguf(src / n, seed=i).read_bytes()
            for i, n in enumerate(("shared-Q4_K_M.gguf", "a-Q8_0.gguf", "b-Q5_K_M.gguf"))}
    c1, c2 = "1" * 40, "2" * 40
    # Two revisions sharing one blob, two GGUFs in each; refs/main names the first one.
    for commit, rev, names in ((c1, "main", ("shared-Q4_K_M.gguf", "a-Q8_0.gguf")),
                               (c2, c2, ("shared-Q4_K_M.gguf", "b-Q5_K_M.gguf"))):
        hub.add_repo("acme/two", {n: data[n] for n in names}, commit=commit)
        for n in names:
            hf_hub_download("acme/two", n, revision=rev, cache_dir=cache)
    assert (cache / "models--acme--two" / "refs" / "main").read_text() == c1
    # A safetensors repo whose files sit at the top of its snapshot.
    st = write_safetensors_folder(src / "st")
    st_names = ("model.safetensors", "config.json", "tokenizer_config.json")
    hub.add_repo("acme/st", {n: (st / n).read_bytes() for n in st_names}, commit="3" * 40)
    for n in st_names:
        hf_hub_download("acme/st", n, cache_dir=cache)
    _cache_is_consistent(cache)

    assert deck.cli("scan")[0] == 0
    by_path = _by_path(deck.models_json())
    two = cache / "models--acme--two"

    def model(commit: str, name: str, repo: Path = two) -> dict:
        return by_path[str(repo / "snapshots" / commit / name)]

    st_model = by_path[str(cache / "models--acme--st" / "snapshots" / ("3" * 40))]
    # The GGUF cached in both revisions is one model (main: the revision refs/main names)
    # whose files are both revisions' links to the one blob.
    shared = model(c1, "shared-Q4_K_M.gguf")
    assert str(two / "snapshots" / c2 / "shared-Q4_K_M.gguf") not in by_path
    assert [r["refs"] for r in shared["metadata"]["extra"]["revisions"]] == [["main"], []]
    steps = [
        (st_model, sum((st / n).stat().st_size for n in st_names)),  # its repo's only revision
        (model(c1, "a-Q8_0.gguf"), len(data["a-Q8_0.gguf"])),
        (shared, len(data["shared-Q4_K_M.gguf"])),  # both links go: the blob is freed once
        (model(c2, "b-Q5_K_M.gguf"), len(data["b-Q5_K_M.gguf"])),
    ]
    outside = deck.digest()
    for m, freed in steps:
        code, out, _ = deck.cli("rm", m["id"], "-y", "--json")
        assert code == 0
        _cache_is_consistent(cache)
        assert deck.digest() == outside  # nothing outside the cache changed
        result = json.loads(out)
        assert result["freed_bytes"] == freed and result["refused"] == [], (m["id"], result)
        if m is steps[2][0]:  # the revision it emptied went whole, with the ref naming it
            assert not (two / "snapshots" / c1).exists() and not (two / "refs" / "main").exists()
            assert not (two / "snapshots" / c2 / "shared-Q4_K_M.gguf").exists()
            assert (two / "snapshots" / c2 / "b-Q5_K_M.gguf").read_bytes() == \
                data["b-Q5_K_M.gguf"]
    assert not two.exists() and not (cache / "models--acme--st").exists()
    assert deck.models_json() == {}


def test_a_cache_link_pointing_outside_its_repo_is_not_deleted(
    deck, hub: FakeHub, hf_cache: Path
) -> None:
    from huggingface_hub import hf_hub_download

    data = write_gguf(deck.tmp / "src" / "m-Q4_K_M.gguf").read_bytes()
    hub.add_repo("acme/one", {"m-Q4_K_M.gguf": data})
    link = Path(hf_hub_download("acme/one", "m-Q4_K_M.gguf", cache_dir=hf_cache))
    deck.cli("scan")
    (model,) = deck.models_json().values()
    mine = deck.tmp / "elsewhere" / "mine.gguf"
    mine.parent.mkdir()
    mine.write_bytes(data)  # the user's own copy, linked in place of the cache's entry
    link.unlink()
    link.symlink_to(mine)
    before_cache, before = tree_digest(hf_cache), deck.digest()
    code, out, after = deck.rm(model["id"])
    assert code == 0 and after == before and tree_digest(hf_cache) == before_cache
    assert "outside its cached repo's blobs" in _refusal(out, link)
