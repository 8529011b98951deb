"""Where models live under the models dir: by kind (``<models_dir>/<kind folder>/…``, see
:data:`tui.kinds.FOLDERS`) for new downloads when ``organize_by_kind`` is on, or the older
flat layout (``<models_dir>/<owner>/<repo>``, ``<models_dir>/direct``), which stays valid.
"""

from __future__ import annotations

from pathlib import Path

from tui import kinds


def kind_folder(kind: str | None) -> str:
    """The folder name for ``kind`` (``other`` for anything not in the vocabulary)."""
    return kinds.FOLDERS[kinds.normalise(kind)]


def kind_folders() -> frozenset[str]:
    """Every folder name :data:`tui.kinds.FOLDERS` uses."""
    return frozenset(kinds.FOLDERS.values())


def hub_roots(models_dir: Path, repo: str) -> list[Path]:
    """The folders a Hub repo ``owner/name`` may have been downloaded to: the flat layout
    first, then each kind folder."""
    owner, _, name = repo.partition("/")
    flat = Path(models_dir) / owner / name
    return [flat, *(Path(models_dir) / f / owner / name for f in sorted(kind_folders()))]


def hub_root_of(models_dir: Path, repo: str, paths: list[str]) -> Path | None:
    """The one of :func:`hub_roots` that holds every path in ``paths`` (None: none does)."""
    if not paths:
        return None
    for root in hub_roots(models_dir, repo):
        if all(Path(p).is_relative_to(root) for p in paths):
            return root
    return None
