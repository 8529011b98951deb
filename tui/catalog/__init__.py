"""The model catalog: built-in entries shipped with ModelDeck plus the user's custom entries.

Built-in entries come from ``builtin.json`` in this package (its format: ``SCHEMA.md``, where
each size comes from: ``SOURCES.md``). Custom entries (a Hub repo with files or a quantization,
a direct URL, or a local path) are stored in the inventory database.

An entry has a ``kind`` (what the model is: :mod:`tui.kinds`) and a ``source`` (where it comes
from: ``hf``, ``url`` or ``local``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from tui import kinds
from tui.download.sources import url_filename
from tui.errors import InvalidInputError, NotFoundError
from tui.safe_paths import slugify, validate_remote_name
from tui.store import CustomEntry, Inventory

FORMATS = ("gguf", "safetensors", "diffusers")  # diffusers: a folder repo (model_index.json)
# What a file is to its entry when it is not the main weights: a VLM's projector, the VAE or
# text encoder shipped beside a diffusion model.
ROLES = (kinds.PROJECTOR, kinds.VAE, kinds.TEXT_ENCODER)
# The image-model families a LoRA, VAE, ControlNet or text encoder applies to (``base_model``).
BASE_MODELS = ("sd1", "sd2", "sdxl", "sd3", "flux1")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class CatalogFile:
    """One remote file of an entry."""

    path: str
    size: int | None = None
    sha256: str | None = None
    size_estimated: bool = False
    role: str | None = None  # one of ROLES, or None for the weights themselves

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation (``role`` and ``size_estimated`` only when set)."""
        out: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.size_estimated:
            out["size_estimated"] = True
        if self.role:
            out["role"] = self.role
        return out


@dataclass(frozen=True, slots=True)
class CatalogQuant:
    """One quantization of a GGUF entry and the files that make it: the model (one file or
    the shards of a split set) and, for a VLM, its projector."""

    quant: str
    files: tuple[CatalogFile, ...]
    default: bool = False

    @property
    def size(self) -> int:
        """Total bytes of the quant's files (0 where unknown)."""
        return sum(f.size or 0 for f in self.files)

    @property
    def projector(self) -> CatalogFile | None:
        """The VLM projector file of this quant, if it has one."""
        return next((f for f in self.files if f.role == kinds.PROJECTOR), None)


@dataclass(slots=True)
class CatalogEntry:
    """A model that can be downloaded (or, for ``source == "local"``, registered).

    ``kind`` is what the model is (:data:`tui.kinds.KINDS`), ``source`` where it comes from.
    """

    id: str
    name: str
    source: str = "hf"  # "hf" | "url" | "local"
    kind: str = kinds.LLM
    base_model: str | None = None  # LoRA/VAE/ControlNet/text encoder: the family it applies to
    format: str | None = None
    repo: str | None = None
    revision: str = "main"
    url: str | None = None
    sha256: str | None = None
    local_path: str | None = None
    quants: tuple[CatalogQuant, ...] = ()
    files: tuple[CatalogFile, ...] = ()
    include: tuple[str, ...] = ()
    family: str | None = None
    parameters: int | None = None
    context_length: int | None = None
    architecture: str | None = None
    license: str | None = None
    gated: bool = False
    tags: tuple[str, ...] = ()
    description: str = ""
    builtin: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def runnable(self) -> bool:
        """False for kinds ModelDeck only manages (an image model, a LoRA, a VAE, …).

        An ``unknown`` kind (a custom entry nobody has looked inside yet) counts as runnable,
        so the runtime decides from the files. A GGUF embedding model runs (for embeddings)."""
        if self.kind in kinds.EMBEDS and self.format == "gguf":
            return True
        return self.kind in kinds.RUNNABLE or self.kind == kinds.UNKNOWN

    @property
    def default_quant(self) -> CatalogQuant | None:
        """The quant marked default (else the first), for GGUF entries."""
        for q in self.quants:
            if q.default:
                return q
        return self.quants[0] if self.quants else None

    def quant(self, name: str) -> CatalogQuant:
        """The quant called ``name`` (case-insensitive); :class:`NotFoundError` if absent."""
        for q in self.quants:
            if q.quant.lower() == name.lower():
                return q
        known = ", ".join(q.quant for q in self.quants) or "none"
        raise NotFoundError(f"{self.id} has no quant {name!r}", hint=f"available: {known}")

    def files_for(self, quant: str | None = None) -> list[CatalogFile]:
        """Files to download: a quant's shards for GGUF entries, else the file list."""
        if self.quants:
            chosen = self.quant(quant) if quant else self.default_quant
            return list(chosen.files) if chosen else []
        return list(self.files)

    def size_for(self, quant: str | None = None) -> int:
        """Bytes to download for ``quant`` (0 where unknown)."""
        return sum(f.size or 0 for f in self.files_for(quant))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "base_model": self.base_model,
            "runnable": self.runnable,
            "source": self.source,
            "format": self.format,
            "repo": self.repo,
            "revision": self.revision,
            "url": self.url,
            "sha256": self.sha256,
            "local_path": self.local_path,
            "family": self.family,
            "parameters": self.parameters,
            "context_length": self.context_length,
            "architecture": self.architecture,
            "license": self.license,
            "gated": self.gated,
            "tags": list(self.tags),
            "description": self.description,
            "builtin": self.builtin,
            "include": list(self.include),
            "quants": [
                {
                    "quant": q.quant,
                    "default": q.default,
                    "size": q.size,
                    "files": [f.to_dict() for f in q.files],
                }
                for q in self.quants
            ],
            "files": [f.to_dict() for f in self.files],
        }


def _files(items: list[dict[str, Any]]) -> tuple[CatalogFile, ...]:
    return tuple(
        CatalogFile(
            path=f["path"],
            size=f.get("size"),
            sha256=f.get("sha256"),
            size_estimated=bool(f.get("size_estimated", False)),
            role=f.get("role") if f.get("role") in ROLES else None,
        )
        for f in items
    )


def entry_from_dict(data: dict[str, Any], *, builtin: bool) -> CatalogEntry:
    """Build an entry from the JSON shape used by ``builtin.json`` and custom entries.

    ``kind`` is the model's kind; without one a built-in entry is an LLM (the shape before
    kinds existed) and a custom entry ``unknown``. ``source`` defaults to ``hf``.
    """
    kind = data.get("kind")
    base = data.get("base_model")
    return CatalogEntry(
        id=data["id"],
        name=data.get("name") or data["id"],
        source=data.get("source") or "hf",
        kind=kinds.normalise(kind) if kind else (kinds.LLM if builtin else kinds.UNKNOWN),
        base_model=base if base in BASE_MODELS else None,
        format=data.get("format"),
        repo=data.get("repo"),
        revision=data.get("revision") or "main",
        url=data.get("url"),
        sha256=data.get("sha256"),
        local_path=data.get("local_path"),
        quants=tuple(
            CatalogQuant(quant=q["quant"], files=_files(q["files"]), default=bool(q.get("default")))
            for q in data.get("quants", [])
        ),
        files=_files(data.get("files", [])),
        include=tuple(data.get("include", [])),
        family=data.get("family"),
        parameters=data.get("parameters"),
        context_length=data.get("context_length"),
        architecture=data.get("architecture"),
        license=data.get("license"),
        gated=bool(data.get("gated", False)),
        tags=tuple(data.get("tags", [])),
        description=data.get("description", ""),
        builtin=builtin,
    )


def load_builtin() -> list[CatalogEntry]:
    """The entries shipped in ``builtin.json``."""
    text = resources.files("tui.catalog").joinpath("builtin.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return [entry_from_dict(e, builtin=True) for e in data["entries"]]


class Catalog:
    """Built-in and custom entries, searchable; custom entries persist in the inventory."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    @cached_property
    def builtin(self) -> list[CatalogEntry]:
        """Entries shipped with ModelDeck."""
        return load_builtin()

    def custom(self) -> list[CatalogEntry]:
        """The user's entries."""
        out = []
        for c in self.inventory.list_custom():
            data = dict(c.data, id=c.id, source=c.kind)
            try:
                entry = entry_from_dict(data, builtin=False)
            except (KeyError, TypeError, ValueError, AttributeError):
                # A damaged row stays listed (so it can be removed), with nothing to fetch.
                entry = entry_from_dict({"id": c.id, "source": c.kind, "description": (
                    f"unreadable entry: remove it with 'modeldeck catalog --remove {c.id}'"
                )}, builtin=False)
            out.append(entry)
        return out

    def entries(self) -> list[CatalogEntry]:
        """Built-in entries first, then custom ones."""
        return [*self.builtin, *self.custom()]

    def get(self, entry_id: str) -> CatalogEntry | None:
        """The entry with this id, or None."""
        for entry in self.entries():
            if entry.id == entry_id:
                return entry
        return None

    def require(self, entry_id: str) -> CatalogEntry:
        """The entry with this id; :class:`NotFoundError` if there is none."""
        entry = self.get(entry_id)
        if entry is None:
            raise NotFoundError(
                f"no catalog entry with id {entry_id!r}", hint="see 'modeldeck catalog' for ids"
            )
        return entry

    def search(
        self,
        *,
        text: str | None = None,
        format: str | None = None,
        tag: str | None = None,
        kind: str | None = None,
        custom_only: bool = False,
    ) -> list[CatalogEntry]:
        """Entries matching all given filters; ``text`` matches id, name, repo, family, kind,
        base model, tags and quants."""
        words = (text or "").lower().split()
        out = []
        for entry in self.custom() if custom_only else self.entries():
            if format and entry.format != format:
                continue
            if kind and entry.kind != kind:
                continue
            if tag and tag not in entry.tags:
                continue
            hay = " ".join(
                [entry.id, entry.name, entry.repo or "", entry.family or "", entry.kind,
                 entry.base_model or "", *entry.tags, *(q.quant for q in entry.quants)]
            ).lower()
            if all(w in hay for w in words):
                out.append(entry)
        return out

    # -- custom entries -----------------------------------------------------------------

    def _new_id(self, wanted: str | None, basis: str) -> str:
        entry_id = slugify(wanted) if wanted else slugify(basis)
        if wanted and entry_id != wanted:
            raise InvalidInputError(
                f"bad id {wanted!r}", hint="use lowercase letters, digits, '.', '_' and '-'"
            )
        if self.get(entry_id) is not None:
            raise InvalidInputError(
                f"catalog id {entry_id!r} is taken", hint="choose another with --id"
            )
        return entry_id

    def add_hf(
        self,
        repo: str,
        *,
        files: list[str] | None = None,
        quant: str | None = None,
        include: list[str] | None = None,
        revision: str = "main",
        format: str | None = None,
        entry_id: str | None = None,
        name: str | None = None,
    ) -> CatalogEntry:
        """Add a Hugging Face repo (with explicit files, a quant or include globs)."""
        if not _REPO_RE.match(repo):
            raise InvalidInputError(f"not a Hub repo id: {repo!r}", hint="use owner/name")
        for f in files or []:
            validate_remote_name(f)
        if format is not None and format not in FORMATS:
            raise InvalidInputError(
                f"unknown format {format!r}", hint="use gguf, safetensors or diffusers"
            )
        if format is None:
            names = [*(files or []), *(include or [])]
            if quant or any(n.lower().endswith(".gguf") for n in names):
                format = "gguf"
            elif any(n.endswith(".safetensors") for n in names):
                format = "safetensors"
            elif repo.lower().endswith("gguf"):
                format = "gguf"
        basis = repo.split("/")[1] + (f"-{quant}" if quant else "")
        eid = self._new_id(entry_id, basis)
        data: dict[str, Any] = {
            "name": name or repo.split("/")[1] + (f" {quant}" if quant else ""),
            "repo": repo,
            "revision": revision,
            "format": format,
            "files": [{"path": f} for f in files or []],
            "include": list(include or []),
        }
        if quant:
            data["quant"] = quant
            data["include"] = [*data["include"], f"*{quant}*.gguf"]
        self.inventory.add_custom(CustomEntry(id=eid, kind="hf", data=data))
        return self.require(eid)

    def add_url(
        self,
        url: str,
        *,
        sha256: str | None = None,
        entry_id: str | None = None,
        name: str | None = None,
        format: str | None = None,
    ) -> CatalogEntry:
        """Add a direct download URL (an optional sha256 is checked after download)."""
        if not re.match(r"^https?://[^\s/]+/\S+$", url):
            raise InvalidInputError(f"not an http(s) URL to a file: {url!r}")
        filename = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        validate_remote_name(filename)
        if sha256 is not None:
            sha256 = sha256.lower()
            if not _SHA256_RE.match(sha256):
                raise InvalidInputError("sha256 must be 64 hex characters")
        if format is None and filename.lower().endswith(".gguf"):
            format = "gguf"
        basis = url_filename(url)  # decoded, readable: never percent-escapes in the id
        eid = self._new_id(entry_id, basis.rsplit(".", 1)[0] if "." in basis else basis)
        data = {
            "name": name or filename,
            "url": url,
            "sha256": sha256,
            "format": format,
            "files": [{"path": filename, "sha256": sha256}],
        }
        self.inventory.add_custom(CustomEntry(id=eid, kind="url", data=data))
        return self.require(eid)

    def add_local(
        self, path: Path, *, entry_id: str | None = None, name: str | None = None
    ) -> CatalogEntry:
        """Add a model that already is on this machine (a GGUF file or a safetensors folder)."""
        path = Path(path).expanduser()
        if not path.exists():
            raise NotFoundError(f"no such file or folder: {path}")
        path = path.resolve()
        if path.is_file() and path.suffix.lower() == ".gguf":
            format = "gguf"
        elif path.is_dir() and any(path.glob("*.safetensors")):
            format = "safetensors"
        elif path.is_dir() and any(path.glob("*.gguf")):
            format = "gguf"
        else:
            raise InvalidInputError(
                f"{path} is neither a .gguf file nor a folder with .safetensors weights"
            )
        eid = self._new_id(entry_id, path.stem if path.is_file() else path.name)
        data = {"name": name or path.name, "local_path": str(path), "format": format}
        self.inventory.add_custom(CustomEntry(id=eid, kind="local", data=data))
        return self.require(eid)

    def remove(self, entry_id: str) -> None:
        """Remove a custom entry (built-in entries cannot be removed)."""
        if not self.inventory.remove_custom(entry_id):
            if any(e.id == entry_id for e in self.builtin):
                raise InvalidInputError(f"{entry_id!r} is a built-in entry and cannot be removed")
            raise NotFoundError(f"no custom catalog entry with id {entry_id!r}")
