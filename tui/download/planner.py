"""Resolve a :class:`JobSpec` into the files to fetch (URL, destination, size, hashes).

Every remote name is validated (``safe_join``) before anything touches the disk. Hub files go
to ``models_dir/<owner>/<repo>/<path>``, direct URLs to ``models_dir/direct/<filename>``; with
a kind ``folder`` (``organize_by_kind``, :mod:`tui.layout`) both go under
``models_dir/<folder>/`` (``llm/<owner>/<repo>/…``, ``lora/direct/…``). A CivitAI version's
model file goes to ``models_dir/[<kind folder>/]civitai/<model slug>-<version>/<file>``.

A destination already held by a different source (an installed model, another job's file or
partial, a file ModelDeck did not download) is never overwritten (:func:`place_files`): a
direct URL then goes to ``models_dir/direct/<source key>/<filename>``, a Hub file is refused.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui.download.errors import DownloadError
from tui.download.http import strip_query
from tui.download.jobs import JobFile
from tui.download.sources import JobSpec, url_filename
from tui.download.verify import git_blob_sha1_file
from tui.errors import InvalidInputError, NotFoundError
from tui.hub.client import HubClient, HubFile, RepoListing, gguf_quant, validate_repo_id
from tui.safe_paths import (
    check_name_bytes,
    fit_filename,
    safe_filename,
    safe_join,
    slugify,
    validate_remote_name,
)
from tui.store.records import ModelFile, ModelRecord

MAX_BLOB_COMPARE = 64 << 20  # a file on disk up to this size is compared by git blob id


STAGE_DIR = ".modeldeck-update"  # an update's new files, until all of them are verified
KEPT_DIR = ".modeldeck-prev"  # the files an update replaced, for ``update --rollback``


@dataclass(slots=True)
class Plan:
    """Resolved job: model root folder, files, registration info.

    ``installed`` lists the models that already hold all of it (nothing to download);
    ``update_of`` is the model an update replaces files of (``files`` are then only the
    changed ones, staged under ``<root>/.modeldeck-update/<commit>/``).
    """

    root: Path
    files: list[JobFile]
    source: str
    source_ref: str
    revision: str | None
    catalog_id: str | None = None
    name: str | None = None
    installed: list[ModelRecord] = field(default_factory=list)
    update_of: str | None = None


def resolve_catalog(spec: JobSpec, catalog: Any) -> JobSpec:
    """Turn a ``catalog`` spec into an ``hf`` or ``url`` spec using the catalog entry."""
    entry = catalog.get(spec.catalog_id) if catalog is not None else None
    if entry is None:
        raise NotFoundError(f"no catalog entry {spec.catalog_id!r}",
                            hint="see 'modeldeck catalog' for ids")
    common = {"catalog_id": entry.id, "name": spec.name or entry.name,
              "connections": spec.connections, "limit_rate": spec.limit_rate}
    if entry.source == "hf":
        paths = [f.path for f in entry.files_for(spec.quant)]
        return JobSpec(kind="hf", repo=entry.repo, revision=spec.revision or entry.revision,
                       files=paths or list(spec.files), include=list(entry.include or ()),
                       quant=spec.quant, **common)
    if entry.source == "url":
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


def plan_hub(spec: JobSpec, listing: RepoListing, models_dir: Path, hub: HubClient,
             folder: str | None = None) -> Plan:
    """Files of a Hub job at the listing's commit (under ``models_dir/<folder>`` if given)."""
    repo = validate_repo_id(str(spec.repo))
    owner, name = repo.split("/")
    root = safe_join(models_dir, f"{folder}/{owner}/{name}" if folder else f"{owner}/{name}")
    files: list[JobFile] = []
    for f in select_hub_files(listing, spec):
        dest = safe_join(root, f.path)  # validates the remote name first
        check_name_bytes(f.path)
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


def plan_url(spec: JobSpec, models_dir: Path, folder: str | None = None) -> Plan:
    """The single file of a direct-URL job (under ``models_dir/<folder>`` if given)."""
    url = str(spec.url)
    filename = spec.filename or url_filename(url)
    validate_remote_name(filename)
    if "/" in filename:
        raise InvalidInputError(f"file name {filename[:80]!r} must not contain '/'")
    filename = fit_filename(filename)
    root = safe_join(models_dir, f"{folder}/direct") if folder else models_dir / "direct"
    dest = safe_join(root, filename)
    return Plan(
        root=root,
        files=[JobFile(path=filename, url=url, dest=str(dest), sha256=spec.sha256)],
        source="catalog" if spec.catalog_id else "url", source_ref=url, revision=None,
        catalog_id=spec.catalog_id, name=spec.name,
    )


def plan_civitai(spec: JobSpec, version: Any, models_dir: Path, by_kind: bool = True) -> Plan:
    """The model file of a CivitAI version (a :class:`tui.civitai.client.CivitaiVersion`):
    the SafeTensor one unless ``--file`` names another or only a pickle exists and
    ``allow_pickle`` is set; CivitAI's SHA256 is the file's expected hash. Pins ``spec`` to
    the version and records its kind and base model in it (a resumed job plans nothing).
    ``by_kind`` (``organize_by_kind``) puts it under its kind folder."""
    from tui.kinds import FOLDERS

    chosen = version.pick(spec.files[0] if spec.files else None, allow_pickle=spec.allow_pickle)
    filename = safe_filename(chosen.name)
    validate_remote_name(filename)
    kind = version.kind
    under = f"{FOLDERS[kind]}/civitai" if by_kind else "civitai"
    slug = slugify(version.model_name, max_length=60)
    root = safe_join(models_dir, f"{under}/{slug}-{version.id}")
    dest = safe_join(root, filename)
    spec.civitai_pinned, spec.model_kind, spec.base_model = version.id, kind, version.base_model
    return Plan(
        root=root,
        files=[JobFile(path=filename, url=chosen.download_url, dest=str(dest),
                       sha256=chosen.sha256)],
        source="civitai", source_ref=version.ref, revision=None,
        name=spec.name or f"{version.model_name} {version.name}"[:120],
    )


def installed_match(plan: Plan, spec: JobSpec, models: list[ModelRecord],
                    unchanged: Callable[[ModelFile], bool]) -> list[ModelRecord]:
    """The installed models that already hold every file of ``plan``, else ``[]``.

    ``models`` are the installed models of the plan's source. A Hub file matches a recorded
    file at its destination from the same commit (and the same sha256 when the Hub gives
    one); a URL file a recorded file of the same URL (and the same sha256 when one is
    asked for). Each must still be the file recorded (``unchanged``). On a match each planned
    file's ``dest`` becomes the recorded path that holds it.
    """
    found: dict[str, ModelRecord] = {}
    at: dict[int, str] = {}
    for i, jf in enumerate(plan.files):
        hit = None
        for model in models:
            for f in model.files:
                if spec.kind == "hf":
                    same = f.path == jf.dest and model.revision == plan.revision and (
                        not jf.sha256 or (f.sha256 or "").lower() == jf.sha256.lower())
                else:
                    same = not jf.sha256 or (f.sha256 or "").lower() == jf.sha256.lower()
                if same and unchanged(f):
                    hit, at[i] = model, f.path
                    break
            if hit is not None:
                break
        if hit is None:
            return []
        found[hit.id] = hit
    for i, path in at.items():
        plan.files[i].dest = path
    return list(found.values())


def update_target(plan: Plan, models: list[ModelRecord]) -> ModelRecord | None:
    """The installed model of the plan's repo, at another commit, made of exactly the
    plan's files: pulling the repo again is then an update of it."""
    if plan.revision is None or "://" in plan.source_ref:
        return None
    dests = {jf.dest for jf in plan.files}
    for model in models:
        if model.revision and model.revision != plan.revision and (
                {f.path for f in model.files} == dests):
            return model
    return None


def stage_update(plan: Plan, model: ModelRecord, unchanged: Callable[[ModelFile], bool]
                 ) -> Plan:
    """Turn ``plan`` (the repo at its new commit) into an update of ``model``: only the files
    whose content changed are fetched, into ``<root>/.modeldeck-update/<commit>/<path>``; the
    installed files stay where they are until every new one is verified.

    A recorded file that is no longer the file ModelDeck recorded is refused (one line).
    """
    recorded = {f.path: f for f in model.files}
    stage = plan.root / STAGE_DIR / str(plan.revision)[:12]
    changed: list[JobFile] = []
    for jf in plan.files:
        rec = recorded[jf.dest]
        dest = Path(jf.dest)
        present = dest.exists() or dest.is_symlink()
        if present and not unchanged(rec):
            raise DownloadError(
                f"{dest} changed since ModelDeck recorded it; not updating {model.id}",
                hint=f"move it away or `modeldeck rm {model.id}`, then pull again")
        if present and _same_content(rec, jf, dest):
            continue
        jf.dest = str(stage / dest.relative_to(plan.root))
        changed.append(jf)
    plan.files = changed
    plan.update_of = model.id
    return plan


def _same_content(rec: ModelFile, jf: JobFile, dest: Path) -> bool:
    if jf.sha256:
        return (rec.sha256 or "").lower() == jf.sha256.lower()
    if jf.blob_sha1 and rec.size <= MAX_BLOB_COMPARE:
        return git_blob_sha1_file(dest) == jf.blob_sha1.lower()
    return False


@dataclass(frozen=True, slots=True)
class Claim:
    """Who holds, or is fetching into, a destination path, and from which source.

    ``holder`` reads after "already holds" (``model qwen-q4``, ``job 1a2b…``); ``source`` is
    a URL or ``owner/repo@commit`` (None: unknown); ``sha256`` the content's, if known;
    ``path`` the file on disk, if there is one (small files are compared by git blob id).
    """

    holder: str
    source: str | None = None
    sha256: str | None = None
    hint: str | None = None
    path: Path | None = None


def file_source(spec: JobSpec, jf: JobFile) -> str:
    """Where a job's file comes from: ``owner/repo@commit`` for the Hub, else its URL."""
    if spec.kind == "hf":
        return f"{spec.repo}@{jf.commit_hash}"
    return jf.url


def same_source(claim: Claim, source: str, jf: JobFile) -> bool:
    """Both sha256 known: equal content; a small Hub file: the same git blob id on disk;
    otherwise the same URL or repo commit."""
    if claim.sha256 and jf.sha256:
        return claim.sha256.lower() == jf.sha256.lower()
    if claim.source is not None and claim.source == source:
        return True
    path = claim.path
    if jf.blob_sha1 and path is not None and path.is_file() and not path.is_symlink() \
            and path.stat().st_size <= MAX_BLOB_COMPARE:
        return git_blob_sha1_file(path) == jf.blob_sha1.lower()
    return False


def source_key(source: str, sha256: str | None) -> str:
    """A short, stable folder name for one source (12 hex digits)."""
    return hashlib.sha256(f"{source}\n{sha256 or ''}".encode()).hexdigest()[:12]


def place_files(plan: Plan, spec: JobSpec, claims_at: Callable[[Path], list[Claim]]) -> Plan:
    """Keep every file of ``plan`` off paths held by a different source.

    Two sources collide when their files would have the same path. A direct-URL file then
    moves to ``<root>/<source key>/<filename>`` (stable for that URL and sha256); a Hub file
    (whose path is the repo's layout) is refused with one line, as is a URL file whose
    second path is taken too. Same-source claims are fine: that is a resume or a re-pull.
    """
    for jf in plan.files:
        source = file_source(spec, jf)
        dest = Path(jf.dest)
        others = [c for c in claims_at(dest) if not same_source(c, source, jf)]
        if others and spec.kind == "url":
            moved = dest.parent / source_key(source, jf.sha256) / dest.name
            if not [c for c in claims_at(moved) if not same_source(c, source, jf)]:
                jf.dest = str(moved)
                continue
        if others:
            held = others[0]
            origin = f" from {_shown_source(held.source)}" if held.source else ""
            raise DownloadError(
                f"{dest} already holds {held.holder}{origin}; not overwriting it with "
                f"{_shown_source(source)}",
                hint=held.hint or "move it away first or set MODELDECK_MODELS_DIR elsewhere",
            )
    return plan


def _shown_source(source: str) -> str:
    """A URL without its query, or ``owner/repo@<12 hex>``; at most 120 characters."""
    if "://" in source:
        text = strip_query(source)
    else:
        repo, _, commit = source.partition("@")
        text = f"{repo}@{commit[:12]}" if commit else repo
    return text if len(text) <= 120 else text[:120] + "…"


def quant_of(path: str) -> str | None:
    """Re-export for callers that group by quant."""
    return gguf_quant(path)


__all__ = ["Claim", "DownloadError", "Plan", "place_files", "plan_civitai", "plan_hub",
           "plan_url",
           "resolve_catalog", "select_hub_files"]
