"""Validation of file names that come from outside (Hub listings, manifests, URLs).

A remote name is accepted only if it is a plain relative POSIX path: no NUL or control
characters, no absolute path, drive letter or UNC prefix, no backslash, no ``.``/``..``
component. Checked before anything touches the disk.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from tui.errors import InvalidInputError

_DRIVE_RE = re.compile(r"^[A-Za-z]:")
MAX_NAME_LENGTH = 1024


def validate_remote_name(name: str) -> PurePosixPath:
    """Return ``name`` as a safe relative path or raise :class:`InvalidInputError`."""
    shown = repr(name[:80])
    if not isinstance(name, str) or not name:
        raise InvalidInputError("empty file name from remote")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInputError(f"remote file name too long ({len(name)} characters)")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidInputError(f"remote file name {shown} contains control characters")
    if "\\" in name:
        raise InvalidInputError(f"remote file name {shown} contains a backslash")
    if name.startswith("/") or _DRIVE_RE.match(name):
        raise InvalidInputError(f"remote file name {shown} is an absolute path")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidInputError(f"remote file name {shown} has an empty, '.' or '..' component")
    return PurePosixPath(name)


def safe_join(root: Path, name: str) -> Path:
    """``root / name`` after :func:`validate_remote_name`, checked to stay inside ``root``."""
    rel = validate_remote_name(name)
    target = Path(root).joinpath(*rel.parts)
    root_resolved = Path(root).resolve()
    if not target.resolve().is_relative_to(root_resolved):
        raise InvalidInputError(f"remote file name {name[:80]!r} escapes {root}")
    return target


_SLUG_RE = re.compile(r"[^a-z0-9._-]+")


def slugify(text: str, max_length: int = 80) -> str:
    """A lowercase id made of ``a-z 0-9 . _ -`` (used for model and entry ids)."""
    slug = _SLUG_RE.sub("-", text.lower()).strip("-.")
    slug = re.sub(r"-{2,}", "-", slug)
    return slug[:max_length].rstrip("-.") or "model"
