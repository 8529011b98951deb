"""Services import no Textual; ``import tui`` and the CLI import no heavy runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "llama_cpp")

SERVICE_MODULES = [
    "tui", "tui.settings", "tui.store", "tui.catalog", "tui.discovery", "tui.registration",
    "tui.inventory_ops", "tui.manifest", "tui.doctor", "tui.services", "tui.metadata.gguf",
    "tui.metadata.safetensors", "tui.resources.sampler", "tui.download.service",
    "tui.hub.client", "tui.runtime.service", "tui.cli.download_cmds", "tui.cli.runtime_cmds",
    "tui.store.changes", "tui.discovery_watch",
]


def _loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", SERVICE_MODULES)
def test_service_module_imports_no_textual_or_runtime(module: str) -> None:
    loaded = _loaded_after(f"import {module}")
    assert "textual" not in loaded
    assert not loaded & set(HEAVY)
    assert "watchfiles" not in loaded  # imported when the dashboard starts watching


def test_cli_parser_imports_no_textual_or_runtime() -> None:
    loaded = _loaded_after("from tui.cli import build_parser; build_parser()")
    assert "textual" not in loaded and not loaded & set(HEAVY)
