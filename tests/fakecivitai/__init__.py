"""A local fake of CivitAI's public REST API and its download redirect, for download tests.

Import as ``from tests.fakecivitai import FakeCivitai``; its fixture (:mod:`.testing`) is
registered in ``tests/conftest.py``.
"""

from .server import FakeCivitai, FakeFile, FakeModel, FakeVersion

__all__ = ["FakeCivitai", "FakeFile", "FakeModel", "FakeVersion"]
