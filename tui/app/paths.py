"""Where the ``.tcss`` style sheets live (source tree or installed wheel)."""

from __future__ import annotations

from pathlib import Path

import tui


def styles_dir() -> Path:
    """``tui/_styles`` inside an installed wheel, else the repository's top-level ``styles/``."""
    package = Path(tui.__file__).resolve().parent
    installed = package / "_styles"
    if installed.is_dir():
        return installed
    return package.parent / "styles"
