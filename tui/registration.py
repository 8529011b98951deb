"""Turn files on disk into inventory records (used by discovery and by finished downloads)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

from tui.metadata.gguf import split_gguf_info as split_parts
from tui.metadata.types import ModelMetadata
from tui.safe_paths import slugify
from tui.store import Inventory, ModelFile, ModelRecord
from tui.store.history import HistoryStore

WEIGHT_SUFFIXES = (".gguf", ".safetensors")
FOLDER_EXTRAS = (".json", ".jinja", ".model", ".txt")  # a model folder's config/tokenizer files

# Files that belong to a safetensors model sitting at the top of a managed root. Anything else
# there (notes, other tools' files) is the user's, so it is never recorded as the model's.
COMPANION_FILES = frozenset({
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "vocab.json",
    "vocab.txt", "merges.txt", "chat_template.jinja", "chat_template.json",
    "preprocessor_config.json", "model.safetensors.index.json",
})


def weights_folder(path: Path) -> Path:
    """The folder of a safetensors model: ``path`` itself, or the folder holding it when the
    model is registered by its first weight file (a model at the top of a managed root)."""
    return path.parent if path.name.lower().endswith(".safetensors") else path


def read_metadata(fmt: str, path: Path, shards: list[Path] | None = None) -> ModelMetadata:
    """Read a model's metadata: a GGUF file (summing split shards) or a safetensors folder.

    Raises :class:`tui.errors.MetadataError` for corrupt or hostile files.
    """
    if fmt == "gguf":
        from tui.metadata.gguf import read_gguf, read_gguf_set

        return read_gguf_set(shards) if shards and len(shards) > 1 else read_gguf(path)
    from tui.metadata.safetensors import read_safetensors_folder

    return read_safetensors_folder(weights_folder(path))


def display_name(path: Path, fmt: str) -> str:
    """A readable name from a file or folder name."""
    if fmt == "gguf":
        name = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
        parts = split_parts(path.name)
        return parts[0] if parts else name
    return weights_folder(path).name


def unique_id(base: str, taken: set[str]) -> str:
    """``base`` made unique against ``taken`` with a numeric suffix; adds it to ``taken``."""
    candidate = base
    n = 2
    while candidate in taken:
        candidate = f"{base}-{n}"
        n += 1
    taken.add(candidate)
    return candidate


def build_record(
    *,
    model_id: str,
    fmt: str,
    path: Path,
    files: list[ModelFile],
    metadata: ModelMetadata | None,
    source: str,
    source_ref: str | None = None,
    revision: str | None = None,
    catalog_id: str | None = None,
    name: str | None = None,
) -> ModelRecord:
    """A :class:`ModelRecord` with the columns copied out of ``metadata``."""
    meta = metadata
    return ModelRecord(
        id=model_id,
        name=name or (meta.name if meta and meta.name else None) or display_name(path, fmt),
        format=fmt,
        path=str(path),
        source=source,
        source_ref=source_ref,
        revision=revision,
        catalog_id=catalog_id,
        status="installed",
        architecture=meta.architecture if meta else None,
        quantization=meta.quantization if meta else None,
        parameters=meta.parameters if meta else None,
        context_length=meta.context_length if meta else None,
        size_bytes=sum(f.size for f in files),
        metadata=meta,
        files=files,
    )


def group_model_files(
    paths: Iterable[Path], *, roots: Iterable[Path] = ()
) -> list[tuple[str, Path, list[Path]]]:
    """Group files into models: (format, main path, member files).

    Each GGUF file or complete split set is one model; the ``.safetensors`` files of one
    folder (with its config and tokenizer files) are one model whose main path is the folder.
    A folder that is one of ``roots`` (a managed folder) is never a model's path: a model at
    its top is registered by its first weight file, with only its known companion files.
    """
    managed = {_resolved(r) for r in roots}
    gguf_single: list[Path] = []
    splits: dict[tuple[Path, str], list[Path]] = {}
    st_dirs: dict[Path, list[Path]] = {}
    for p in paths:
        lower = p.name.lower()
        if lower.endswith(".gguf"):
            parts = split_parts(p.name)
            if parts:
                splits.setdefault((p.parent, parts[0]), []).append(p)
            else:
                gguf_single.append(p)
        elif lower.endswith(".safetensors"):
            st_dirs.setdefault(p.parent, []).append(p)
    out: list[tuple[str, Path, list[Path]]] = [("gguf", p, [p]) for p in gguf_single]
    for (_, _stem), members in splits.items():
        members.sort()
        out.append(("gguf", members[0], members))
    for folder, members in st_dirs.items():
        members.sort()
        at_root = _resolved(folder) in managed
        extra = [
            folder / n
            for n in sorted(os.listdir(folder))
            if (n in COMPANION_FILES if at_root else n.endswith(FOLDER_EXTRAS))
            and (folder / n).is_file()
        ]
        out.append(("safetensors", members[0] if at_root else folder, members + extra))
    return out


def _resolved(path: Path) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError):
        return Path(path)


def file_identity(st: os.stat_result) -> dict[str, int]:
    """The recorded identity of a file (for :class:`ModelFile`): device, inode, mtime."""
    return {"dev": st.st_dev, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns}


def download_dirs(model_root: Path, files: Iterable[Path], source_ref: str) -> list[Path]:
    """Folders a download put its files in: the model root, the folders inside it and, for a
    Hub repo (``<models_dir>/<owner>/<repo>``), the owner folder."""
    dirs = {model_root}
    for f in files:
        for parent in f.parents:
            if parent == model_root or not parent.is_relative_to(model_root):
                break
            dirs.add(parent)
    owner, _, name = source_ref.partition("/")
    if "://" not in source_ref and name and model_root.parts[-2:] == (owner, name):
        dirs.add(model_root.parent)
    return sorted(dirs)


def _dir_identities(dirs: Iterable[Path]) -> list[tuple[str, int, int]]:
    out = []
    for d in dirs:
        try:
            st = os.lstat(d)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            out.append((str(d), st.st_dev, st.st_ino))
    return out


def _id_base(catalog_id: str | None, source_ref: str, groups: list[tuple[str, Path, list[Path]]]
             ) -> str:
    """The readable start of a new model id: the catalog id, the repo name, or for a URL the
    downloaded file's name (decoded, Unicode kept; the host if nothing readable is left)."""
    if catalog_id:
        return slugify(catalog_id)
    if "://" in source_ref and groups:
        fmt, main, _ = groups[0]
        host = urlparse(source_ref).hostname or "download"
        return slugify(display_name(main, fmt), fallback=host)
    return slugify(source_ref.rsplit("/", 1)[-1])


def register_download(
    inventory: Inventory,
    *,
    model_root: Path,
    files: list[tuple[Path, int, str | None]],
    source: str,
    source_ref: str,
    revision: str | None,
    catalog_id: str | None = None,
    name: str | None = None,
    verified: dict[Path, str] | None = None,
    tracked: str | None = None,
) -> list[ModelRecord]:
    """Register the verified files of a finished download as installed model(s).

    ``files`` are (absolute path, size, sha256); ``verified`` maps paths to how each was
    checked (see :class:`ModelFile`); ``tracked`` is the branch or tag a Hub download follows
    (what ``modeldeck outdated`` compares with). Every GGUF file (or split set) becomes a
    model; safetensors folders become one model each. Returns the records written.
    Raises :class:`tui.errors.MetadataError` if a file's header is corrupt (nothing written).
    """
    info = {Path(p): (size, sha) for p, size, sha in files}
    groups = group_model_files(info)
    taken = inventory.model_ids()
    records: list[ModelRecord] = []
    base = _id_base(catalog_id, source_ref, groups)
    for fmt, main, members in groups:
        meta = read_metadata(fmt, main, members if fmt == "gguf" else None)
        existing = inventory.find_by_path(str(main))
        if existing is not None:
            model_id = existing.id
        else:
            suffix = ""
            if len(groups) > 1 or (fmt == "gguf" and not catalog_id):
                suffix = meta.quantization or display_name(main, fmt)
            wanted = slugify(f"{base}-{suffix}") if suffix and suffix.lower() not in base else base
            model_id = unique_id(wanted, taken)
        model_files = []
        for m in members:
            if m not in info:
                continue  # only what this download wrote is the model's (never a user's file)
            st = m.stat()
            size, sha = info[m]
            model_files.append(ModelFile(
                path=str(m), size=size or st.st_size, sha256=sha, **file_identity(st),
                verified=(verified or {}).get(m),
            ))
        records.append(
            build_record(
                model_id=model_id,
                fmt=fmt,
                path=main,
                files=model_files,
                metadata=meta,
                source=source,
                source_ref=source_ref,
                revision=revision,
                catalog_id=catalog_id,
                name=name if len(groups) == 1 else None,
            )
        )
    with inventory.db.write():
        inventory.upsert_models(records)
        if tracked is not None:
            history = HistoryStore(inventory.db)
            for record in records:
                history.set_tracked(record.id, tracked)
    inventory.add_owned_dirs(_dir_identities(download_dirs(model_root, info, source_ref)))
    return records
