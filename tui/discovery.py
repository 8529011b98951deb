"""Discovery: find models on disk and register them with their kind.

Models are GGUF files and split sets (with their vision projectors), safetensors files and
folders (transformers, MLX, PEFT, diffusers), ONNX, TFLite and Core ML models and PyTorch
pickles (see :func:`tui.registration.group_model_files`). A vocabulary-only GGUF is a
tokenizer, not a model: the scan names it and leaves it out. Roots are the models directory,
the configured extra folders and (optionally) the Hugging Face cache, where the revisions of
one repo are one model with its revisions listed (``extra["revisions"]``). Rescans are
incremental: a file whose size and mtime are unchanged is not read again. The same file found
twice (same size and hash, different inode) is a duplicate and the space it wastes is
reported.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui import kinds
from tui.errors import InvalidInputError, MetadataError, ModelDeckError, NotFoundError
from tui.metadata.files import is_regular_file, open_regular
from tui.metadata.types import IGNORED_KEY, ModelMetadata, sanitize
from tui.registration import (
    MLPACKAGE,
    ONNX_DATA_SUFFIXES,
    UNPAIRED_KEY,
    WEIGHT_SUFFIXES,
    build_record,
    display_name,
    file_identity,
    group_model_files,
    is_projector_name,
    is_single_file,
    read_metadata,
    split_parts,
    unique_id,
    weights_folder,
)
from tui.safe_paths import slugify
from tui.settings import Settings
from tui.store import Inventory, ModelFile, ModelRecord

SAMPLE_BYTES = 1 << 20  # bytes read at each of three places for the sampled hash
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
SKIP_SUFFIXES = (".part", ".tmp", ".incomplete", ".lock")
FOUND_SUFFIXES = (*WEIGHT_SUFFIXES, *ONNX_DATA_SUFFIXES)  # files a scan looks at
TOKENIZER_NOTE = "vocabulary only (tokenizer), not a model; not registered"
_MAX_ERROR_CHARS = 500
# Errors a single record can raise while being written (a value SQLite cannot hold, ...):
# that record is reported and skipped; anything else (a broken database) stops the scan.
_RECORD_ERRORS = (
    OverflowError,
    ValueError,
    TypeError,
    sqlite3.DataError,
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
)


@dataclass(slots=True)
class Root:
    """A folder to scan and the source label its models get."""

    path: Path
    source: str  # "scan" or "hf-cache"


@dataclass(slots=True)
class DuplicateGroup:
    """Copies of one file: same size and hash, stored more than once."""

    size: int
    key: str  # sha256 (verified) or "sample:<hash>" (first/middle/last MiB)
    verified: bool
    paths: list[str]
    wasted_bytes: int


@dataclass(slots=True)
class ScanReport:
    """What a scan found and did."""

    roots: list[str] = field(default_factory=list)
    models: list[ModelRecord] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # values a file read dropped
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    files_read: int = 0
    files_cached: int = 0
    seconds: float = 0.0

    @property
    def wasted_bytes(self) -> int:
        """Space taken by duplicate copies."""
        return sum(d.wasted_bytes for d in self.duplicates)

    @property
    def kinds(self) -> dict[str, int]:
        """How many of the models found are of each kind (most first)."""
        counts: dict[str, int] = {}
        for m in self.models:
            counts[m.kind] = counts.get(m.kind, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "roots": self.roots,
            "models": [m.id for m in self.models],
            "added": self.added,
            "updated": self.updated,
            "missing": self.missing,
            "errors": [{"path": p, "error": e} for p, e in self.errors],
            "warnings": [{"path": p, "warning": w} for p, w in self.warnings],
            "duplicates": [
                {
                    "size": d.size,
                    "key": d.key,
                    "verified": d.verified,
                    "paths": d.paths,
                    "wasted_bytes": d.wasted_bytes,
                }
                for d in self.duplicates
            ],
            "wasted_bytes": self.wasted_bytes,
            "kinds": self.kinds,
            "files_read": self.files_read,
            "files_cached": self.files_cached,
            "seconds": round(self.seconds, 3),
        }


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder (honours ``HF_HUB_CACHE``/``HF_HOME``)."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = Path(env.get("HF_HOME") or Path(env.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface")
    return home.expanduser() / "hub"


def roots_for(settings: Settings) -> list[Root]:
    """The folders ModelDeck manages: models dir, extra folders, HF cache (if enabled)."""
    roots = [Root(settings.models_dir, "scan")]
    roots += [Root(p, "scan") for p in settings.extra_dirs]
    if settings.scan_hf_cache:
        roots.append(Root(hf_cache_dir(), "hf-cache"))
    return roots


def is_within_roots(path: Path, settings: Settings) -> bool:
    """True if ``path`` lies inside one of the managed folders."""
    target = Path(path).expanduser().resolve()
    for root in roots_for(settings):
        try:
            if target.is_relative_to(root.path.expanduser().resolve()):
                return True
        except OSError:
            continue
    return False


def sample_hash(path: Path, size: int) -> str:
    """sha256 over the size and 1 MiB at the start, middle and end (cheap identity check)."""
    h = hashlib.sha256(str(size).encode())
    with open_regular(path) as f:
        middle = max(0, size // 2 - SAMPLE_BYTES // 2)
        for offset in sorted({0, middle, max(0, size - SAMPLE_BYTES)}):
            f.seek(offset)
            h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def full_sha256(path: Path, chunk: int = 8 << 20) -> str:
    """sha256 of a whole file."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def walk_entries(root: Path) -> Iterator[tuple[os.DirEntry[str], bool]]:
    """Every entry under ``root`` that is not a folder, hidden names skipped, symlinked
    folders not followed; with whether it lies inside a ``.mlpackage``."""
    stack = [(root, False)]
    while stack:
        folder, in_package = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    inside = in_package or entry.name.lower().endswith(MLPACKAGE)
                    stack.append((Path(entry.path), inside))
                    continue
            except OSError:
                continue
            yield entry, in_package


def _walk_files(root: Path) -> Iterator[Path]:
    """Model files under ``root`` (and every file inside a ``.mlpackage``), skipping hidden
    folders and partial downloads."""
    for entry, in_package in walk_entries(root):
        name = entry.name.lower()
        try:
            if entry.is_file() and (in_package or name.endswith(FOUND_SUFFIXES)) \
                    and not name.endswith(SKIP_SUFFIXES):
                yield Path(entry.path)
        except OSError:
            continue


@dataclass(slots=True)
class _Found:
    fmt: str
    main: Path
    members: list[Path]
    source: str
    source_ref: str | None = None
    revision: str | None = None
    sha256: dict[Path, str] = field(default_factory=dict)
    # Hugging Face cache: the same model in other revisions (recorded, not read) and every
    # revision's commit, refs and files.
    other_files: list[Path] = field(default_factory=list)
    revisions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def recorded(self) -> list[Path]:
        """Every file the model's record lists."""
        return [*self.members, *self.other_files]


def _hf_cache_models(cache: Path) -> Iterator[_Found]:
    """Models inside a Hugging Face cache, via ``huggingface_hub.scan_cache_dir``: a model
    cached in several revisions is one model, its main revision the one ``refs/main`` (else
    another ref, else the newest) points at, the others listed with their refs (none:
    detached)."""
    if not cache.is_dir():
        return
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(cache)
    except Exception:  # a corrupt cache must not break discovery; reported per repo below
        return
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        shas: dict[Path, str] = {}
        by_key: dict[str, list[tuple[Any, str, Path, list[Path]]]] = {}
        for rev in repo.revisions:
            paths = [Path(f.file_path) for f in rev.files]
            for f in rev.files:
                blob_name = Path(f.blob_path).name
                if _HEX64.match(blob_name):  # LFS blobs are named by their sha256
                    shas[Path(f.file_path)] = blob_name
            wanted = [p for p in paths if p.name.lower().endswith(FOUND_SUFFIXES)
                      or MLPACKAGE in str(p).lower()]
            for fmt, main, members in group_model_files(wanted, same_repo=True):
                key = str(main.relative_to(rev.snapshot_path)) if main.is_relative_to(
                    rev.snapshot_path) else str(main)
                by_key.setdefault(key, []).append((rev, fmt, main, members))
        for entries in by_key.values():
            entries.sort(key=lambda e: ("main" not in e[0].refs, not e[0].refs,
                                        -e[0].last_modified, e[0].commit_hash))
            rev, fmt, main, members = entries[0]
            revisions = [
                {
                    "commit": r.commit_hash,
                    "refs": sorted(r.refs),
                    "detached": not r.refs,
                    "files": [str(m.relative_to(r.snapshot_path)) for m in ms
                              if m.is_relative_to(r.snapshot_path)],
                }
                for r, _, _, ms in entries
            ]
            yield _Found(
                fmt, main, members, "hf-cache", repo.repo_id, rev.commit_hash, shas,
                other_files=[m for _, _, _, ms in entries[1:] for m in ms],
                revisions=revisions if len(entries) > 1 else [],
            )


@dataclass(slots=True)
class _ScanState:
    """What one scan pass shares between its items."""

    report: ScanReport
    cache: dict[str, dict[str, Any]]
    cache_updates: list[tuple[str, dict[str, Any]]]
    existing: dict[str, ModelRecord]
    taken: set[str]


class Scanner:
    """Scans the managed folders and keeps the inventory in step with what is on disk."""

    def __init__(
        self,
        settings: Settings,
        inventory: Inventory,
        *,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.inventory = inventory
        self.progress = progress

    def scan(
        self,
        only: Path | None = None,
        *,
        verify_duplicates: bool = False,
        skip: Callable[[Path], bool] | None = None,
    ) -> ScanReport:
        """Scan every root (or only the folder ``only``, which must be inside a root).

        ``skip(path)`` true for a file leaves its model out of this pass (neither read nor
        marked missing): a file still being copied, or one a download is writing.
        """
        started = time.perf_counter()
        report = ScanReport()
        roots = roots_for(self.settings)
        managed = [r.path for r in roots]  # never one model's folder
        if only is not None:
            only = Path(only).expanduser()
            if not only.exists():
                raise NotFoundError(f"no such folder: {only}")
            if not only.is_dir():
                raise InvalidInputError(f"not a folder: {only}")
            if not os.access(only, os.R_OK | os.X_OK):
                raise InvalidInputError(f"cannot read folder {only}: permission denied")
            if not is_within_roots(only, self.settings):
                raise InvalidInputError(
                    f"{only} is outside the folders ModelDeck manages",
                    hint="add it to extra_dirs (MODELDECK_EXTRA_DIRS or the config file), "
                    "or register one model with 'modeldeck add local PATH'",
                )
            source = "scan"
            for r in roots:
                if only.resolve().is_relative_to(r.path.expanduser().resolve()):
                    source = r.source
            roots = [Root(only, source)]
        report.roots = [str(r.path) for r in roots]

        found: list[_Found] = []
        for root in roots:
            if root.source == "hf-cache":
                found.extend(_hf_cache_models(root.path))
            elif root.path.is_dir():
                files = list(_walk_files(root.path))
                for fmt, main, members in group_model_files(files, roots=managed):
                    found.append(_Found(fmt, main, members, root.source))
        if skip is not None:
            found = [f for f in found if not any(skip(m) for m in (f.main, *f.recorded))]

        cache = self.inventory.scan_cache_all()
        cache_updates: list[tuple[str, dict[str, Any]]] = []
        existing = {m.path: m for m in self.inventory.list_models()}
        taken = set(m.id for m in existing.values())
        records: list[ModelRecord] = []
        seen_paths: set[str] = set()

        state = _ScanState(report, cache, cache_updates, existing, taken)
        for item in found:
            key = str(item.main)
            seen_paths.add(key)
            try:
                record = self._scan_item(item, state)
            except Exception as exc:  # one bad file never aborts the scan
                report.errors.append((key, _one_line(exc)))
                continue
            if record is not None:
                records.append(record)

        # Models under a scanned root that are gone from disk are marked missing.
        scanned_roots = [Path(r).expanduser().resolve() for r in report.roots]
        gone = []
        for path, model in existing.items():
            if path in seen_paths or model.status == "deleting":
                continue
            if model.source not in ("scan", "hf-cache", "hf", "url", "catalog", "local",
                                    "civitai"):
                continue
            under = any(_is_relative(Path(path), root) for root in scanned_roots)
            # A FIFO, socket or device now at the path is not the model: missing, never read.
            if under and not (is_regular_file(path) or os.path.isdir(path)):
                gone.append(model.id)

        # Models registered once per Hugging Face cache revision (before revisions were one
        # model) whose files a model now lists: their rows go, their files stay recorded.
        merged = {str(p) for item in found for p in item.other_files}
        kept = {r.id for r in records}
        stale = [m.id for path, m in existing.items()
                 if path in merged and m.source == "hf-cache" and m.id not in kept]
        if stale:
            self.inventory.delete_models(stale)

        write = [r for r in records if r.id in set(report.added) | set(report.updated)]
        failed = self._register(write, report) if write else set()
        if failed:  # reported by _register; tried again at the next scan
            records = [r for r in records if r.id not in failed]
            report.added = [i for i in report.added if i not in failed]
            report.updated = [i for i in report.updated if i not in failed]
        if cache_updates:
            self.inventory.scan_cache_put_many(cache_updates)
        for model_id in gone:
            self.inventory.set_status(model_id, "missing")
        report.missing = gone
        report.models = records
        report.duplicates = self.find_duplicates(
            self.inventory.list_models(status="installed"), verify=verify_duplicates
        )
        report.seconds = time.perf_counter() - started
        return report

    def _scan_item(self, item: _Found, state: _ScanState) -> ModelRecord | None:
        """Read (or take from the cache) one found model; its record, or None if skipped."""
        report, cache, existing = state.report, state.cache, state.existing
        key = str(item.main)
        if not all(_utf8_name(p) for p in (item.main, *item.members)):
            # SQLite (and the terminal) take UTF-8 text only.
            report.errors.append((
                _printable(key), "file name is not valid UTF-8; rename it to register it"
            ))
            return None
        try:
            stats = {m: m.stat() for m in item.recorded}
        except OSError as exc:
            report.errors.append((key, f"cannot stat: {exc.strerror}"))
            return None
        err = _check_split(item)
        if err:
            report.errors.append((key, err))
            return None
        size = sum(s.st_size for s in stats.values())
        mtime = max(s.st_mtime_ns for s in stats.values())
        if item.fmt in ("safetensors", "pytorch"):
            cfg = weights_folder(item.main) / "config.json"
            if cfg.exists():
                mtime = max(mtime, cfg.stat().st_mtime_ns)
        cached = cache.get(key)
        meta: ModelMetadata | None = None
        # A model once registered with a managed root as its folder keeps its id.
        prior = existing.get(key) or existing.get(str(weights_folder(item.main)))
        if _unchanged(prior, key, item, stats):
            report.files_cached += 1  # as registered (a download's hashes and checks kept)
            return prior
        if cached and cached["size"] == size and cached["mtime_ns"] == mtime:
            report.files_cached += 1
            if cached["error"]:
                report.errors.append((key, cached["error"]))
                return None
            meta = (
                sanitize(ModelMetadata.from_dict(cached["metadata"]))
                if cached["metadata"]
                else None
            )
            _note_unpaired(report, item, meta)
            if prior is not None and prior.status == "installed" and prior.path == key:
                return prior
        else:
            report.files_read += 1
            if self.progress:
                self.progress(key)
            try:
                meta = read_metadata(item.fmt, item.main, item.members)
            except MetadataError as exc:
                report.errors.append((key, str(exc)))
                state.cache_updates.append(
                    (key, {"size": size, "mtime_ns": mtime, "error": str(exc)})
                )
                return None
            except OSError as exc:
                report.errors.append((key, f"cannot read: {exc.strerror or exc}"))
                return None
            state.cache_updates.append(
                (key, {"size": size, "mtime_ns": mtime, "metadata": meta.to_dict()})
            )
            ignored = meta.extra.get(IGNORED_KEY)
            if ignored:
                report.warnings.append((key, _ignored_text(ignored)))
            _note_unpaired(report, item, meta)
        if meta is not None and meta.kind == kinds.TOKENIZER and prior is None:
            report.warnings.append((key, TOKENIZER_NOTE))  # downloaded ones stay recorded
            return None
        if meta is not None and item.revisions:
            meta.extra["revisions"] = item.revisions
        if prior is not None:
            # Keep what a download or the user recorded (source, revision, hashes, ids).
            old_sha = {f.path: f.sha256 for f in prior.files}
            record = build_record(
                model_id=prior.id, fmt=item.fmt, path=item.main,
                files=self._files(item, stats, old_sha), metadata=meta,
                source=prior.source, source_ref=prior.source_ref, revision=prior.revision,
                catalog_id=prior.catalog_id, name=prior.name,
            )
            record.installed_at = prior.installed_at
            record.last_used_at = prior.last_used_at
            record.load_seconds = prior.load_seconds
            record.tokens_per_s = prior.tokens_per_s
            record.prompt_tokens_per_s = prior.prompt_tokens_per_s
            record.ttft_ms = prior.ttft_ms
            report.updated.append(prior.id)
        else:
            base = slugify(
                f"{item.source_ref.split('/')[-1]}-{display_name(item.main, item.fmt)}"
                if item.source == "hf-cache" and item.fmt == "gguf"
                else (item.source_ref.split("/")[-1] if item.source_ref else
                      display_name(item.main, item.fmt))
            )
            record = build_record(
                model_id=unique_id(base, state.taken), fmt=item.fmt, path=item.main,
                files=self._files(item, stats, {}), metadata=meta,
                source=item.source, source_ref=item.source_ref, revision=item.revision,
            )
            report.added.append(record.id)
        return record

    def _register(self, records: list[ModelRecord], report: ScanReport) -> set[str]:
        """Write ``records`` in one transaction; if a bad value makes that fail, write them one
        by one so only the bad ones are lost (reported per path). Returns the failed ids."""
        try:
            self.inventory.upsert_models(records)
            return set()
        except _RECORD_ERRORS:
            pass
        failed: set[str] = set()
        for record in records:
            try:
                self.inventory.upsert_model(record)
            except _RECORD_ERRORS as exc:
                failed.add(record.id)
                report.errors.append((record.path, f"cannot register: {_one_line(exc)}"))
        return failed

    @staticmethod
    def _files(
        item: _Found, stats: dict[Path, os.stat_result], old_sha: dict[str, str | None]
    ) -> list[ModelFile]:
        files = [
            ModelFile(
                path=str(m),
                size=stats[m].st_size,
                sha256=item.sha256.get(m) or old_sha.get(str(m)),
                **file_identity(stats[m]),
            )
            for m in item.recorded
        ]
        if item.fmt == "safetensors" and not is_single_file(item.main):
            for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
                extra = weights_folder(item.main) / name
                if extra.is_file() and all(f.path != str(extra) for f in files):
                    st = extra.stat()
                    files.append(ModelFile(str(extra), st.st_size, None, **file_identity(st)))
        return files

    def find_duplicates(
        self, models: list[ModelRecord], *, verify: bool = False
    ) -> list[DuplicateGroup]:
        """Weight files stored more than once (hard links and symlinks to one inode excluded)."""
        by_size: dict[int, list[tuple[str, str | None]]] = {}
        for model in models:
            for f in model.files:
                if f.path.lower().endswith(WEIGHT_SUFFIXES) and f.size > 0:
                    by_size.setdefault(f.size, []).append((f.path, f.sha256))
        groups: list[DuplicateGroup] = []
        cache = self.inventory.scan_cache_all()
        cache_updates = []
        for size, items in by_size.items():
            if len(items) < 2:
                continue
            by_key: dict[str, list[str]] = {}
            verified_keys: set[str] = set()
            for path, sha in items:
                key = sha
                if key is None and verify:
                    try:
                        key = full_sha256(Path(path))
                    except (OSError, MetadataError):
                        continue
                if key is not None:
                    verified_keys.add(key)
                else:
                    c = cache.get(path)
                    if c and c["size"] == size and c.get("sample_hash"):
                        key = "sample:" + c["sample_hash"]
                    else:
                        try:
                            sample = sample_hash(Path(path), size)
                        except (OSError, MetadataError):
                            continue
                        key = "sample:" + sample
                        if c:
                            cache_updates.append((path, dict(c, sample_hash=sample)))
                by_key.setdefault(key, []).append(path)
            # A known sha256 and a sampled hash of the same bytes would not meet; settle that
            # by sampling the hashed files too when sampled keys exist in this size class.
            sampled = [k for k in by_key if k.startswith("sample:")]
            if sampled and verified_keys:
                for vkey in list(verified_keys):
                    paths = by_key.get(vkey, [])
                    if not paths:
                        continue
                    try:
                        skey = "sample:" + sample_hash(Path(paths[0]), size)
                    except (OSError, MetadataError):
                        continue
                    if skey in by_key:
                        by_key[vkey] = by_key[vkey] + by_key.pop(skey)
            for key, paths in by_key.items():
                inodes = set()
                for p in paths:
                    try:
                        st = os.stat(p)
                        inodes.add((st.st_dev, st.st_ino))
                    except OSError:
                        pass
                if len(inodes) > 1:
                    groups.append(
                        DuplicateGroup(
                            size=size,
                            key=key,
                            verified=not key.startswith("sample:"),
                            paths=sorted(paths),
                            wasted_bytes=size * (len(inodes) - 1),
                        )
                    )
        if cache_updates:
            self.inventory.scan_cache_put_many(cache_updates)
        groups.sort(key=lambda g: -g.wasted_bytes)
        return groups


def _unchanged(prior: ModelRecord | None, key: str, item: _Found,
               stats: dict[Path, os.stat_result]) -> bool:
    """True if ``prior`` is installed at ``key``, every weight file found is one of its
    recorded files, and every recorded file found is on disk with the size and mtime it was
    recorded with, and its stored metadata reads back: nothing to read, nothing to update (a
    file the user added next to a downloaded model is not adopted by a rescan)."""
    if prior is None or prior.status != "installed" or prior.path != key:
        return False
    if prior.metadata is None or prior.metadata.kind is None:
        return False  # unreadable, or stored before kinds existed: read the file again
    if item.revisions != prior.metadata.extra.get("revisions", []):
        return False  # a revision of the Hugging Face cache came, went or moved
    recorded = {f.path: f for f in prior.files}
    weights = 0
    for member in item.recorded:
        is_weight = member.name.lower().endswith(WEIGHT_SUFFIXES)
        weights += is_weight
        f, st = recorded.get(str(member)), stats.get(member)
        if f is None:
            if is_weight:
                return False
            continue
        if st is None or f.mtime_ns is None or f.size != st.st_size or (
                f.mtime_ns != st.st_mtime_ns):
            return False
    return weights > 0


def _note_unpaired(report: ScanReport, item: _Found, meta: ModelMetadata | None) -> None:
    """A file named like a projector beside a model that is not one (hostile, corrupt, or
    another kind): one line each; the model is registered without it."""
    unpaired = meta.extra.get(UNPAIRED_KEY) if meta is not None else None
    for name, why in (unpaired.items() if isinstance(unpaired, dict) else ()):
        report.errors.append((str(item.main.parent / name), _one_line(MetadataError(why))))


def _ignored_text(ignored: dict[str, str]) -> str:
    """One line naming the values a reader dropped as out of range."""
    text = "ignored " + ", ".join(f"{name} {value}" for name, value in ignored.items())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def _utf8_name(path: Path) -> bool:
    """Whether ``path`` came from valid UTF-8 bytes (no surrogate escapes)."""
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _printable(path: str) -> str:
    """A path whose bytes are not UTF-8, with those bytes shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _one_line(exc: BaseException) -> str:
    """A per-file error as one bounded line (no traceback, no newline from a file's text)."""
    if isinstance(exc, ModelDeckError):
        text = str(exc)
    elif isinstance(exc, OSError):
        text = f"cannot read: {exc.strerror or exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def _is_relative(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except OSError:
        return False


def _check_split(item: _Found) -> str | None:
    shards = [m for m in item.members if not (m != item.main and is_projector_name(m))]
    if item.fmt != "gguf" or len(shards) == 0:
        return None
    parts = split_parts(shards[0].name)
    if parts is None:
        return None
    expected = parts[2]
    if len(shards) != expected:
        return f"incomplete split GGUF set: {len(shards)} of {expected} shards present"
    return None
