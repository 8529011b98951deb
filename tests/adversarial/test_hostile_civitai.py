"""A CivitAI API (or something posing as one) that lies: huge numbers, ``../`` names, a wrong
SHA256, a redirect to ``file://``, a download URL on another host, non-JSON, an endless answer,
escape sequences. One clear line, nothing written outside the version's folder, nothing
registered, the token never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tui.download import JobSpec
from tui.download.service import DownloadService

from tests.fakecivitai import FakeCivitai, FakeFile, FakeModel, FakeVersion
from tests.fakecivitai.server import TOKEN
from tests.fakecivitai.testing import lora_bytes
from tests.fakehub.testing import part_files
from tests.support.checks import assert_no_control_chars, tree_digest


async def _pull(service: DownloadService, model: int, version: int | None = None):
    spec = JobSpec(kind="civitai", civitai_model=model, civitai_version=version)
    [job] = await service.run_until_complete([service.enqueue(spec)])
    return job


def _one_line(job, *needles: str) -> str:
    assert job.state == "failed", job
    assert job.error and "\n" not in job.error and "Traceback" not in job.error
    assert_no_control_chars(job.error)
    assert TOKEN not in job.error
    for needle in needles:
        assert needle.lower() in job.error.lower(), job.error
    return job.error


def _nothing_installed(service: DownloadService, models_dir: Path) -> None:
    assert service.inventory.list_models() == []
    assert part_files(models_dir) == []
    assert not [p for p in models_dir.rglob("*") if p.is_file()] if models_dir.exists() else True


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CIVITAI_TOKEN", TOKEN)
    return TOKEN


async def test_wrong_hash_is_not_installed(civitai: FakeCivitai, service, dl_settings,
                                           token) -> None:
    civitai.add(FakeModel(1, "Liar", "LORA", [FakeVersion(10, files=[
        FakeFile("liar.safetensors", lora_bytes(1), sha256="AB" * 32)])]))
    job = await _pull(service, 1)
    _one_line(job, "liar.safetensors", "verification")
    _nothing_installed(service, dl_settings.models_dir)


async def test_a_redirect_to_file_url_is_refused(civitai: FakeCivitai, service, dl_settings,
                                                 token) -> None:
    civitai.add(FakeModel(2, "Sneaky", "LORA", [FakeVersion(20, files=[
        FakeFile("sneaky.safetensors", lora_bytes(2))])]))
    civitai.redirect_to = "file:///etc/passwd"
    job = await _pull(service, 2)
    error = _one_line(job, "non-HTTP URL")
    assert "/etc/passwd" not in error
    _nothing_installed(service, dl_settings.models_dir)


async def test_dot_dot_names_stay_inside_the_version_folder(civitai: FakeCivitai, service,
                                                            dl_settings, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    dl_settings.models_dir.mkdir(parents=True)
    before = tree_digest(tmp_path, skip=(dl_settings.models_dir, dl_settings.state_dir))
    civitai.add(FakeModel(3, "../../../outside/..", "LORA", [FakeVersion(30, files=[
        FakeFile("../../../../outside/evil.safetensors", lora_bytes(3))])]))
    job = await _pull(service, 3)
    assert job.state == "done", job.error
    [model] = service.inventory.list_models()
    path = Path(model.path)
    assert path.resolve().is_relative_to((dl_settings.models_dir / "civitai").resolve())
    assert ".." not in path.relative_to(dl_settings.models_dir).parts
    assert "/" not in path.name and path.read_bytes() == lora_bytes(3)
    assert tree_digest(tmp_path, skip=(dl_settings.models_dir, dl_settings.state_dir)) == before


async def test_huge_numbers_are_bounded(civitai: FakeCivitai, service, dl_settings) -> None:
    model = civitai.add(FakeModel(4, "Big", "LORA", [FakeVersion(40, files=[
        FakeFile("big.safetensors", lora_bytes(4), size_kb=1e300)])]))
    body = json.dumps(civitai.version_json(model, model.versions[0]))
    body = body.replace("1e+300", "9" * 5000, 1)  # a 5000-digit sizeKB
    civitai.answer("/api/v1/model-versions/40", 200, body)
    job = await _pull(service, 4, 40)
    assert job.state == "done", job.error  # the size is CivitAI's estimate: ignored, not used
    civitai.answer("/api/v1/models/44", 200, json.dumps(
        {"id": 44, "name": "x", "type": "LORA", "modelVersions": [{"id": 10**40, "files": []}]}))
    job = await _pull(service, 44)
    _one_line(job, "another version")


@pytest.mark.parametrize(("body", "needle"), [
    ("<html>Cloudflare says hi</html>", "not JSON"),
    ("[1, 2, 3]", "not a JSON object"),
    ("[" * 100_000 + "]" * 100_000, "not JSON"),
])
async def test_non_json_answers(civitai: FakeCivitai, service, dl_settings, body: str,
                                needle: str) -> None:
    civitai.answer("/api/v1/models/5", 200, body)
    job = await _pull(service, 5)
    _one_line(job, needle)
    _nothing_installed(service, dl_settings.models_dir)


async def test_a_10_mb_answer_is_not_read(civitai: FakeCivitai, service, dl_settings) -> None:
    civitai.answer("/api/v1/models/6", 200, b'{"pad": "' + b"x" * (10 << 20) + b'"}')
    job = await _pull(service, 6)
    _one_line(job, "over 8 MiB")
    _nothing_installed(service, dl_settings.models_dir)


async def test_a_download_url_on_another_host_is_refused(civitai: FakeCivitai, service,
                                                         dl_settings, token) -> None:
    model = civitai.add(FakeModel(7, "Elsewhere", "LORA", [FakeVersion(70, files=[
        FakeFile("e.safetensors", lora_bytes(7))])]))
    data = civitai.version_json(model, model.versions[0])
    data["files"][0]["downloadUrl"] = f"{civitai.storage_url}/steal-the-token"
    civitai.answer("/api/v1/model-versions/70", 200, json.dumps(data))
    job = await _pull(service, 7, 70)
    _one_line(job, "not on", "not following")
    assert civitai.requests_to("storage") == []  # the token went nowhere else
    _nothing_installed(service, dl_settings.models_dir)


async def test_a_malformed_sha256_is_refused(civitai: FakeCivitai, service, dl_settings) -> None:
    civitai.add(FakeModel(8, "Bad hash", "LORA", [FakeVersion(80, files=[
        FakeFile("b.safetensors", lora_bytes(8), sha256="not-a-hash\x1b[31m")])]))
    job = await _pull(service, 8)
    _one_line(job, "SHA256", "64 hex")
    _nothing_installed(service, dl_settings.models_dir)


async def test_escape_sequences_in_names_never_reach_the_terminal(civitai: FakeCivitai, service,
                                                                  dl_settings) -> None:
    civitai.add(FakeModel(9, "Evil\x1b]0;pwned\x07\x1b[2J name", "LORA", [FakeVersion(
        90, name="v1\x1b[31m", base_model="SDXL\x1b[5m", files=[
            FakeFile("evil\x1b[31m.safetensors", lora_bytes(9))])]))
    job = await _pull(service, 9)
    assert job.state == "done", job.error
    [model] = service.inventory.list_models()
    assert "\x1b" not in model.path and "\x1b" not in model.name
    assert "\x1b" not in json.dumps(model.to_dict())


async def test_missing_and_mismatched_ids(civitai: FakeCivitai, service, dl_settings) -> None:
    civitai.add(FakeModel(12, "Mine", "LORA", [FakeVersion(120, files=[
        FakeFile("m.safetensors", lora_bytes(12))])]))
    _one_line(await _pull(service, 404), "no civitai:404", "404")
    _one_line(await _pull(service, 12, 999), "404")
    _one_line(await _pull(service, 13, 120), "belongs to model 12", "civitai:12@120")
    _nothing_installed(service, dl_settings.models_dir)


async def test_a_refused_token_is_named_never_shown(civitai: FakeCivitai, service, dl_settings,
                                                    token, monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:
    civitai.answer("/api/v1/models/14", 401, '{"error":"Unauthorized"}')
    _one_line(await _pull(service, 14), "refused CIVITAI_TOKEN")
    civitai.add(FakeModel(15, "Gated", "LORA", [FakeVersion(150, files=[
        FakeFile("g.safetensors", lora_bytes(15), login=True)])]))
    monkeypatch.setenv("CIVITAI_TOKEN", "wrong-" + TOKEN)
    error = _one_line(await _pull(service, 15), "refused CIVITAI_TOKEN", "HTTP 401")
    assert "wrong-" not in error
    _nothing_installed(service, dl_settings.models_dir)


async def test_a_users_file_at_the_destination_is_never_overwritten(
        civitai: FakeCivitai, service, dl_settings) -> None:
    civitai.add(FakeModel(16, "Taken", "LORA", [FakeVersion(160, files=[
        FakeFile("t.safetensors", lora_bytes(16))])]))
    dest = dl_settings.models_dir / "civitai/taken-160/t.safetensors"  # flat: organize off
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"the user's own file")
    _one_line(await _pull(service, 16), "already holds", "did not download")
    assert dest.read_bytes() == b"the user's own file"
    assert service.inventory.list_models() == []
