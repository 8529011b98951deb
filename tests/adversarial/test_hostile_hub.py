"""A Hub (or something posing as one) whose resolve answers lie: a redirect to a non-HTTP
URL, metadata that contradicts the listing, a sha256 that is not one. One clear line,
nothing written, nothing registered; or, for what cannot be trusted, simply not trusted."""

from __future__ import annotations

from pathlib import Path

from tui.download import JobSpec
from tui.download.service import DownloadService

from tests.fakehub import FakeHub
from tests.fakehub.testing import gguf_bytes, part_files
from tests.support.checks import assert_no_control_chars

MiB = 1 << 20


async def _pull(service: DownloadService, repo: str):
    [job] = await service.run_until_complete([service.enqueue(JobSpec(kind="hf", repo=repo))])
    return job


def _one_line(job) -> None:
    assert job.state == "failed"
    assert job.error and "\n" not in job.error and "Traceback" not in job.error
    assert_no_control_chars(job.error)


async def test_a_redirect_to_a_non_http_url_is_refused(hub: FakeHub, service, dl_settings
                                                       ) -> None:
    repo = hub.add_repo("acme/file", {"f-Q4_K_M.gguf": gguf_bytes(MiB, 1)})
    hub.add_fault("/resolve/", "status", times=None, methods=("HEAD", "GET"), status=302,
                  headers={"Location": "file:///etc/passwd", "X-Repo-Commit": repo.commit})
    job = await _pull(service, "acme/file")
    _one_line(job)
    assert "non-HTTP URL" in job.error and "/etc/passwd" not in job.error
    assert part_files(dl_settings.models_dir) == [] and service.inventory.list_models() == []


async def test_metadata_contradicting_the_listing_stops_before_a_byte(hub: FakeHub, service,
                                                                      dl_settings) -> None:
    data = gguf_bytes(MiB, 2)
    repo = hub.add_repo("acme/size", {"s-Q4_K_M.gguf": data})
    f = repo.files["s-Q4_K_M.gguf"]
    hub.add_fault("/resolve/", "status", times=None, methods=("HEAD", "GET"), status=302,
                  headers={"Location": f"{hub.cdn_url}/x", "X-Repo-Commit": repo.commit,
                           "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(1 << 50)})
    job = await _pull(service, "acme/size")
    _one_line(job)
    assert str(1 << 50) in job.error and str(len(data)) in job.error
    assert hub.requests_for(host="cdn") == []
    assert not any(p.is_file() for p in Path(dl_settings.models_dir).rglob("*"))


async def test_a_malformed_linked_etag_is_not_an_identity(hub: FakeHub, service) -> None:
    """Garbage where the sha256 goes: the file is not taken as pinned (it resumes only under a
    strong ETag) but still downloads, checked against the listing's sha256."""
    data = gguf_bytes(2 * MiB, 3)
    repo = hub.add_repo("acme/etag", {"e-Q4_K_M.gguf": data})
    real = hub._signed_url(repo, "e-Q4_K_M.gguf", repo.files["e-Q4_K_M.gguf"])
    hub.add_fault("/resolve/", "status", times=None, methods=("HEAD", "GET"), status=302,
                  headers={"Location": real, "X-Repo-Commit": repo.commit,
                           "X-Linked-Etag": '"../../etc/passwd"', "X-Linked-Size": str(len(data))})
    job = await _pull(service, "acme/etag")
    assert job.state == "done", job.error
    assert Path(job.files[0].dest).read_bytes() == data
