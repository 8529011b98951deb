"""Thin wrapper over ``huggingface_hub`` for what downloads and the TUI need.

The endpoint is read from ``HF_ENDPOINT`` at call time (not at import), so tests and users can
point it elsewhere per process or per test. The token comes from ``HF_TOKEN`` or the store of
``huggingface_hub`` (``hf auth login``); it is never logged or put into an error message.
``huggingface_hub`` is imported on first use (a direct-URL pull never pays for it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

from tui.download.errors import DownloadError, RemoteNotFoundError, gated_message, redact
from tui.errors import InvalidInputError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

DEFAULT_ENDPOINT = "https://huggingface.co"
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_QUANT_RE = re.compile(
    r"(?i)(?<![A-Za-z0-9])(I?Q[1-8](?:_[0-9A-Z]+)*|BF16|F16|F32|FP16|FP32)(?![A-Za-z0-9])"
)
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_COMMIT_RE = re.compile(r"^[0-9a-fA-F]{40}$")


def hub_endpoint() -> str:
    """The Hub endpoint: ``HF_ENDPOINT`` now, else ``https://huggingface.co``, no trailing /."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_token() -> str | None:
    """The user's token (``HF_TOKEN`` or the one ``hf auth login`` stored), or None."""
    token = os.environ.get("HF_TOKEN")
    if token:
        return token.strip()
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # a broken token store must not stop public downloads
        return None


def validate_repo_id(repo: str) -> str:
    """``owner/name`` or :class:`InvalidInputError`."""
    if not _REPO_RE.match(repo or "") or ".." in repo:
        raise InvalidInputError(
            f"not a Hugging Face repo id: {repo[:100]!r}", hint="use owner/name"
        )
    return repo


def gguf_quant(filename: str) -> str | None:
    """The quantisation in a GGUF file name (``Q4_K_M``, ``IQ3_XS``, ``F16``…), upper-cased."""
    base = filename.rsplit("/", 1)[-1]
    if not base.lower().endswith(".gguf"):
        return None
    stem = _SHARD_RE.sub("", base)
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    matches = _QUANT_RE.findall(stem.replace(".", "-"))
    return matches[-1].upper() if matches else None


@dataclass(frozen=True, slots=True)
class HubFile:
    """One file of a repo at a commit."""

    path: str
    size: int | None
    sha256: str | None = None  # LFS files
    blob_id: str | None = None  # git blob sha1 (non-LFS files)

    @property
    def is_lfs(self) -> bool:
        """True when the Hub stores the file with LFS (its sha256 is known)."""
        return self.sha256 is not None


@dataclass(slots=True)
class RepoListing:
    """A repo resolved at a revision: commit sha and files with sizes and hashes."""

    repo: str
    revision: str
    commit: str
    files: list[HubFile] = field(default_factory=list)
    gated: bool = False
    private: bool = False

    def quants(self) -> dict[str, list[HubFile]]:
        """GGUF files grouped by quantisation."""
        out: dict[str, list[HubFile]] = {}
        for f in self.files:
            q = gguf_quant(f.path)
            if q:
                out.setdefault(q, []).append(f)
        return out


@dataclass(frozen=True, slots=True)
class HubSearchResult:
    """A model found by :meth:`HubClient.search_gguf`."""

    repo: str
    downloads: int
    likes: int
    tags: tuple[str, ...]
    gated: bool = False


class HubClient:
    """Calls to the Hub API. Synchronous (huggingface_hub is); run in a thread from asyncio."""

    def __init__(self, endpoint: str | None = None, token: str | None = None) -> None:
        self._endpoint = endpoint
        self._token = token

    @property
    def endpoint(self) -> str:
        """The endpoint used for the next call."""
        return (self._endpoint or hub_endpoint()).rstrip("/")

    def token(self) -> str | None:
        """The token used for the next call (never print it)."""
        return self._token or hub_token()

    def _api(self) -> HfApi:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token() or False)

    def resolve_url(self, repo: str, commit: str, path: str) -> str:
        """The byte URL of ``path`` at ``commit``."""
        return f"{self.endpoint}/{repo}/resolve/{commit}/{quote(path)}"

    def list_repo(self, repo: str, revision: str | None = None) -> RepoListing:
        """Files with sizes, LFS sha256 and blob ids of ``repo`` at ``revision`` (default main)."""
        validate_repo_id(repo)
        revision = revision or "main"
        try:
            info = self._api().model_info(repo, revision=revision, files_metadata=True)
        except Exception as exc:
            raise _translate(exc, repo, revision) from None
        files = [
            HubFile(
                path=s.rfilename,
                size=(s.lfs.size if s.lfs else s.size),
                sha256=(s.lfs.sha256 if s.lfs else None),
                blob_id=s.blob_id,
            )
            for s in info.siblings or []
        ]
        if not info.sha:
            raise DownloadError(f"the Hub returned no commit for {repo}@{revision}")
        return RepoListing(
            repo=repo,
            revision=revision,
            commit=info.sha,
            files=files,
            gated=bool(info.gated),
            private=bool(info.private),
        )

    def current_commit(self, repo: str, revision: str | None = None) -> str:
        """The commit ``revision`` (branch, tag or commit; default main) of ``repo`` points at
        now, from one small API call (no file list)."""
        validate_repo_id(repo)
        revision = revision or "main"
        try:
            info = self._api().model_info(repo, revision=revision, expand=["sha"])
        except Exception as exc:
            raise _translate(exc, repo, revision) from None
        sha = info.sha if isinstance(info.sha, str) else ""
        if not _COMMIT_RE.match(sha):
            raise DownloadError(f"the Hub returned no commit for {repo}@{revision}")
        return sha.lower()

    def search_gguf(self, query: str | None = None, limit: int = 50) -> list[HubSearchResult]:
        """GGUF models matching ``query``, most downloaded first."""
        try:
            models = self._api().list_models(
                search=query or None, filter="gguf", sort="downloads", limit=limit
            )
            return [
                HubSearchResult(
                    repo=m.id,
                    downloads=int(m.downloads or 0),
                    likes=int(m.likes or 0),
                    tags=tuple(m.tags or ()),
                    gated=bool(m.gated),
                )
                for m in models
            ]
        except Exception as exc:
            raise _translate(exc, query or "", None) from None

    def gguf_files(self, repo: str, revision: str | None = None) -> dict[str, int]:
        """Per-quantisation total size in bytes of a repo's GGUF files (shards summed)."""
        listing = self.list_repo(repo, revision)
        return {q: sum(f.size or 0 for f in fs) for q, fs in sorted(listing.quants().items())}


def _translate(exc: Exception, repo: str, revision: str | None) -> Exception:
    """Map a huggingface_hub / network exception to a one-line ModelDeck error."""
    from huggingface_hub import errors as hf_errors

    if isinstance(exc, hf_errors.GatedRepoError):
        return gated_message(repo)
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return RemoteNotFoundError(f"revision {revision!r} not found in {repo}")
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return RemoteNotFoundError(
            f"repo {repo} not found on {hub_endpoint()} (or it is private)",
            hint="check the name; for a private repo set HF_TOKEN or run `hf auth login`",
        )
    if isinstance(exc, hf_errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return gated_message(repo)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return DownloadError(f"Hub request for {repo} failed: {redact(first)}")
    if isinstance(exc, DownloadError | InvalidInputError):
        return exc
    return DownloadError(
        f"cannot reach the Hub at {hub_endpoint()}: {redact(type(exc).__name__)}",
        hint="check the network or HF_ENDPOINT",
    )
