"""HubClient against the fake Hub: listings, search, gated/private errors, endpoint per test."""

from __future__ import annotations

import pytest

from tui.download.errors import GatedRepoError, RemoteNotFoundError
from tui.errors import InvalidInputError
from tui.hub import HubClient, hub_endpoint, hub_token
from tui.hub.client import gguf_quant

from tests.fakehub import FakeHub, git_blob_sha1
from tests.fakehub.testing import gguf_bytes, sha256


def test_list_repo_sizes_lfs_sha_and_commit(hub: FakeHub) -> None:
    big = gguf_bytes(5000, 1)
    repo = hub.add_repo("acme/list", {"m-Q4_K_M.gguf": big, "README.md": b"hello"})
    listing = HubClient().list_repo("acme/list")
    assert listing.commit == repo.commit
    files = {f.path: f for f in listing.files}
    assert files["m-Q4_K_M.gguf"].size == len(big)
    assert files["m-Q4_K_M.gguf"].sha256 == sha256(big)
    assert files["README.md"].sha256 is None
    assert files["README.md"].blob_id == git_blob_sha1(b"hello")
    assert set(listing.quants()) == {"Q4_K_M"}
    assert HubClient().resolve_url("acme/list", repo.commit, "m-Q4_K_M.gguf") == (
        f"{hub.url}/acme/list/resolve/{repo.commit}/m-Q4_K_M.gguf")


def test_endpoint_is_read_at_call_time(hub: FakeHub, monkeypatch) -> None:
    assert hub_endpoint() == hub.url
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    assert hub_endpoint() == "http://127.0.0.1:9"


def test_token_from_env_only_when_set(monkeypatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert hub_token() is None
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefabcdefabcdef")
    assert hub_token() == "hf_abcdefabcdefabcdef"


def test_search_gguf_sorted_by_downloads(hub: FakeHub) -> None:
    hub.add_repo("acme/popular-gguf", {"a-Q4_0.gguf": b"x"}, downloads=500, likes=7)
    hub.add_repo("acme/rare-gguf", {"b-Q4_0.gguf": b"x"}, downloads=5, likes=1)
    hub.add_repo("acme/not-gguf", {"model.safetensors": b"x"}, downloads=10_000,
                 tags=["safetensors"])
    results = HubClient().search_gguf("gguf", limit=10)
    assert [r.repo for r in results] == ["acme/popular-gguf", "acme/rare-gguf"]
    assert results[0].downloads == 500 and results[0].likes == 7 and "gguf" in results[0].tags
    search = hub.requests_for("/api/models", "GET")[-1]
    assert search.headers.get("Authorization") is None


def test_gguf_file_sizes_per_quant(hub: FakeHub) -> None:
    hub.add_repo("acme/sizes", {
        "m-Q4_K_M.gguf": b"x" * 3000,
        "m-Q8_0-00001-of-00002.gguf": b"x" * 2000,
        "m-Q8_0-00002-of-00002.gguf": b"x" * 2500,
        "README.md": b"r",
    })
    assert HubClient().gguf_files("acme/sizes") == {"Q4_K_M": 3000, "Q8_0": 4500}


def test_missing_and_private_repos(hub: FakeHub, monkeypatch) -> None:
    with pytest.raises(RemoteNotFoundError, match="not found"):
        HubClient().list_repo("acme/nope")
    hub.add_repo("acme/private", {"a.gguf": b"x"}, private=True, tokens={"hf_privateprivate1"})
    with pytest.raises(RemoteNotFoundError, match="HF_TOKEN"):
        HubClient().list_repo("acme/private")
    monkeypatch.setenv("HF_TOKEN", "hf_privateprivate1")
    assert HubClient().list_repo("acme/private").files[0].path == "a.gguf"


def test_gated_api_error_says_what_to_do(hub: FakeHub) -> None:
    hub.add_fault("/api/models/acme/gated", "status", times=None, status=403,
                  headers={"X-Error-Code": "GatedRepo", "X-Error-Message": "gated"})
    with pytest.raises(GatedRepoError) as info:
        HubClient().list_repo("acme/gated")
    assert "https://huggingface.co/acme/gated" in str(info.value)
    assert "HF_TOKEN" in str(info.value) and "hf auth login" in str(info.value)


@pytest.mark.parametrize("bad", ["noslash", "a/b/c", "../x", "a/..", ""])
def test_repo_ids_validated(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        HubClient().list_repo(bad)


@pytest.mark.parametrize(("name", "quant"), [
    ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
    ("x.IQ3_XS.gguf", "IQ3_XS"),
    ("m-Q8_0-00001-of-00003.gguf", "Q8_0"),
    ("qwen2.5-0.5b-instruct-fp16.gguf", "FP16"),
    ("model.safetensors", None),
])
def test_gguf_quant(name: str, quant: str | None) -> None:
    assert gguf_quant(name) == quant
