"""Every tier's fixtures (and only fixtures): an isolated environment for each test, settings
and services on a temp dir, and the fake Hub's (:mod:`tests.fakehub.testing`). Helpers are
imported from :mod:`tests.support`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tui.services import Services, build_services
from tui.settings import Settings

pytest_plugins = ["tests.fakehub.testing", "tests.fakecivitai.testing"]


@pytest.fixture(autouse=True)
def _isolate_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No test reads the developer's config, tokens or HF cache, or reaches the real Hub."""
    home = tmp_path_factory.mktemp("home")
    for var in list(os.environ):
        if var.startswith("MODELDECK_") or var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                                                   "CIVITAI_TOKEN", "CIVITAI_ENDPOINT"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local/state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("HF_HOME", str(home / ".cache/huggingface"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("MODELDECK_WORKSPACE_ROOT", str(home / "no-workspace"))
    # Tests expect the flat layout (models_dir/owner/repo); the kind layout's tests turn it on.
    monkeypatch.setenv("MODELDECK_ORGANIZE_BY_KIND", "0")
    yield


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with models and state in the test's temp dir; HF cache scanning off."""
    return Settings(
        models_dir=tmp_path / "models",
        state_dir=tmp_path / "state",
        scan_hf_cache=False,
    )


@pytest.fixture
def services(settings: Settings):
    """A service container on real SQLite in a temp dir."""
    svc: Services = build_services(settings)
    yield svc
    svc.close()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """The real CLI in-process on a models dir and a state dir under ``tmp_path`` (no config
    file, HF cache scanning off): ``cli(*args) -> (code, stdout, stderr)``; ``cli.models``,
    ``cli.state`` and ``cli.tmp`` are the folders."""
    from tui.cli import main

    models, state = tmp_path / "models", tmp_path / "state"
    monkeypatch.setenv("MODELDECK_MODELS_DIR", str(models))
    monkeypatch.setenv("MODELDECK_STATE_DIR", str(state))
    monkeypatch.setenv("MODELDECK_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("MODELDECK_SCAN_HF_CACHE", "false")

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    run.models, run.state, run.tmp = models, state, tmp_path  # type: ignore[attr-defined]
    return run
