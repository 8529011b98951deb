"""Checks shared by the tiers: tree digests and one-line CLI errors."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tree_digest(root: Path, *, skip: tuple[Path, ...] = ()) -> dict[str, tuple]:
    """Every entry under ``root`` (never following symlinks) with what it is and holds.

    Files map to ``("file", size, sha256)``, symlinks to ``("link", target)``, folders to
    ``("dir",)``, anything else to its type letter. Paths under ``skip`` are left out, so a
    test can leave ModelDeck's own state directory aside and compare the rest byte for byte.
    """
    out: dict[str, tuple] = {}
    skipped = tuple(p.resolve() for p in skip)
    if not root.exists() and not root.is_symlink():
        return out
    for dirpath, dirs, files in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if any(here.resolve() == s or here.resolve().is_relative_to(s) for s in skipped):
            dirs[:] = []
            continue
        for name in dirs + files:
            p = here / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                out[rel] = ("file", st.st_size, h.hexdigest())
            else:
                out[rel] = ("special", stat.S_IFMT(st.st_mode))
    return out


def run_modeldeck(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tui ARGS`` in a child process with the repo first on ``PYTHONPATH``."""
    full = dict(os.environ)
    full.update(env or {})
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "tui", *args],
        capture_output=True, text=True, env=full, timeout=timeout, input=input,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The process failed with exactly one line on stderr, no traceback, naming ``needles``."""
    err = proc.stderr.strip()
    assert proc.returncode != 0, f"expected failure, got 0; stdout={proc.stdout!r}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(err.splitlines()) == 1, f"expected one line on stderr, got: {proc.stderr!r}"
    for needle in needles:
        assert needle.lower() in err.lower(), f"{needle!r} not in {err!r}"
    return err


def assert_no_control_chars(text: str) -> None:
    """No raw ESC, BEL, C1 or other C0 control characters (tab and newline allowed)."""
    bad = [c for c in text if (ord(c) < 0x20 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F]
    assert not bad, f"raw control characters {bad!r} in {text!r}"
