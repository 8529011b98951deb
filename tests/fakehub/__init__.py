"""A local Hugging Face Hub look-alike with fault injection, for download and TUI tests.

Import as ``from fakehub import FakeHub`` (``tests/`` is on ``sys.path`` under pytest).
"""

from .server import FakeFile, FakeHub, FakeRepo, Fault, RecordedRequest, git_blob_sha1

__all__ = ["FakeFile", "FakeHub", "FakeRepo", "Fault", "RecordedRequest", "git_blob_sha1"]
