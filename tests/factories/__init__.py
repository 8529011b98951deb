"""Test factories: tiny real models made on the fly (see :mod:`tests.factories.tiny_models`)."""

from .tiny_models import (
    CHATML_TEMPLATE,
    make_tiny_gguf,
    make_tiny_transformers,
    tiny_gguf,
    tiny_transformers,
)

__all__ = [
    "CHATML_TEMPLATE",
    "make_tiny_gguf",
    "make_tiny_transformers",
    "tiny_gguf",
    "tiny_transformers",
]
