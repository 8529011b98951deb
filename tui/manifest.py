"""Pod manifests: the installed set with sources, revisions and sha256, to rebuild a pod.

``export_manifest`` writes what is installed; ``parse_manifest`` validates a manifest
completely (schema, repo ids, URLs, file names, sha256) before anything is queued, so a bad
manifest changes nothing.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui.errors import InvalidInputError
from tui.safe_paths import validate_remote_name
from tui.store import Inventory, ModelRecord

MANIFEST_VERSION = 1
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_URL_RE = re.compile(r"^https?://[^\s/]+/\S*$")
_REV_RE = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")


@dataclass(slots=True)
class ManifestFile:
    """A file of a manifest entry, relative to the model's repo (or the URL's file name)."""

    path: str
    size: int | None
    sha256: str | None


@dataclass(slots=True)
class ManifestEntry:
    """One model to fetch: from a Hub repo (``repo`` + ``revision``) or a direct ``url``."""

    id: str
    name: str
    format: str
    source: str  # "hf" or "url"
    repo: str | None = None
    revision: str | None = None
    url: str | None = None
    catalog_id: str | None = None
    files: list[ManifestFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation."""
        return {
            "id": self.id,
            "name": self.name,
            "format": self.format,
            "source": self.source,
            "repo": self.repo,
            "revision": self.revision,
            "url": self.url,
            "catalog_id": self.catalog_id,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }


@dataclass(slots=True)
class Manifest:
    """A validated manifest."""

    entries: list[ManifestEntry]
    skipped: list[dict[str, str]] = field(default_factory=list)


def _relative_name(model: ModelRecord, file_path: str) -> str:
    root = Path(model.path) if model.format == "safetensors" else Path(model.path).parent
    try:
        return Path(file_path).relative_to(root).as_posix()
    except ValueError:
        return Path(file_path).name


def _repo_relative(model: ModelRecord, file_path: str, models_dir: Path | None) -> str:
    """The file's path inside its Hub repo (files live under models_dir/owner/name/...)."""
    if model.source == "hf-cache":
        parts = Path(file_path).parts
        if "snapshots" in parts:
            i = parts.index("snapshots")
            return Path(*parts[i + 2 :]).as_posix()
    if models_dir is not None and model.source_ref and "/" in model.source_ref:
        repo_root = models_dir / model.source_ref
        try:
            return Path(file_path).relative_to(repo_root).as_posix()
        except ValueError:
            pass
    return _relative_name(model, file_path)


def export_manifest(inventory: Inventory, models_dir: Path | None = None) -> dict[str, Any]:
    """The installed models as a manifest dict; models with no remote source are listed
    under ``skipped`` with the reason."""
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for model in inventory.list_models(status="installed"):
        if model.source in ("hf", "hf-cache", "catalog") and model.source_ref:
            entry = ManifestEntry(
                id=model.id, name=model.name, format=model.format, source="hf",
                repo=model.source_ref, revision=model.revision, catalog_id=model.catalog_id,
                files=[
                    ManifestFile(_repo_relative(model, f.path, models_dir), f.size, f.sha256)
                    for f in model.files
                ],
            )
        elif model.source == "url" and model.source_ref:
            entry = ManifestEntry(
                id=model.id, name=model.name, format=model.format, source="url",
                url=model.source_ref,
                files=[ManifestFile(Path(f.path).name, f.size, f.sha256) for f in model.files],
            )
        else:
            skipped.append({"id": model.id, "reason": "no remote source (found on disk)"})
            continue
        entries.append(entry.to_dict())
    return {
        "modeldeck_manifest": MANIFEST_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": entries,
        "skipped": skipped,
    }


def _fail(where: str, what: str) -> InvalidInputError:
    return InvalidInputError(f"manifest {where}: {what}", hint="nothing was imported")


def parse_manifest(text: str) -> Manifest:
    """Validate manifest JSON text; raises :class:`InvalidInputError` on the first problem."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail("is not valid JSON", f"line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("modeldeck_manifest") != MANIFEST_VERSION:
        raise _fail("header", f"expected \"modeldeck_manifest\": {MANIFEST_VERSION}")
    models = data.get("models")
    if not isinstance(models, list):
        raise _fail("header", "\"models\" must be a list")
    entries = []
    ids: set[str] = set()
    for i, raw in enumerate(models):
        where = f"model #{i + 1}"
        if not isinstance(raw, dict):
            raise _fail(where, "must be an object")
        mid = str(raw.get("id") or "")
        if not re.match(r"^[a-z0-9][a-z0-9._-]{0,99}$", mid):
            raise _fail(where, f"bad id {mid[:40]!r}")
        if mid in ids:
            raise _fail(where, f"duplicate id {mid!r}")
        ids.add(mid)
        where = f"model {mid!r}"
        source = raw.get("source")
        fmt = raw.get("format")
        if fmt not in ("gguf", "safetensors"):
            raise _fail(where, f"unknown format {fmt!r}")
        repo = raw.get("repo")
        url = raw.get("url")
        revision = raw.get("revision")
        if source == "hf":
            if not isinstance(repo, str) or not _REPO_RE.match(repo):
                raise _fail(where, f"bad repo {str(repo)[:60]!r}")
            if revision is not None and (
                not isinstance(revision, str) or not _REV_RE.match(revision) or ".." in revision
            ):
                raise _fail(where, f"bad revision {str(revision)[:60]!r}")
        elif source == "url":
            if not isinstance(url, str) or not _URL_RE.match(url):
                raise _fail(where, f"bad url {str(url)[:60]!r}")
        else:
            raise _fail(where, f"unknown source {source!r} (use hf or url)")
        files_raw = raw.get("files")
        if not isinstance(files_raw, list) or not files_raw:
            raise _fail(where, "\"files\" must be a non-empty list")
        files = []
        for f in files_raw:
            if not isinstance(f, dict):
                raise _fail(where, "each file must be an object")
            name = f.get("path")
            try:
                validate_remote_name(name)
            except InvalidInputError as exc:
                raise _fail(where, str(exc)) from None
            sha = f.get("sha256")
            if sha is not None and (not isinstance(sha, str) or not _SHA256_RE.match(sha)):
                raise _fail(where, f"bad sha256 for {name!r} (need 64 lowercase hex digits)")
            size = f.get("size")
            if size is not None and (not isinstance(size, int) or isinstance(size, bool)
                                     or size < 0):
                raise _fail(where, f"bad size for {name!r}")
            files.append(ManifestFile(name, size, sha))
        entries.append(
            ManifestEntry(
                id=mid, name=str(raw.get("name") or mid)[:200], format=fmt, source=source,
                repo=repo, revision=revision, url=url, catalog_id=raw.get("catalog_id"),
                files=files,
            )
        )
    return Manifest(entries=entries, skipped=list(data.get("skipped") or []))


def read_manifest(path: Path) -> Manifest:
    """Read and validate a manifest file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"no such manifest file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read manifest {path}: {exc}") from None
    return parse_manifest(text)
