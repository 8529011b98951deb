"""``modeldeck pull civitai:…`` against a local fake of CivitAI's API (:mod:`tests.fakecivitai`):
the real engine, real safetensors files, sha256 from the API checked, the token only to the
API's origin and never shown, the kind and base model recorded and shown by ``ls``/``info``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from tests.fakecivitai import FakeCivitai, FakeFile, FakeModel, FakeVersion
from tests.fakecivitai.server import TOKEN
from tests.fakecivitai.testing import lora_bytes, vae_bytes


@pytest.fixture
def cli(cli, monkeypatch: pytest.MonkeyPatch):
    """The shared in-process CLI, with a user's default layout: kind folders."""
    monkeypatch.setenv("MODELDECK_ORGANIZE_BY_KIND", "1")
    return cli


def detail_model(civitai: FakeCivitai) -> FakeModel:
    """Model 101 (a LoRA) with two versions, newest first: 202 and 201."""
    return civitai.add(FakeModel(101, "Detail Tweaker XL", "LORA", [
        FakeVersion(202, "v2.0", "SDXL 1.0", [FakeFile("detail_v2.safetensors", lora_bytes(2))]),
        FakeVersion(201, "v1.0", "SDXL 1.0", [FakeFile("detail_v1.safetensors", lora_bytes(1))]),
    ]))


def error_line(err: str) -> str:
    """The one error line of a failed pull (``-q`` still prints state changes), no traceback."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("modeldeck: error")]
    assert len(errors) == 1, err
    return errors[0]


def _ls(cli) -> list[dict]:
    code, out, _ = cli("ls", "--json")
    assert code == 0
    return json.loads(out)


def test_pull_latest_version_by_model_id(cli, civitai: FakeCivitai) -> None:
    detail_model(civitai)
    code, out, err = cli("pull", "civitai:101", "--quiet")
    assert code == 0, err
    dest = cli.models / "lora/civitai/detail-tweaker-xl-202/detail_v2.safetensors"
    assert dest.read_bytes() == lora_bytes(2)
    [model] = _ls(cli)
    assert model["kind"] == "lora" and model["source"] == "civitai"
    assert model["source_ref"] == "civitai:101@202"
    assert model["files"][0]["verified"] == "sha256"
    assert model["metadata"]["extra"]["base_model"] == "SDXL 1.0"
    code, out, _ = cli("info", model["id"])
    assert code == 0
    assert "LoRA adapter (SDXL" in out and "base model:" in out and "SDXL 1.0" in out
    code, out, _ = cli("ls")
    assert "lora" in out and "civitai" in out
    mine = cli.models / "lora/civitai/notes.txt"  # the user's file next to it is kept
    mine.write_text("mine")
    code, out, err = cli("rm", model["id"], "-y")
    assert code == 0, err
    assert not dest.exists() and not dest.parent.exists() and mine.read_text() == "mine"
    assert _ls(cli) == []


def test_pull_pinned_version_and_pasted_url(cli, civitai: FakeCivitai) -> None:
    detail_model(civitai)
    code, _, err = cli("pull", "civitai:101@201", "--quiet")
    assert code == 0, err
    assert (cli.models / "lora/civitai/detail-tweaker-xl-201/detail_v1.safetensors"
            ).read_bytes() == lora_bytes(1)
    assert civitai.requests_to("api", "/api/v1/model-versions/201")
    url = "https://civitai.com/models/101/detail-tweaker-xl?modelVersionId=202"
    code, _, err = cli("pull", url, "--quiet")
    assert code == 0, err
    assert sorted(m["source_ref"] for m in _ls(cli)) == ["civitai:101@201", "civitai:101@202"]
    code, out, err = cli("pull", "civitai:101@202")  # the same version again: nothing to do
    assert code == 0 and "already installed" in out, err


def test_kind_folder_from_civitai_type(cli, civitai: FakeCivitai) -> None:
    civitai.add(FakeModel(7, "Clear VAE", "VAE", [
        FakeVersion(70, "v1", "SD 1.5", [FakeFile("clearvae.safetensors", vae_bytes())])]))
    civitai.add(FakeModel(8, "Bad Hands", "TextualInversion", [
        FakeVersion(80, "v1", "SD 1.5", [FakeFile("badhands.safetensors", save(
            {"emb_params": np.zeros((2, 768), dtype=np.float32)}))])]))
    assert cli("pull", "civitai:7", "-q")[0] == 0
    assert cli("pull", "civitai:8", "-q")[0] == 0
    assert (cli.models / "vae/civitai/clear-vae-70/clearvae.safetensors").is_file()
    assert (cli.models / "textual-inversion/civitai/bad-hands-80/badhands.safetensors").is_file()
    kinds = {m["source_ref"]: m["kind"] for m in _ls(cli)}
    assert kinds == {"civitai:7@70": "vae", "civitai:8@80": "textual-inversion"}
    assert cli("scan")[0] == 0  # a rescan keeps what the download recorded
    kinds = {m["source_ref"]: m["kind"] for m in _ls(cli)}
    assert kinds == {"civitai:7@70": "vae", "civitai:8@80": "textual-inversion"}


def test_token_only_to_the_api_origin_and_never_shown(cli, civitai: FakeCivitai,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    civitai.add(FakeModel(5, "Members Only", "LORA", [
        FakeVersion(50, "v1", "Flux.1 D", [FakeFile("members.safetensors", lora_bytes(5),
                                                    login=True)])]))
    code, out, err = cli("pull", "civitai:5", "-q")
    assert code != 0
    line = error_line(err)
    assert "CIVITAI_TOKEN" in line and "login" in line, err
    assert not list((cli.models).rglob("*.safetensors"))
    assert not _ls(cli)

    monkeypatch.setenv("CIVITAI_TOKEN", TOKEN)
    civitai.requests.clear()
    code, out, err = cli("pull", "civitai:5", "-q")
    assert code == 0, err
    assert (cli.models / "lora/civitai/members-only-50/members.safetensors").is_file()
    api = civitai.requests_to("api")
    assert api and all(r.authorization == f"Bearer {TOKEN}" for r in api)
    storage = civitai.requests_to("storage")
    assert storage and all(r.authorization is None for r in storage)
    for args in (("ls", "--json"), ("info", _ls(cli)[0]["id"], "--json"), ("jobs",),
                 ("config",), ("doctor", "--json")):
        code, out, err = cli(*args)
        assert TOKEN not in out + err
    checks = {c["name"]: c for c in json.loads(cli("doctor", "--json")[1])}
    assert checks["civitai token"]["detail"] == "present (CIVITAI_TOKEN)"
    db = b"".join(p.read_bytes() for p in cli.state.glob("modeldeck.db*"))
    assert TOKEN.encode() not in db


def test_pickle_needs_allow_pickle(cli, civitai: FakeCivitai) -> None:
    import io
    import pickle

    buf = io.BytesIO()
    pickle.dump({"state_dict": {"w": [0.0] * 8}}, buf, protocol=2)
    civitai.add(FakeModel(9, "Old Checkpoint", "Checkpoint", [FakeVersion(90, "v1", "SD 1.5", [
        FakeFile("old.ckpt", buf.getvalue(), format="PickleTensor")])]))
    code, out, err = cli("pull", "civitai:9", "-q")
    assert code != 0
    line = error_line(err)
    assert "unsafe format" in line and "--allow-pickle" in line
    assert not (cli.models / "diffusion").exists()
    code, out, err = cli("pull", "civitai:9", "--allow-pickle", "-q")
    assert code == 0, err
    assert (cli.models / "diffusion/civitai/old-checkpoint-90/old.ckpt").read_bytes() == \
        buf.getvalue()
    code, out, _ = cli("ls")
    assert "pytorch*" in out  # marked unsafe


def test_safetensors_preferred_over_pickle(cli, civitai: FakeCivitai) -> None:
    civitai.add(FakeModel(11, "Both", "LORA", [FakeVersion(110, "v1", "SDXL 1.0", [
        FakeFile("both.pt", b"\x80\x02}q\x00.", format="PickleTensor", primary=True),
        FakeFile("both.safetensors", lora_bytes(11), primary=False),
        FakeFile("config.yaml", b"x: 1", type="Config", format="Other", primary=False),
    ])]))
    assert cli("pull", "civitai:11", "-q")[0] == 0
    files = sorted(p.name for p in cli.models.rglob("*") if p.is_file())
    assert files == ["both.safetensors"]


def test_no_hash_is_verified_by_size_and_ranges(cli, civitai: FakeCivitai) -> None:
    civitai.add(FakeModel(12, "Hashless", "LORA", [FakeVersion(120, "v1", "SDXL 1.0", [
        FakeFile("hashless.safetensors", lora_bytes(12), sha256="")])]))
    assert cli("pull", "civitai:12", "-q")[0] == 0
    [model] = _ls(cli)
    assert model["files"][0]["verified"] == "size+ranges"


def test_fake_answers_use_documented_fields(civitai: FakeCivitai) -> None:
    """The fake's JSON has the field names CivitAI documents (see its docstring's sources)."""
    import httpx

    detail_model(civitai)
    version = httpx.get(f"{civitai.url}/api/v1/model-versions/202").json()
    assert {"id", "modelId", "name", "baseModel", "model", "files", "downloadUrl"} <= set(version)
    assert {"name", "type"} <= set(version["model"])
    [f] = version["files"]
    assert {"id", "name", "type", "sizeKB", "metadata", "hashes", "downloadUrl", "primary"} \
        <= set(f)
    assert {"format", "size", "fp"} <= set(f["metadata"]) and "SHA256" in f["hashes"]
    model = httpx.get(f"{civitai.url}/api/v1/models/101").json()
    assert {"id", "name", "type", "modelVersions"} <= set(model)
    assert [v["id"] for v in model["modelVersions"]] == [202, 201]
    redirect = httpx.get(f["downloadUrl"])
    assert redirect.status_code == 307 and redirect.headers["location"].startswith(
        civitai.storage_url)


def test_ctrl_c_pauses_and_the_same_pull_resumes(civitai: FakeCivitai, tmp_path: Path) -> None:
    """A pull interrupted by Ctrl-C (a real process) resumes when run again, from its bytes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.support.checks import REPO

    data = save({"lora_unet_x.lora_down.weight": np.zeros((4, 1 << 18), dtype=np.float32)})
    civitai.add(FakeModel(31, "Slow One", "LORA", [FakeVersion(310, files=[
        FakeFile("slow.safetensors", data)])]))
    civitai.rate = 1 << 20
    env = {**os.environ, "CIVITAI_ENDPOINT": civitai.url, "CIVITAI_TOKEN": TOKEN,
           "MODELDECK_STATE_DIR": str(tmp_path / "state"),
           "MODELDECK_MODELS_DIR": str(tmp_path / "models"), "PYTHONPATH": str(REPO),
           "MODELDECK_ORGANIZE_BY_KIND": "1"}
    cmd = [sys.executable, "-m", "tui", "pull", "civitai:31", "-q"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while civitai.bytes_served < len(data) // 4:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the download did not start"
            time.sleep(0.05)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert TOKEN.encode() not in cmdline
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "paused" in err and TOKEN not in out + err
    civitai.rate = None
    served = civitai.bytes_served
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    dest = tmp_path / "models/lora/civitai/slow-one-310/slow.safetensors"
    assert dest.read_bytes() == data
    assert civitai.bytes_served - served < len(data)  # resumed, not started over
    jobs = subprocess.run([sys.executable, "-m", "tui", "jobs"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert jobs.stdout.count("civitai:31") == 1, jobs.stdout  # one job, not two


def test_export_and_import_keep_the_civitai_version(cli, civitai: FakeCivitai, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A CivitAI model goes into the manifest as its version (not "found on disk"), and a
    fresh pod importing it gets that version again, checked against the API's SHA256."""
    detail_model(civitai)
    assert cli("pull", "civitai:101@201", "--quiet")[0] == 0
    manifest = tmp_path / "pod.json"
    code, _, err = cli("export", "-o", str(manifest))
    assert code == 0, err
    data = json.loads(manifest.read_text())
    (entry,) = data["models"]
    assert data["skipped"] == []
    assert entry["source"] == "civitai" and entry["url"] == "civitai:101@201"
    assert entry["files"][0]["path"] == "detail_v1.safetensors"

    monkeypatch.setenv("MODELDECK_MODELS_DIR", str(tmp_path / "pod2" / "models"))
    monkeypatch.setenv("MODELDECK_STATE_DIR", str(tmp_path / "pod2" / "state"))
    code, out, err = cli("import", str(manifest), "--json")
    assert code == 0, err
    assert json.loads(out)["results"] == {entry["id"]: "done"}
    [model] = _ls(cli)
    assert model["source_ref"] == "civitai:101@201" and model["kind"] == "lora"
    assert Path(model["path"]).read_bytes() == lora_bytes(1)
    assert model["files"][0]["verified"] == "sha256"


def test_a_manifest_civitai_entry_is_validated(cli, tmp_path: Path) -> None:
    manifest = tmp_path / "bad.json"
    manifest.write_text(json.dumps({"modeldeck_manifest": 1, "models": [
        {"id": "x", "format": "safetensors", "source": "civitai", "url": "civitai:../1",
         "files": [{"path": "x.safetensors"}]}]}))
    code, _out, err = cli("import", str(manifest))
    assert code != 0 and "bad CivitAI version" in error_line(err)
