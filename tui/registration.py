"""Turn files on disk into inventory records (used by discovery and by finished downloads)."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tui.kinds import KINDS, UNKNOWN
from tui.metadata.gguf import split_gguf_info as split_parts
from tui.metadata.types import ModelMetadata
from tui.safe_paths import slugify
from tui.store import Inventory, ModelFile, ModelRecord
from tui.store.history import HistoryStore

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")  # PyTorch pickles: inspected, never loaded
ONNX_SUFFIXES = (".onnx", ".ort")
ONNX_DATA_SUFFIXES = (".onnx_data", ".onnx.data")  # external weights next to a .onnx file
WEIGHT_SUFFIXES = (
    ".gguf", ".safetensors", *ONNX_SUFFIXES, ".tflite", ".mlmodel", *PICKLE_SUFFIXES,
)
MLPACKAGE = ".mlpackage"  # a Core ML package folder: one model with everything inside it
FOLDER_EXTRAS = (".json", ".jinja", ".model", ".txt")  # a model folder's config/tokenizer files
# A folder holding one of these is one model (a transformers, PEFT or diffusers folder); the
# safetensors or pickle files of a folder without one are each a model of their own (a
# ComfyUI ``loras/`` or ``checkpoints/`` folder).
FOLDER_MARKERS = ("config.json", "adapter_config.json", "model_index.json")
_INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")
_SHARD_NAME = re.compile(r"-\d{5}-of-\d{5}\.(?:safetensors|bin)$", re.IGNORECASE)
_MAX_PACKAGE_FILES = 10_000  # files recorded for one .mlpackage
UNPAIRED_KEY = "unpaired_projectors"  # file name -> why it is not the model's projector

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


def is_projector_name(path: Path) -> bool:
    """Whether a GGUF file is named like a vision projector (``mmproj-*.gguf``)."""
    return "mmproj" in path.name.lower()


_PYTORCH_HEADS = (b"PK\x03\x04", b"PK\x05\x06", b"\x80", b"lmgg", b"fmgg", b"tjgg", b"algg")


def looks_like_pytorch(path: Path) -> bool:
    """Whether a ``.bin`` file starts like a PyTorch checkpoint (a zip archive or a pickle) or
    an old GGML file; ``.bin`` is also used for raw data, which is not a model. Reads 4 bytes
    of a regular file (never opens a FIFO or device)."""
    from tui.errors import MetadataError
    from tui.metadata.files import open_regular

    try:
        with open_regular(path) as fp:
            head = fp.read(4)
    except (OSError, MetadataError):
        return False
    return head.startswith(_PYTORCH_HEADS)


def is_folder_model(names: Iterable[str]) -> bool:
    """Whether a folder holding these file names is one model (see :data:`FOLDER_MARKERS`)."""
    return any(
        n in FOLDER_MARKERS or n.lower().endswith(_INDEX_SUFFIXES) or _SHARD_NAME.search(n)
        for n in names
    )


def is_single_file(path: Path) -> bool:
    """Whether ``path`` (a weight file) is a model on its own rather than its folder's."""
    if path.name.lower().endswith((*ONNX_SUFFIXES, ".tflite", ".mlmodel", ".gguf")):
        return True
    try:
        return not path.is_dir() and not is_folder_model(os.listdir(path.parent))
    except OSError:
        return True


def read_metadata(fmt: str, path: Path, shards: list[Path] | None = None) -> ModelMetadata:
    """Read a model's metadata (``fmt`` and files as :func:`group_model_files` gives them): a
    GGUF file or split set with its projectors, a safetensors file or folder (transformers,
    MLX, PEFT, diffusers), an ONNX, TFLite or Core ML model, a PyTorch pickle or folder.

    Raises :class:`tui.errors.MetadataError` for corrupt or hostile files.
    """
    if fmt == "gguf":
        return _read_gguf_model(path, shards or [path])
    if fmt in ("safetensors", "pytorch") and path.is_dir() and (
            path / "model_index.json").is_file():
        from tui.metadata.diffusers import read_diffusers_folder

        return read_diffusers_folder(path)
    if fmt == "safetensors":
        from tui.metadata.safetensors import read_safetensors_file, read_safetensors_folder

        if not path.is_dir() and is_single_file(path):
            return read_safetensors_file(path)
        return read_safetensors_folder(weights_folder(path))
    if fmt == "pytorch":
        from tui.metadata.pytorch import read_pytorch_file, read_pytorch_folder

        if not path.is_dir() and is_single_file(path):
            return read_pytorch_file(path)
        return read_pytorch_folder(path if path.is_dir() else path.parent)
    if fmt == "onnx":
        from tui.metadata.onnx import read_onnx

        return read_onnx(path)
    if fmt == "tflite":
        from tui.metadata.tflite import read_tflite

        return read_tflite(path)
    if fmt == "coreml":
        from tui.metadata.coreml import read_coreml

        return read_coreml(path)
    from tui.errors import MetadataError

    raise MetadataError(f"{path}: unknown model format {fmt!r}")


def _read_gguf_model(path: Path, members: list[Path]) -> ModelMetadata:
    """A GGUF model (one file or a split set) and the vision projectors recorded with it: a
    projector confirmed by its header makes the model a VLM."""
    from tui import kinds
    from tui.errors import MetadataError
    from tui.metadata.gguf import read_gguf, read_gguf_set

    projectors = [m for m in members if m != path and is_projector_name(m)]
    shards = [m for m in members if m not in projectors]
    meta = read_gguf_set(shards) if len(shards) > 1 else read_gguf(path)
    found = []
    unpaired: dict[str, str] = {}
    for proj in sorted(projectors):
        try:
            pmeta = read_gguf(proj)
        except MetadataError as exc:  # the model stands without it; the file is not recorded
            unpaired[proj.name] = str(exc)
            continue
        if pmeta.kind != kinds.PROJECTOR:
            unpaired[proj.name] = f"{proj}: named like a projector, but its header says " \
                                  f"{pmeta.kind}"
        else:
            found.append({
                "file": proj.name, "parameters": pmeta.parameters,
                "projector_type": pmeta.extra.get("projector_type"),
                "quantization": pmeta.quantization,
            })
    if unpaired:
        meta.extra[UNPAIRED_KEY] = unpaired
    if found:
        meta.extra["projector"] = found[0]
        if len(found) > 1:
            meta.extra["projectors"] = found
        if meta.kind == kinds.LLM:
            meta.kind = kinds.VLM
    return meta


def model_candidates(path: Path) -> list[Path]:
    """The files to group when a user names one model (``info``, ``add local``): a file with
    its split siblings, projectors or external data, or a folder's model files (a diffusers
    folder's components, everything in a ``.mlpackage``)."""
    from tui.metadata.gguf import gguf_shard_paths

    if path.is_dir():
        if path.name.lower().endswith(MLPACKAGE):
            return [Path(d) / n for d, _, names in os.walk(path) for n in names][
                :_MAX_PACKAGE_FILES]
        folders = [path]
        if (path / "model_index.json").is_file():
            folders += _subfolders(path)
        out = []
        for folder in folders:
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                continue
            out += [folder / n for n in names
                    if n.lower().endswith((*WEIGHT_SUFFIXES, *ONNX_DATA_SUFFIXES))
                    and (folder / n).is_file()]
        return out
    lower = path.name.lower()
    files = [path]
    if lower.endswith(".gguf"):
        files = [p for p in gguf_shard_paths(path) if p == path or p.exists()]
        if not is_projector_name(path):
            try:
                files += [path.parent / n for n in sorted(os.listdir(path.parent))
                          if n.lower().endswith(".gguf") and "mmproj" in n.lower()]
            except OSError:
                pass
    elif lower.endswith(".onnx"):
        stem = path.name.rsplit(".", 1)[0]
        files += [path.with_name(stem + s) for s in ONNX_DATA_SUFFIXES
                  if path.with_name(stem + s).is_file()]
    return files


def pick_group(groups: list[tuple[str, Path, list[Path]]], path: Path
               ) -> tuple[str, Path, list[Path]] | None:
    """The group a user meant by ``path`` (the model of that file or folder)."""
    for group in groups:
        if group[1] == path or path in group[2]:
            return group
    return groups[0] if groups else None


def display_name(path: Path, fmt: str) -> str:
    """A readable name from a file or folder name."""
    if fmt == "gguf":
        name = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
        parts = split_parts(path.name)
        return parts[0] if parts else name
    if path.name.lower().endswith(MLPACKAGE):
        return path.name[: -len(MLPACKAGE)]
    if path.name.lower().endswith((*PICKLE_SUFFIXES, *ONNX_SUFFIXES, ".tflite", ".mlmodel")):
        return path.name.rsplit(".", 1)[0] if is_single_file(path) else path.parent.name
    if path.name.lower().endswith(".safetensors") and is_single_file(path):
        return path.name[: -len(".safetensors")]
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
    """A :class:`ModelRecord` with the columns copied out of ``metadata`` (its format and kind
    as the reader found them; the size counts a file linked twice once)."""
    from tui.metadata.kinds import kind_of

    meta = metadata
    unpaired = meta.extra.get(UNPAIRED_KEY) if meta is not None else None
    if isinstance(unpaired, dict) and unpaired:  # never record a file that is not the model's
        files = [f for f in files if Path(f.path).name not in unpaired or Path(f.path) == path]
    return ModelRecord(
        id=model_id,
        name=name or (meta.name if meta and meta.name else None) or display_name(path, fmt),
        format=meta.format if meta is not None and meta.format else fmt,
        kind=kind_of(meta, fmt),
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
        size_bytes=unique_size(files),
        metadata=meta,
        files=files,
    )


def unique_size(files: Iterable[ModelFile]) -> int:
    """Bytes of ``files``, each file (device and inode, where recorded) counted once: two
    revisions' links to one blob, or hard links, take the space once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for f in files:
        if f.dev is not None and f.ino is not None:
            if (f.dev, f.ino) in seen:
                continue
            seen.add((f.dev, f.ino))
        total += f.size
    return total


def group_model_files(
    paths: Iterable[Path], *, roots: Iterable[Path] = (), same_repo: bool = False
) -> list[tuple[str, Path, list[Path]]]:
    """Group files into models: (format, main path, member files).

    Each GGUF file or complete split set is one model; a vision projector (``mmproj*.gguf``)
    is a member of the models beside it whose names it matches (of every model in the folder
    if its name is generic, like ``mmproj-model-f16.gguf``, or ``same_repo``: the files come
    from one repo), else a model of its own. A folder with a config.json (or a PEFT adapter
    config, a shard index) is one model whose main path is the folder; a diffusers folder
    (``model_index.json``) is one model with its components; the ``.safetensors`` and pickle
    files of other folders are one model each. ONNX files come with their external data,
    ``.mlpackage`` folders with everything inside. A folder that is one of ``roots`` (a
    managed folder) is never a model's path: a model at its top is registered by its first
    weight file, with only its known companion files.
    """
    managed = {_resolved(r) for r in roots}
    gguf_single: list[Path] = []
    splits: dict[tuple[Path, str], list[Path]] = {}
    projectors: dict[Path, list[Path]] = {}
    st_dirs: dict[Path, list[Path]] = {}
    pickle_dirs: dict[Path, list[Path]] = {}
    packages: dict[Path, list[Path]] = {}
    diffusers: dict[Path, list[Path]] = {}
    onnx: list[Path] = []
    onnx_data: dict[Path, list[Path]] = {}
    singles: list[tuple[str, Path]] = []
    marker_cache: dict[Path, bool] = {}
    for p in paths:
        lower = p.name.lower()
        package = _package_of(p)
        if package is not None:
            packages.setdefault(package, []).append(p)
            continue
        if lower.endswith(".gguf"):
            parts = split_parts(p.name)
            if parts:
                splits.setdefault((p.parent, parts[0]), []).append(p)
            elif is_projector_name(p):
                projectors.setdefault(p.parent, []).append(p)
            else:
                gguf_single.append(p)
            continue
        if lower.endswith(".bin") and not looks_like_pytorch(p):
            continue  # a ``.bin`` of something else (raw data, a tokenizer): not a model
        if lower.endswith((".safetensors", *PICKLE_SUFFIXES)):
            root = _diffusers_root(p, marker_cache)
            if root is not None:
                diffusers.setdefault(root, []).append(p)
            elif lower.endswith(".safetensors"):
                st_dirs.setdefault(p.parent, []).append(p)
            else:
                pickle_dirs.setdefault(p.parent, []).append(p)
        elif lower.endswith(ONNX_SUFFIXES):
            onnx.append(p)
        elif lower.endswith(ONNX_DATA_SUFFIXES):
            onnx_data.setdefault(p.parent, []).append(p)
        elif lower.endswith(".tflite"):
            singles.append(("tflite", p))
        elif lower.endswith(".mlmodel"):
            singles.append(("coreml", p))

    gguf_models: list[tuple[str, Path, list[Path]]] = [("gguf", p, [p]) for p in gguf_single]
    for (_, _stem), members in splits.items():
        members.sort()
        gguf_models.append(("gguf", members[0], members))
    out = _pair_projectors(gguf_models, projectors, same_repo)
    for folder, members in st_dirs.items():
        out += _folder_groups("safetensors", folder, members, managed)
    for folder, members in pickle_dirs.items():
        if folder in st_dirs:
            continue  # pickles beside safetensors weights: the same model (listed, not read)
        out += _folder_groups("pytorch", folder, members, managed)
    for root, members in diffusers.items():
        fmt = "safetensors" if any(m.name.lower().endswith(".safetensors") for m in members) \
            else "pytorch"
        out.append((fmt, root, sorted(members) + _diffusers_extras(root)))
    for p in onnx:
        data = [d for d in onnx_data.get(p.parent, []) if d.name.startswith(p.name.rsplit(
            ".", 1)[0] + ".onnx")]
        out.append(("onnx", p, [p, *sorted(data)]))
    out += [(fmt, p, [p]) for fmt, p in singles]
    for package, members in packages.items():
        out.append(("coreml", package, sorted(members)[:_MAX_PACKAGE_FILES]))
    return out


def _folder_groups(
    fmt: str, folder: Path, members: list[Path], managed: set[Path]
) -> list[tuple[str, Path, list[Path]]]:
    """The models of one folder's safetensors (or pickle) files: the folder as one model, or
    each file on its own."""
    members.sort()
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        names = []
    if not is_folder_model(names):
        return [(fmt, m, [m]) for m in members]
    at_root = _resolved(folder) in managed
    extra = [
        folder / n
        for n in names
        if (n in COMPANION_FILES if at_root else n.endswith(FOLDER_EXTRAS))
        and (folder / n).is_file()
    ]
    return [(fmt, members[0] if at_root else folder, members + extra)]


def _package_of(path: Path) -> Path | None:
    """The ``.mlpackage`` folder ``path`` is inside (or is), if any."""
    if MLPACKAGE not in str(path).lower():
        return None
    for candidate in (path, *path.parents):
        if candidate.name.lower().endswith(MLPACKAGE):
            return candidate
    return None


def _diffusers_root(path: Path, cache: dict[Path, bool]) -> Path | None:
    """The diffusers folder (holding ``model_index.json``) a weight file is a component of."""
    for folder in (path.parent.parent, path.parent):
        found = cache.get(folder)
        if found is None:
            found = cache[folder] = (folder / "model_index.json").is_file()
        if found:
            return folder
    return None


def _diffusers_extras(root: Path) -> list[Path]:
    """model_index.json and the config/tokenizer files of a diffusers folder's components."""
    out = []
    for folder in (root, *_subfolders(root)):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        out += [folder / n for n in names
                if n.endswith(FOLDER_EXTRAS) and (folder / n).is_file()]
    return out


def _subfolders(root: Path, limit: int = 64) -> list[Path]:
    try:
        with os.scandir(root) as it:
            dirs = [Path(e.path) for e in it
                    if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    return sorted(dirs)[:limit]


_PAIR_DROP = re.compile(r"^(?:i?q\d+(?:_[a-z0-9]+)*|b?f(?:p)?\d+|mmproj|model|ggml|gguf)$")


def _pair_key(path: Path) -> str:
    """A GGUF name without its quantization and ``mmproj`` words, for pairing projectors:
    ``mmproj-Qwen2-VL-7B-Instruct-f16.gguf`` and ``Qwen2-VL-7B-Instruct-Q4_K_M.gguf`` meet."""
    stem = path.name[: -len(".gguf")].lower()
    parts = split_parts(path.name)
    if parts:
        stem = parts[0].lower()
    tokens = [t for t in re.split(r"[-.\s]+", stem) if t and not _PAIR_DROP.match(t)]
    return "".join(tokens)


def _pair_projectors(
    models: list[tuple[str, Path, list[Path]]], projectors: dict[Path, list[Path]],
    same_repo: bool,
) -> list[tuple[str, Path, list[Path]]]:
    """Attach each folder's projectors to the models they belong to; the rest stand alone."""
    out = []
    used: set[Path] = set()
    for fmt, main, members in models:
        mine = []
        key = _pair_key(main)
        for proj in projectors.get(main.parent, []):
            pkey = _pair_key(proj)
            if same_repo or not pkey or (key and (key.startswith(pkey) or pkey.startswith(key))):
                mine.append(proj)
        used.update(mine)
        out.append((fmt, main, members + sorted(mine)))
    for folder_projectors in projectors.values():
        out += [("gguf", p, [p]) for p in sorted(folder_projectors) if p not in used]
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
    if ("://" in source_ref or source_ref.startswith("civitai:")) and groups:
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
    kind: str | None = None,
    extra: dict[str, Any] | None = None,
) -> list[ModelRecord]:
    """Register the verified files of a finished download as installed model(s).

    ``files`` are (absolute path, size, sha256); ``verified`` maps paths to how each was
    checked (see :class:`ModelFile`); ``tracked`` is the branch or tag a Hub download follows
    (what ``modeldeck outdated`` compares with); ``kind`` (the source's, e.g. CivitAI's type)
    overrides the kind read from the files unless unknown, ``extra`` adds to the metadata's
    ``extra`` (a base model). The files group as a scan groups them
    (:func:`group_model_files`, all from one repo: a projector goes with every GGUF model of
    its folder); a vocabulary-only GGUF is recorded too (kind tokenizer), so ModelDeck can
    delete what it downloaded. Returns the records written.
    Raises :class:`tui.errors.MetadataError` if a file's header is corrupt (nothing written).
    """
    info = {Path(p): (size, sha) for p, size, sha in files}
    groups = group_model_files(info, same_repo=True)  # one download: one repo (or one URL)
    taken = inventory.model_ids()
    records: list[ModelRecord] = []
    base = _id_base(catalog_id, source_ref, groups)
    for fmt, main, members in groups:
        meta = read_metadata(fmt, main, members if fmt == "gguf" else None)
        if kind in KINDS and kind != UNKNOWN:
            meta.kind = kind
        if extra:
            meta.extra.update(extra)
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
