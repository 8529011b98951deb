"""Pytest fixtures and helpers around :class:`FakeHub` (the fixtures are registered for every
test by ``pytest_plugins`` in ``tests/conftest.py``; import only the helpers)."""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tui.download.service import DownloadService
from tui.settings import Settings
from tui.store import Database, Inventory

from .server import FakeHub


def gguf_bytes(size: int, seed: int = 0) -> bytes:
    """A minimal valid GGUF header followed by ``size`` pseudo-random bytes."""
    rnd = random.Random(seed)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 0) + rnd.randbytes(size)


def sha256(data: bytes) -> str:
    """Hex sha256."""
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running FakeHub with ``HF_ENDPOINT`` (and huggingface_hub's import-time
    ``constants.ENDPOINT`` and resolve URL template) pointing at it."""
    from huggingface_hub import constants

    server = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.url + "/{repo_id}/resolve/{revision}/{filename}")
    yield server
    server.stop()


@pytest.fixture
def dl_settings(tmp_path: Path) -> Settings:
    """Download settings with short timeouts for fast tests."""
    return Settings(
        models_dir=tmp_path / "models",
        state_dir=tmp_path / "state",
        scan_hf_cache=False,
        concurrent_downloads=2,
        connections_per_download=4,
        connections_per_host=8,
        stall_timeout=0.5,
    )


def make_service(settings: Settings, catalog: object | None = None) -> DownloadService:
    """A DownloadService on a fresh database with fast retries and flushes."""
    db = Database(settings.db_path)
    service = DownloadService(settings, db, Inventory(db), catalog)
    service.policy.base_delay = 0.01
    service.policy.max_delay = 0.05
    service.flush_interval = 0.1
    return service


@pytest.fixture
async def service(dl_settings: Settings) -> AsyncIterator[DownloadService]:
    """A DownloadService (stopped and closed after the test)."""
    svc = make_service(dl_settings)
    yield svc
    await svc.stop()
    svc.db.close()


def part_files(root: Path) -> list[Path]:
    """Every ``.part`` file under ``root``."""
    return sorted(p for p in root.rglob("*.part")) if root.exists() else []
