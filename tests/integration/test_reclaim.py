"""`modeldeck reclaim`: orphans, then duplicates (the copy used last kept), then the least
recently used models, never pinned, loaded or downloading ones, until the target; deleted
through the safe delete path. `pin` / `unpin`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tui.cli import main
from tui.download import JobSpec
from tui.reclaim import DUPLICATE, ORPHAN, UNUSED, plan_reclaim, reclaim
from tui.services import build_services
from tui.settings import load_settings
from tui.store.pins import set_pinned

from tests.fakehub import FakeHub
from tests.support.checks import tree_digest
from tests.support.gguf import write_gguf


def _ls(cli) -> dict[str, dict]:
    code, out, _ = cli("ls", "--json")
    assert code == 0
    return {Path(m["path"]).stem: m for m in json.loads(out)}


@pytest.fixture
def shelf(cli):
    """Models with known last uses, an orphan partial, two copies of one file, a pinned model
    and one a download job writes to. Returns (services, {name: model id}, orphan path)."""
    m = cli.models
    for i, name in enumerate(("old", "newer", "never", "pinned", "busy", "loaded")):
        write_gguf(m / name / f"{name}.gguf", seed=10 + i)
    write_gguf(m / "dup" / "dupa.gguf", seed=99)
    (m / "dup2").mkdir()
    shutil.copyfile(m / "dup" / "dupa.gguf", m / "dup2" / "dupb.gguf")
    orphan = m / "acme" / "gone" / "x.gguf.part"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"\1" * 6000)
    assert cli("scan")[0] == 0
    ids = {k: v["id"] for k, v in _ls(cli).items()}
    services = build_services(load_settings())
    inv = services.inventory
    for name, when in (("pinned", 100), ("busy", 200), ("loaded", 300), ("old", 500),
                       ("dupb", 1000), ("newer", 1500), ("dupa", 2000)):
        inv.touch_last_used(ids[name], when)
    set_pinned(services.db, ids["pinned"], True)
    job = services.downloads.enqueue(JobSpec(kind="url", url="http://127.0.0.1:9/busy.gguf"))
    services.downloads.jobs.set_model(job, ids["busy"])
    yield services, ids, orphan
    services.close()


def _size(services, model_id: str) -> int:
    return services.inventory.require_model(model_id).size_bytes


def test_order_orphans_duplicates_then_lru_skipping_pinned_loaded_busy(shelf) -> None:
    services, ids, orphan = shelf
    busy = {ids["busy"]}
    loaded = {ids["loaded"]}
    everything = plan_reclaim(services, 1 << 40, loaded=loaded, busy=busy)
    got = [(c.kind, c.model_id or c.what) for c in everything.candidates]
    assert got == [
        (ORPHAN, str(orphan)),
        (DUPLICATE, ids["dupb"]),
        (UNUSED, ids["old"]),
        (UNUSED, ids["newer"]),
        (UNUSED, ids["dupa"]),
        (UNUSED, ids["never"]),
    ]
    assert everything.candidates[1].why == f"a copy of {ids['dupa']}, same size and sampled bytes"
    assert not everything.met and everything.available == everything.total
    # stops as soon as the target is reached
    orphan_bytes = everything.candidates[0].size
    assert [c.kind for c in plan_reclaim(services, 1, loaded=loaded, busy=busy).candidates] \
        == [ORPHAN]
    target = orphan_bytes + _size(services, ids["dupb"]) + 1
    some = plan_reclaim(services, target, loaded=loaded, busy=busy)
    assert [c.model_id for c in some.candidates][1:] == [ids["dupb"], ids["old"]]
    assert some.met
    # a pinned model is kept even as the copy used last: the other copy goes as LRU only
    set_pinned(services.db, ids["dupb"], True)
    again = plan_reclaim(services, 1 << 40, loaded=loaded, busy=busy)
    assert [c.model_id for c in again.candidates if c.kind == DUPLICATE] == [ids["dupa"]]
    assert ids["dupb"] not in {c.model_id for c in again.candidates}


def test_reclaim_deletes_through_the_safe_path(shelf, cli) -> None:
    services, ids, orphan = shelf
    proposal = plan_reclaim(services, 1 << 40, loaded={ids["loaded"]}, busy={ids["busy"]})
    paths = {c.model_id: services.inventory.require_model(c.model_id).path
             for c in proposal.candidates if c.model_id}
    # pinned after the proposal was made: checked again, kept
    set_pinned(services.db, ids["never"], True)
    done = reclaim(services, proposal, loaded={ids["loaded"]}, busy={ids["busy"]})
    kept = [c for c in done if not c.done]
    assert [c.model_id for c in kept] == [ids["never"]] and "kept" in kept[0].note
    assert not orphan.exists()
    for model_id, path in paths.items():
        gone = model_id != ids["never"]
        assert Path(path).exists() is not gone
        assert (services.inventory.get_model(model_id) is None) is gone
    for name in ("pinned", "busy", "loaded", "never"):
        assert services.inventory.get_model(ids[name]) is not None
    # ModelDeck did not create the scanned folders: they stay, empty
    assert (cli.models / "old").is_dir()


def test_cli_dry_run_changes_nothing_then_deletes(shelf, cli) -> None:
    _, ids, orphan = shelf
    before, listing = tree_digest(cli.models), _ls(cli)
    code, out, err = cli("reclaim", "--free", "1G", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("orphan") and str(orphan) in lines[0]
    assert lines[1].startswith("duplicate") and ids["dupb"] in lines[1]
    assert "of 1.0 GiB asked" in out and "only " in out and "can be freed" in out
    shown = {line.split()[3] for line in lines if line.startswith((ORPHAN, DUPLICATE, UNUSED))}
    assert ids["pinned"] not in shown and ids["busy"] not in shown and ids["old"] in shown
    assert "dry run: nothing deleted" in out
    assert tree_digest(cli.models) == before and _ls(cli) == listing
    # without a terminal and without -y: refused in one line, nothing deleted
    code, out, err = cli("reclaim", "--free", "1")
    assert code != 0 and "pass -y" in err and len(err.strip().splitlines()) == 1
    assert tree_digest(cli.models) == before
    code, out, err = cli("reclaim", "--free", "1", "-y")
    assert code == 0, err
    assert "deleted 1 item" in out and not orphan.exists()
    assert _ls(cli) == listing  # only the orphan went


@pytest.mark.parametrize("bad", ["lots", "-5G", "0"])
def test_bad_target_is_one_line(cli, bad: str) -> None:
    code, _, err = cli("reclaim", f"--free={bad}", "--dry-run")
    assert code != 0 and "--free" in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_pin_and_unpin(cli) -> None:
    write_gguf(cli.models / "a" / "a.gguf")
    assert cli("scan")[0] == 0
    [model] = _ls(cli).values()
    code, out, _ = cli("pin", model["id"])
    assert code == 0 and "pinned" in out
    code, out, _ = cli("reclaim", "--free", "1", "--dry-run")
    assert code == 1 and "nothing to reclaim" in out
    code, out, _ = cli("unpin", model["id"])
    assert code == 0 and "unpinned" in out
    code, out, _ = cli("reclaim", "--free", "1", "--dry-run")
    assert code == 0 and model["id"] in out
    code, _, err = cli("pin", "no-such-model")
    assert code != 0 and "no-such-model" in err and len(err.strip().splitlines()) == 1
    # a rescan keeps the pin
    cli("pin", model["id"])
    assert cli("scan")[0] == 0
    assert cli("reclaim", "--free", "1", "--dry-run")[0] == 1


def test_the_hf_cache_stays_consistent(cli, hub: FakeHub, monkeypatch) -> None:
    from huggingface_hub import constants, hf_hub_download, scan_cache_dir

    from tui.discovery import hf_cache_dir

    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setenv("MODELDECK_SCAN_HF_CACHE", "true")
    data = write_gguf(cli.tmp / "src" / "m-Q4_K_M.gguf").read_bytes()
    hub.add_repo("acme/one", {"m-Q4_K_M.gguf": data})
    cache = hf_cache_dir()
    hf_hub_download("acme/one", "m-Q4_K_M.gguf", cache_dir=cache)
    assert cli("scan")[0] == 0
    assert "nothing to move" in cli("organize", "--dry-run")[1]  # the cache is not ours to move
    code, out, err = cli("reclaim", "--free", "1", "-y")
    assert code == 0, err
    assert "unused" in out and f"freed {len(data) / 1024:.1f} KiB" in out
    info = scan_cache_dir(cache)
    assert info.warnings == [] and info.repos == frozenset()


def test_a_model_loaded_in_the_running_server_is_never_proposed(tmp_path: Path, capsys) -> None:
    """`modeldeck serve` runs (serve.json) with the model loaded: reclaim asks it (/api/ps)."""
    pytest.importorskip("llama_cpp", reason="the served model is loaded through llama.cpp")
    import httpx

    from tests.support.serve import LIMIT, serve_settings, served
    from tests.support.tiny_models import tiny_gguf

    settings = serve_settings(tmp_path)
    model = settings.models_dir / "tiny" / "tiny.gguf"
    model.parent.mkdir(parents=True)
    shutil.copyfile(tiny_gguf(), model)
    args = ["--models-dir", str(settings.models_dir), "--state-dir", str(settings.state_dir),
            "reclaim", "--free", "1T", "--dry-run"]
    with served(settings, {"tiny": (model, "gguf")}) as s, \
            httpx.Client(base_url=s.url, timeout=LIMIT) as c:
        assert main(args) == 0
        assert "tiny" in capsys.readouterr().out  # not loaded yet: proposed
        loaded = c.post("/api/models/tiny/load", json={"context_length": 256})
        assert loaded.status_code == 200, loaded.text
        assert main(args) == 1
        out = capsys.readouterr().out
        assert "nothing to reclaim" in out and not out.startswith("unused")
    assert model.is_file()


async def test_downloaded_copies_are_duplicates_by_sha256(hub: FakeHub, dl_settings,
                                                          tmp_path: Path) -> None:
    from tests.fakehub.testing import make_service

    data = write_gguf(tmp_path / "src" / "m.gguf").read_bytes()
    hub.add_repo("acme/one", {"m-Q4_K_M.gguf": data})
    hub.add_repo("mirror/one", {"m-Q4_K_M.gguf": data})
    service = make_service(dl_settings)
    services = build_services(dl_settings)
    try:
        jobs = await service.run_until_complete([
            service.enqueue(JobSpec(kind="hf", repo="acme/one")),
            service.enqueue(JobSpec(kind="hf", repo="mirror/one"))])
        assert [j.state for j in jobs] == ["done", "done"]
        first, second = (j.model_id for j in jobs)
        services.inventory.touch_last_used(first, 2000)
        services.inventory.touch_last_used(second, 1000)
        proposal = plan_reclaim(services, len(data), loaded=set(), busy=set())
        assert [(c.kind, c.model_id) for c in proposal.candidates] == [(DUPLICATE, second)]
        assert proposal.candidates[0].why == f"a copy of {first}, same sha256"
        [done] = reclaim(services, proposal, loaded=set(), busy=set())
        assert done.done and done.size == len(data)
        assert not (dl_settings.models_dir / "mirror").exists()  # ModelDeck's folders went
        kept = services.inventory.require_model(first)
        assert Path(kept.path).read_bytes() == data
    finally:
        await service.stop()
        service.db.close()
        services.close()
