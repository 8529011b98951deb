"""Error types shared by ModelDeck's services.

Every error ModelDeck raises for bad input is a :class:`ModelDeckError`: its ``str()`` is one
line that says what went wrong and what to do, and it never contains a secret.
"""

from __future__ import annotations


class ModelDeckError(Exception):
    """A user-facing error: one line, actionable, secret-free."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        return " ".join(text.split())


class NotFoundError(ModelDeckError):
    """An id, path or remote object that does not exist."""


class InvalidInputError(ModelDeckError):
    """Input that fails validation (bad manifest, hostile name, bad option)."""


class MetadataError(ModelDeckError):
    """A model file whose header is corrupt, truncated, hostile or unsupported."""


class StoreError(ModelDeckError):
    """The inventory database could not be read or written."""
