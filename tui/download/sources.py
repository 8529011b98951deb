"""What to download: :class:`JobSpec`, and parsing of a ``modeldeck pull <source>`` argument."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

from tui.errors import InvalidInputError
from tui.safe_paths import safe_filename

_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(slots=True)
class JobSpec:
    """A download request.

    ``kind`` is ``"hf"`` (``repo`` + optional ``files`` / ``quant`` / ``include`` /
    ``exclude`` / ``revision``; ``file_sha256`` maps repo paths to expected sha256, e.g. from
    a manifest), ``"url"`` (``url`` + optional ``sha256``, ``filename``) or ``"catalog"``
    (``catalog_id`` + optional ``quant``; resolved through the catalog) or ``"civitai"``
    (``civitai_model`` + optional ``civitai_version``, ``files`` (one file name) and
    ``allow_pickle``; planning fills ``civitai_pinned`` (the version it chose), ``model_kind``
    and ``base_model`` from CivitAI's answer: :meth:`request_json` leaves them out).
    ``connections`` and ``limit_rate`` (bytes/s) override the settings for this job.
    ``update_of`` names the installed model a Hub job updates (set by planning or by
    ``modeldeck update``): only changed files are fetched, then swapped in together.
    """

    kind: str
    repo: str | None = None
    revision: str | None = None
    files: list[str] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    quant: str | None = None
    url: str | None = None
    sha256: str | None = None
    filename: str | None = None
    catalog_id: str | None = None
    name: str | None = None
    connections: int | None = None
    limit_rate: int | None = None
    file_sha256: dict[str, str] = field(default_factory=dict)
    update_of: str | None = None
    civitai_model: int | None = None
    civitai_version: int | None = None
    civitai_pinned: int | None = None
    allow_pickle: bool = False
    model_kind: str | None = None
    base_model: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("hf", "url", "catalog", "civitai"):
            raise InvalidInputError(f"unknown download kind {self.kind!r}")
        if self.kind == "hf" and not self.repo:
            raise InvalidInputError("a Hugging Face download needs a repo (owner/name)")
        if self.kind == "url" and (
            not self.url or urlparse(self.url).scheme not in ("http", "https")
        ):
            raise InvalidInputError(f"not an http(s) URL: {str(self.url)[:100]!r}")
        if self.kind == "catalog" and not self.catalog_id:
            raise InvalidInputError("a catalog download needs a catalog id")
        if self.kind == "civitai" and not (
                isinstance(self.civitai_model, int) and self.civitai_model > 0
                and (self.civitai_version is None or (
                    isinstance(self.civitai_version, int) and self.civitai_version > 0))):
            raise InvalidInputError("a CivitAI download needs a model id (civitai:<id>)")
        if self.sha256 is not None:
            if not _SHA256_RE.match(self.sha256):
                raise InvalidInputError("--sha256 must be 64 hex digits")
            self.sha256 = self.sha256.lower()
        if self.update_of is not None and not isinstance(self.update_of, str):
            raise InvalidInputError("update_of must be a model id")
        for path, sha in list(self.file_sha256.items()):
            if not _SHA256_RE.match(sha or ""):
                raise InvalidInputError(f"sha256 for {path[:80]!r} must be 64 hex digits")
            self.file_sha256[path] = sha.lower()

    def describe(self) -> str:
        """A short human name for lists and progress bars."""
        if self.name:
            return self.name
        if self.kind == "hf":
            return f"{self.repo}:{self.quant}" if self.quant else str(self.repo)
        if self.kind == "url":
            return self.filename or url_filename(str(self.url))
        if self.kind == "civitai":
            version = f"@{self.civitai_version}" if self.civitai_version else ""
            return f"civitai:{self.civitai_model}{version}"
        return str(self.catalog_id)

    def to_json(self) -> str:
        """Serialised form stored in the jobs table."""
        return json.dumps(asdict(self), sort_keys=True)

    def request_json(self) -> str:
        """:meth:`to_json` of what was asked for, without what planning filled in (a pull
        asked again finds its job)."""
        data = asdict(self)
        data.update(civitai_pinned=None, model_kind=None, base_model=None)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        """Inverse of :meth:`to_json` (unknown keys ignored)."""
        data: dict[str, Any] = json.loads(text)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def url_filename(url: str) -> str:
    """A usable file name from a URL's last path component (see
    :func:`tui.safe_paths.safe_filename`): percent-decoded, NFKC, readable Unicode kept, at
    most 250 bytes with its extension kept (``.part`` must fit too); ``download`` if empty."""
    last = urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]
    return safe_filename(unquote(last, errors="replace"))


def parse_source(source: str, *, is_catalog_id: Any = None, **options: Any) -> JobSpec:
    """Turn a ``pull`` argument into a :class:`JobSpec`.

    ``source`` is ``civitai:ID[@VERSION]``, a CivitAI model page URL, an http(s) URL,
    ``owner/repo``, ``owner/repo:QUANT`` or a catalog id; ``is_catalog_id(text) -> bool``
    decides the last case. ``options`` are JobSpec fields.
    """
    from tui.civitai.client import parse_ref

    source = source.strip()
    opts = {k: v for k, v in options.items() if v not in (None, [], ())}
    allow_pickle = opts.pop("allow_pickle", False) is True
    ref = parse_ref(source)
    if ref is not None:
        if opts.get("files") and len(opts["files"]) > 1:
            raise InvalidInputError("a CivitAI pull takes one --file")
        return JobSpec(kind="civitai", civitai_model=ref[0], civitai_version=ref[1],
                       allow_pickle=allow_pickle, **opts)
    if source.startswith(("http://", "https://")):
        return JobSpec(kind="url", url=source, **opts)
    if is_catalog_id is not None and is_catalog_id(source):
        return JobSpec(kind="catalog", catalog_id=source, **opts)
    repo, _, quant = source.partition(":")
    if _REPO_RE.match(repo):
        if quant:
            if opts.get("quant") and opts["quant"].upper() != quant.upper():
                raise InvalidInputError(f"{source} names quant {quant} but --quant says "
                                        f"{opts['quant']}")
            opts["quant"] = quant
        return JobSpec(kind="hf", repo=repo, **opts)
    raise InvalidInputError(
        f"don't know how to pull {source[:100]!r}",
        hint="give a catalog id, owner/repo, owner/repo:QUANT, civitai:ID or an http(s) URL",
    )
