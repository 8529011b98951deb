"""Plain records stored in the inventory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tui.metadata.types import ModelMetadata

MODEL_STATUSES = ("installed", "missing", "deleting")
MODEL_SOURCES = ("catalog", "hf", "url", "local", "scan", "hf-cache", "civitai")


@dataclass(slots=True)
class ModelFile:
    """One file of an installed model. ``path`` is absolute.

    ``dev``/``ino`` (with ``size`` and ``mtime_ns``) identify the file ModelDeck recorded, so a
    delete can tell it from a different file now at that path; None when not recorded.
    ``verified`` says what a downloaded file was checked against: ``sha256`` (the expected
    hash), ``git-blob`` (the Hub's blob id), ``size+ranges`` (no hash known: every answer
    matched the asked bytes and the known size) or ``ranges`` (neither hash nor size known);
    None for files ModelDeck did not download.
    """

    path: str
    size: int
    sha256: str | None = None
    mtime_ns: int | None = None
    dev: int | None = None
    ino: int | None = None
    verified: str | None = None


@dataclass(slots=True)
class ModelRecord:
    """An installed (or discovered) model.

    ``path`` is the GGUF file (the first shard of a split set), the model folder, or the
    model's single file. ``kind`` says what it is for (:mod:`tui.kinds`).
    """

    id: str
    name: str
    format: str
    path: str
    source: str
    source_ref: str | None = None
    revision: str | None = None
    catalog_id: str | None = None
    status: str = "installed"
    kind: str = "unknown"  # one of tui.kinds.KINDS
    architecture: str | None = None
    quantization: str | None = None
    parameters: int | None = None
    context_length: int | None = None
    size_bytes: int = 0
    metadata: ModelMetadata | None = None
    installed_at: float = 0.0
    last_used_at: float | None = None
    load_seconds: float | None = None
    tokens_per_s: float | None = None
    prompt_tokens_per_s: float | None = None
    ttft_ms: float | None = None
    files: list[ModelFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (used by ``--json`` outputs)."""
        return {
            "id": self.id,
            "name": self.name,
            "format": self.format,
            "path": self.path,
            "source": self.source,
            "source_ref": self.source_ref,
            "revision": self.revision,
            "catalog_id": self.catalog_id,
            "status": self.status,
            "kind": self.kind,
            "architecture": self.architecture,
            "quantization": self.quantization,
            "parameters": self.parameters,
            "context_length": self.context_length,
            "size_bytes": self.size_bytes,
            "installed_at": self.installed_at,
            "last_used_at": self.last_used_at,
            "load_seconds": self.load_seconds,
            "tokens_per_s": self.tokens_per_s,
            "prompt_tokens_per_s": self.prompt_tokens_per_s,
            "ttft_ms": self.ttft_ms,
            "metadata": self.metadata.to_dict() if self.metadata else None,
            "files": [
                {"path": f.path, "size": f.size, "sha256": f.sha256, "verified": f.verified}
                for f in self.files
            ],
        }


@dataclass(slots=True)
class CustomEntry:
    """A user-added catalog entry.

    ``kind`` is ``"hf"`` (repo + files/quant/globs), ``"url"`` (direct URL, optional sha256)
    or ``"local"`` (a path on this machine). ``data`` holds the kind's fields.
    """

    id: str
    kind: str
    data: dict[str, Any]
    created_at: float = 0.0
