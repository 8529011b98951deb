"""The ``civitai`` fixture (registered for every test in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import FakeCivitai


@pytest.fixture
def civitai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCivitai]:
    """A running FakeCivitai with ``CIVITAI_ENDPOINT`` pointing at it (no token set)."""
    server = FakeCivitai().start()
    monkeypatch.setenv("CIVITAI_ENDPOINT", server.url)
    monkeypatch.delenv("CIVITAI_TOKEN", raising=False)
    yield server
    server.stop()
