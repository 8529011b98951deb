"""Validation of file names that come from outside (Hub listings, manifests, URLs).

A remote name is accepted only if it is a plain relative POSIX path: no NUL or control
characters, no absolute path, drive letter or UNC prefix, no backslash, no ``.``/``..``
component. Checked before anything touches the disk.

File systems cap one name at 255 *bytes* (not characters: a CJK character is 3 bytes in
UTF-8), and a download also writes ``<name>.part`` and ``<name>.lock`` next to the file, so a
name ModelDeck makes (:func:`safe_filename`) or accepts (:func:`check_name_bytes`) is at most
:data:`MAX_FILE_NAME_BYTES` bytes. Ids (:func:`slugify`) keep readable Unicode letters.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path, PurePosixPath

from tui.errors import InvalidInputError

_DRIVE_RE = re.compile(r"^[A-Za-z]:")
MAX_NAME_LENGTH = 1024
NAME_MAX = 255  # bytes in one file name on Linux file systems
SIDE_SUFFIX_BYTES = len(".part")  # ``.part`` and ``.lock`` are written next to every download
MAX_FILE_NAME_BYTES = NAME_MAX - SIDE_SUFFIX_BYTES
_SHARD_SUFFIX_RE = re.compile(r"-\d{5}-of-\d{5}\.[A-Za-z0-9]{1,12}$")
_EXT_RE = re.compile(r"(\.[A-Za-z0-9_]{1,12}){1,2}$")


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


def check_name_bytes(name: str) -> None:
    """Refuse a remote path with a component longer than :data:`MAX_FILE_NAME_BYTES` bytes
    (it could not be written with its ``.part`` next to it)."""
    for part in name.split("/"):
        size = len(part.encode("utf-8", "surrogatepass"))
        if size > MAX_FILE_NAME_BYTES:
            raise InvalidInputError(
                f"remote file name {part[:60]!r}… is {size} bytes long; file systems hold at "
                f"most {MAX_FILE_NAME_BYTES} (plus ModelDeck's .part)",
                hint="this file cannot be stored here",
            )


def _unsafe_in_name(ch: str) -> bool:
    """Characters never put in a file name: separators, controls, bidi and format marks,
    separators of lines, lone surrogates."""
    if ch in "/\\":
        return True
    cat = unicodedata.category(ch)
    return cat in ("Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn")


def safe_filename(raw: str, fallback: str = "download", max_bytes: int = MAX_FILE_NAME_BYTES
                  ) -> str:
    """A usable file name from an untrusted one (a URL's last path component).

    NFKC-normalised, readable Unicode kept; separators, control and format characters become
    ``_``; no leading dot or space; at most ``max_bytes`` UTF-8 bytes, cut on a character
    boundary in the stem so the extension (``.gguf``, or a shard suffix
    ``-00001-of-00003.gguf``) stays. ``fallback`` when nothing usable is left.
    """
    name = unicodedata.normalize("NFKC", raw)
    name = "".join("_" if _unsafe_in_name(c) else c for c in name)
    name = name.strip().lstrip(". ").rstrip(" ")
    if not name or set(name) <= {"_", "."}:
        name = fallback
    return fit_filename(name, max_bytes)


def fit_filename(name: str, max_bytes: int = MAX_FILE_NAME_BYTES) -> str:
    """``name`` cut to ``max_bytes`` UTF-8 bytes, keeping its extension (see
    :func:`safe_filename`); unchanged when it fits."""
    if len(name.encode("utf-8", "surrogatepass")) <= max_bytes:
        return name
    match = _SHARD_SUFFIX_RE.search(name) or _EXT_RE.search(name)
    ext = match.group(0) if match and match.start() > 0 else ""
    room = max_bytes - len(ext.encode("utf-8"))
    stem = name[: len(name) - len(ext)]
    cut = stem.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
    cut = cut.rstrip(" .-_") or cut
    return cut + ext


def _slug_char(ch: str) -> str:
    """``ch`` as it goes into an id: letters, digits and marks of any script, ``._-``."""
    if ch in "._-":
        return ch
    return ch if unicodedata.category(ch)[0] in "LNM" else "-"


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "M"


def slugify(text: str, max_length: int = 80, fallback: str = "model") -> str:
    """A lowercase id from ``text`` (used for model and entry ids).

    NFKC-normalised and lowercased (``ＱＷＥＮ２．５`` → ``qwen2.5``); letters, digits and
    accents of any script are kept (``通义千问-7b`` stays readable, never hex), everything
    else but ``. _ -`` becomes ``-``; at most ``max_length`` characters, never cutting a
    letter from its accents. ``fallback`` (itself slugified) when no letter or digit is left.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).lower())
    slug = "".join(_slug_char(c) for c in folded)
    slug = re.sub(r"-{2,}", "-", slug)
    start = 0  # no leading separator, nor an accent with no letter to sit on
    while start < len(slug) and (slug[start] in "-." or _is_mark(slug[start])):
        start += 1
    end = min(len(slug), start + max_length)
    while start < end < len(slug) and _is_mark(slug[end]):  # never cut a letter from its
        end -= 1  # accents: cut before the letter
    slug = slug[start:end].rstrip("-.")
    if not any(unicodedata.category(c)[0] in "LN" for c in slug):
        return slugify(fallback, max_length) if fallback != text else "model"
    return slug
