"""A local Hugging Face Hub look-alike with fault injection, for download and TUI tests.

Import as ``from tests.fakehub import FakeHub``; its fixtures (:mod:`.testing`) are registered
in ``tests/conftest.py``.
"""

from .server import FakeFile, FakeHub, FakeRepo, Fault, RecordedRequest, git_blob_sha1

__all__ = ["FakeFile", "FakeHub", "FakeRepo", "Fault", "RecordedRequest", "git_blob_sha1"]
