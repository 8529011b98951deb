"""Pod manifests: the installed set with sources, revisions and sha256, to rebuild a pod.

``export_manifest`` writes what is installed; ``parse_manifest`` validates a manifest
completely (schema, repo ids, URLs, file names, sha256) before anything is queued, so a bad
manifest changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui.errors import InvalidInputError
from tui.metadata.kinds import MODEL_FORMATS
from tui.safe_paths import validate_remote_name
from tui.store import Inventory, ModelRecord

MANIFEST_VERSION = 1
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_URL_RE = re.compile(r"^https?://[^\s/]+/\S*$")
_CIVITAI_RE = re.compile(r"^civitai:[0-9]{1,12}@[0-9]{1,12}$")
_REV_RE = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
MAX_MANIFEST_BYTES = 16 << 20
MAX_MODELS = 10_000
MAX_FILES = 10_000  # per model
MAX_DEPTH = 32  # a manifest needs 5 levels
MAX_STRING = 2048
MAX_FILE_SIZE = 1 << 50


@dataclass(slots=True)
class ManifestFile:
    """A file of a manifest entry, relative to the model's repo (or the URL's file name)."""

    path: str
    size: int | None
    sha256: str | None


@dataclass(slots=True)
class ManifestEntry:
    """One model to fetch: from a Hub repo (``repo`` + ``revision``), a direct ``url``, or a
    CivitAI version (``url`` is then ``civitai:<model>@<version>``)."""

    id: str
    name: str
    format: str
    source: str  # "hf", "url" or "civitai"
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


def _in_revision(model: ModelRecord, file_path: str) -> bool:
    """Whether a file is of the model's own revision (a Hugging Face cache model also lists
    its other cached revisions' files, which the manifest leaves out)."""
    if model.source != "hf-cache" or not model.revision:
        return True
    parts = Path(file_path).parts
    return "snapshots" not in parts or parts[parts.index("snapshots") + 1:][:1] == (
        model.revision,)


def _repo_relative(model: ModelRecord, file_path: str, models_dir: Path | None) -> str:
    """The file's path inside its Hub repo (files live under models_dir/[kind/]owner/name/...)."""
    if model.source == "hf-cache":
        parts = Path(file_path).parts
        if "snapshots" in parts:
            i = parts.index("snapshots")
            return Path(*parts[i + 2 :]).as_posix()
    if models_dir is not None and model.source_ref and "/" in model.source_ref:
        from tui.layout import hub_root_of

        repo_root = hub_root_of(models_dir, model.source_ref, [file_path])
        if repo_root is not None:
            return Path(file_path).relative_to(repo_root).as_posix()
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
                    for f in model.files if _in_revision(model, f.path)
                ],
            )
        elif model.source in ("url", "civitai") and model.source_ref:
            entry = ManifestEntry(
                id=model.id, name=model.name, format=model.format, source=model.source,
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


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _string(raw: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    """``raw[key]`` if it is a string (or absent/null when not ``required``)."""
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise _fail(f"{where}.{key}", f"must be a string, got {_kind(value)}")
    if len(value) > MAX_STRING:
        raise _fail(f"{where}.{key}", f"is longer than {MAX_STRING} characters")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise _fail(f"{where}.{key}", "contains control characters")
    return value


def _check_depth(data: Any) -> None:
    """Refuse documents nested deeper than :data:`MAX_DEPTH` (no recursion here either)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _fail("is nested too deeply", f"the limit is {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def parse_manifest(text: str) -> Manifest:
    """Validate manifest JSON text; raises :class:`InvalidInputError` on the first problem.

    Bounded before anything is queued: nesting depth, number of models and of files per model,
    string lengths, and the type of every field (``null`` or a number where a name goes is
    refused, never turned into a string).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail("is not valid JSON", f"line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise _fail("is nested too deeply", f"the limit is {MAX_DEPTH} levels") from None
    _check_depth(data)
    version = data.get("modeldeck_manifest") if isinstance(data, dict) else None
    if type(version) is not int or version != MANIFEST_VERSION:
        raise _fail("header", f"expected \"modeldeck_manifest\": {MANIFEST_VERSION}")
    models = data.get("models")
    if not isinstance(models, list):
        raise _fail("header", f"\"models\" must be a list, got {_kind(models)}")
    if len(models) > MAX_MODELS:
        raise InvalidInputError(
            f"manifest lists {len(models):,} models; the limit is {MAX_MODELS:,}",
            hint="split it into several manifests; nothing was imported",
        )
    entries = []
    ids: set[str] = set()
    for i, raw in enumerate(models):
        entries.append(_entry(raw, f"models[{i}]", ids))
    skipped = data.get("skipped") or []
    if not isinstance(skipped, list):
        raise _fail("header", f"\"skipped\" must be a list, got {_kind(skipped)}")
    kept = [
        {"id": str(s["id"])[:100], "reason": str(s.get("reason", ""))[:200]}
        for s in skipped[:MAX_MODELS] if isinstance(s, dict) and isinstance(s.get("id"), str)
    ]
    return Manifest(entries=entries, skipped=kept)


def _entry(raw: Any, where: str, ids: set[str]) -> ManifestEntry:
    if not isinstance(raw, dict):
        raise _fail(where, f"must be an object, got {_kind(raw)}")
    mid = _string(raw, "id", where) or ""
    if not _ID_RE.match(mid):
        raise _fail(where, f"bad id {mid[:40]!r}")
    if mid in ids:
        raise _fail(where, f"duplicate id {mid!r}")
    ids.add(mid)
    name = _string(raw, "name", where, required=False)
    fmt = raw.get("format")
    if fmt not in MODEL_FORMATS:
        raise _fail(where, f"unknown format {_short(fmt)} (use {', '.join(MODEL_FORMATS)})")
    source = raw.get("source")
    if source not in ("hf", "url", "civitai"):
        raise _fail(where, f"unknown source {_short(source)} (use hf, url or civitai)")
    repo = revision = url = None
    if source == "hf":
        repo = _string(raw, "repo", where)
        if not _REPO_RE.match(repo or ""):
            raise _fail(where, f"bad repo {str(repo)[:60]!r}")
        revision = _string(raw, "revision", where, required=False)
        if revision is not None and (not _REV_RE.match(revision) or ".." in revision):
            raise _fail(where, f"bad revision {revision[:60]!r}")
    elif source == "civitai":
        url = _string(raw, "url", where)
        if not _CIVITAI_RE.match(url or ""):
            raise _fail(where, f"bad CivitAI version {str(url)[:60]!r} (civitai:<model>@<version>)")
    else:
        url = _string(raw, "url", where)
        if not _URL_RE.match(url or ""):
            raise _fail(where, f"bad url {str(url)[:60]!r}")
    catalog_id = _string(raw, "catalog_id", where, required=False)
    if catalog_id is not None and not _ID_RE.match(catalog_id):
        raise _fail(where, f"bad catalog_id {catalog_id[:40]!r}")
    files_raw = raw.get("files")
    if not isinstance(files_raw, list) or not files_raw:
        raise _fail(where, "\"files\" must be a non-empty list")
    if len(files_raw) > MAX_FILES:
        raise _fail(where, f"lists {len(files_raw):,} files; the limit is {MAX_FILES:,}")
    if source in ("url", "civitai") and len(files_raw) != 1:
        raise _fail(where, f"a {source} entry must list exactly one file")
    files: list[ManifestFile] = []
    seen: set[str] = set()
    for j, f in enumerate(files_raw):
        files.append(_file(f, f"{where}.files[{j}]", seen))
    return ManifestEntry(
        id=mid, name=(name or mid)[:200], format=fmt, source=source, repo=repo,
        revision=revision, url=url, catalog_id=catalog_id, files=files,
    )


def _file(f: Any, where: str, seen: set[str]) -> ManifestFile:
    if not isinstance(f, dict):
        raise _fail(where, f"must be an object, got {_kind(f)}")
    name = f.get("path")
    if not isinstance(name, str):
        raise _fail(f"{where}.path", f"must be a string, got {_kind(name)}")
    try:
        validate_remote_name(name)
    except InvalidInputError as exc:
        raise _fail(where, str(exc)) from None
    if name in seen:
        raise _fail(where, f"duplicate file {name[:80]!r}")
    seen.add(name)
    sha = f.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not _SHA256_RE.match(sha)):
        raise _fail(where, f"bad sha256 for {name[:80]!r} (need 64 lowercase hex digits)")
    size = f.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)
                             or not 0 <= size <= MAX_FILE_SIZE):
        raise _fail(where, f"bad size for {name[:80]!r} (a whole number of bytes)")
    return ManifestFile(name, size, sha)


def _short(value: Any) -> str:
    return repr(value)[:40] if isinstance(value, str) else _kind(value)


def read_manifest(path: Path) -> Manifest:
    """Read (at most :data:`MAX_MANIFEST_BYTES`) and validate a manifest file."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(MAX_MANIFEST_BYTES + 1) if size <= MAX_MANIFEST_BYTES else b""
            size = max(size, len(raw))
    except FileNotFoundError:
        raise InvalidInputError(f"no such manifest file: {path}") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    if size > MAX_MANIFEST_BYTES:
        raise InvalidInputError(
            f"manifest {path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB",
            hint="is it a manifest? nothing was imported",
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInputError(f"manifest {path} is not UTF-8 text",
                                hint="nothing was imported") from None
    return parse_manifest(text)
