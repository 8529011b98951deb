"""The llama.cpp backend uses llama-cpp-python's public API only: no ``llm._model``, no
``llama_cpp._internals``, nothing private reached through another object."""

from __future__ import annotations

import ast

import pytest

from tests.support.checks import REPO

FILES = ["tui/runtime/backends/llama_cpp.py", "tui/runtime/backends/llama_batch.py"]


def _private_uses(source: str) -> list[str]:
    """``x._name`` where ``x`` is not ``self``, and imports of private modules."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if not node.attr.startswith("__") and not (
                isinstance(node.value, ast.Name) and node.value.id == "self"
            ):
                found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if any(p.startswith("_") and not p.startswith("__") for p in parts):
                found.append(f"line {node.lineno}: from {node.module}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(part.startswith("_") for part in alias.name.split(".")):
                    found.append(f"line {node.lineno}: import {alias.name}")
    return sorted(found)


@pytest.mark.parametrize("path", FILES)
def test_llama_backend_uses_public_api_only(path: str) -> None:
    assert _private_uses((REPO / path).read_text(encoding="utf-8")) == []


def test_the_check_catches_private_uses() -> None:
    assert _private_uses("vocab = llm._model.vocab\nfrom llama_cpp._internals import X") == [
        "line 1: ._model", "line 2: from llama_cpp._internals",
    ]
