"""The wheel carries the package data (catalog, styles) and the console script; installed
from it, ModelDeck finds its catalog and style sheets outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.checks import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{proc.stderr[-2000:]}")
    (whl,) = out.glob("modeldeck-*.whl")
    return whl


def test_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "tui/catalog/builtin.json" in names
    styles = {n for n in names if n.startswith("tui/_styles/") and n.endswith(".tcss")}
    expected = {f"tui/_styles/{p.name}" for p in (REPO / "styles").glob("*.tcss")}
    assert expected and styles == expected
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "modeldeck = tui.cli:main" in text
    assert not any(n.startswith(("tests/", "bench/", "snapshots/")) for n in names)


def test_installed_wheel_finds_its_data(wheel: Path, tmp_path: Path) -> None:
    """Unpack the wheel into a plain folder and run from there (no source tree on the path)."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = dict(os.environ, PYTHONPATH=str(site), MODELDECK_STATE_DIR=str(tmp_path / "s"),
               MODELDECK_MODELS_DIR=str(tmp_path / "m"))
    code = (
        "import tui, pathlib; from tui.catalog import load_builtin;"
        "print(tui.__file__); print(pathlib.Path(tui.__file__).parent / '_styles');"
        "print(len(load_builtin()))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    tui_file, styles, count = proc.stdout.split()
    assert tui_file.startswith(str(site))
    assert Path(styles) == site / "tui" / "_styles" and (Path(styles) / "app.tcss").is_file()
    assert int(count) >= 20
