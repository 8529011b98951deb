"""Resolve a :class:`JobSpec` into the files to fetch (URL, destination, size, hashes).

Every remote name is validated (``safe_join``) before anything touches the disk. Hub files go
to ``models_dir/<owner>/<repo>/<path>``, direct URLs to ``models_dir/direct/<filename>``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.download.errors import DownloadError
from tui.download.jobs import JobFile
from tui.download.sources import JobSpec, url_filename
from tui.errors import InvalidInputError, NotFoundError
from tui.hub.client import HubClient, HubFile, RepoListing, gguf_quant, validate_repo_id
from tui.safe_paths import safe_join, validate_remote_name


@dataclass(slots=True)
class Plan:
    """Resolved job: model root folder, files, registration info."""

    root: Path
    files: list[JobFile]
    source: str
    source_ref: str
    revision: str | None
    catalog_id: str | None = None
    name: str | None = None


def resolve_catalog(spec: JobSpec, catalog: Any) -> JobSpec:
    """Turn a ``catalog`` spec into an ``hf`` or ``url`` spec using the catalog entry."""
    entry = catalog.get(spec.catalog_id) if catalog is not None else None
    if entry is None:
        raise NotFoundError(f"no catalog entry {spec.catalog_id!r}",
                            hint="see 'modeldeck catalog' for ids")
    common = {"catalog_id": entry.id, "name": spec.name or entry.name,
              "connections": spec.connections, "limit_rate": spec.limit_rate}
    if entry.kind == "hf":
        paths = [f.path for f in entry.files_for(spec.quant)]
        return JobSpec(kind="hf", repo=entry.repo, revision=spec.revision or entry.revision,
                       files=paths or list(spec.files), include=list(entry.include or ()),
                       quant=spec.quant, **common)
    if entry.kind == "url":
        return JobSpec(kind="url", url=entry.url, sha256=spec.sha256 or entry.sha256, **common)
    raise InvalidInputError(f"catalog entry {entry.id} is a local model; nothing to download")


def select_hub_files(listing: RepoListing, spec: JobSpec) -> list[HubFile]:
    """Apply ``files`` / ``quant`` / ``include`` / ``exclude`` to a repo listing."""
    by_path = {f.path: f for f in listing.files}
    if spec.files:
        missing = [p for p in spec.files if p not in by_path]
        if missing:
            raise NotFoundError(f"{listing.repo}@{listing.revision} has no file {missing[0]!r}")
        chosen = [by_path[p] for p in spec.files]
    else:
        chosen = list(listing.files)
        quants = listing.quants()
        if spec.quant:
            wanted = spec.quant.upper()
            if wanted not in quants:
                known = ", ".join(sorted(quants)) or "none"
                raise NotFoundError(f"{listing.repo} has no {spec.quant} GGUF file",
                                    hint=f"available quants: {known}")
            chosen = quants[wanted]
        elif quants and not spec.include:
            if len(quants) > 1:
                raise InvalidInputError(
                    f"{listing.repo} has several GGUF quants; pick one",
                    hint=f"use {listing.repo}:QUANT with one of {', '.join(sorted(quants))}",
                )
            chosen = next(iter(quants.values()))
    if spec.include:
        chosen = [f for f in chosen if any(fnmatch.fnmatch(f.path, g) for g in spec.include)]
    if spec.exclude:
        chosen = [f for f in chosen if not any(fnmatch.fnmatch(f.path, g) for g in spec.exclude)]
    if not chosen:
        raise NotFoundError(f"no file of {listing.repo} matches the selection")
    return chosen


def plan_hub(spec: JobSpec, listing: RepoListing, models_dir: Path, hub: HubClient) -> Plan:
    """Files of a Hub job at the listing's commit."""
    repo = validate_repo_id(str(spec.repo))
    owner, name = repo.split("/")
    root = safe_join(models_dir, f"{owner}/{name}")
    files: list[JobFile] = []
    for f in select_hub_files(listing, spec):
        dest = safe_join(root, f.path)  # validates the remote name first
        sha256 = f.sha256
        wanted = spec.file_sha256.get(f.path)
        if wanted and sha256 and wanted != sha256:
            raise DownloadError(
                f"{repo}@{listing.commit[:12]} {f.path}: the Hub's sha256 {sha256[:12]}… differs "
                f"from the expected {wanted[:12]}…",
                hint="the repo changed since the manifest was written; pin --revision",
            )
        files.append(JobFile(
            path=f.path, url=hub.resolve_url(repo, listing.commit, f.path), dest=str(dest),
            size=f.size, sha256=sha256 or wanted, blob_sha1=None if sha256 else f.blob_id,
            commit_hash=listing.commit,
        ))
    return Plan(root=root, files=files, source="catalog" if spec.catalog_id else "hf",
                source_ref=repo, revision=listing.commit, catalog_id=spec.catalog_id,
                name=spec.name)


def plan_url(spec: JobSpec, models_dir: Path) -> Plan:
    """The single file of a direct-URL job."""
    url = str(spec.url)
    filename = spec.filename or url_filename(url)
    validate_remote_name(filename)
    if "/" in filename:
        raise InvalidInputError(f"file name {filename[:80]!r} must not contain '/'")
    root = models_dir / "direct"
    dest = safe_join(root, filename)
    return Plan(
        root=root,
        files=[JobFile(path=filename, url=url, dest=str(dest), sha256=spec.sha256)],
        source="catalog" if spec.catalog_id else "url", source_ref=url, revision=None,
        catalog_id=spec.catalog_id, name=spec.name,
    )


def quant_of(path: str) -> str | None:
    """Re-export for callers that group by quant."""
    return gguf_quant(path)


__all__ = ["DownloadError", "Plan", "plan_hub", "plan_url", "resolve_catalog",
           "select_hub_files"]
