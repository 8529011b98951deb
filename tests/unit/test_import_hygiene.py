"""Services import no Textual; ``import tui`` and the CLI import no heavy runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "llama_cpp")
SERVING = ("fastapi", "uvicorn", "starlette", "pydantic", "prometheus_client")

SERVICE_MODULES = [
    "tui", "tui.settings", "tui.store", "tui.catalog", "tui.discovery", "tui.registration",
    "tui.inventory_ops", "tui.manifest", "tui.doctor", "tui.services", "tui.metadata.gguf",
    "tui.metadata.safetensors", "tui.resources.sampler", "tui.download.service",
    "tui.hub.client", "tui.runtime.service", "tui.cli.download_cmds", "tui.cli.runtime_cmds",
    "tui.store.changes", "tui.discovery_watch", "tui.cli.serve_cmds", "tui.serve.client",
    "tui.serve.state", "tui.serve.auth", "tui.serve.validate", "tui.serve.stats",
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


def _top(loaded: set[str]) -> set[str]:
    return {name.split(".")[0] for name in loaded}


@pytest.mark.parametrize("module", ["tui", "tui.cli", *SERVICE_MODULES])
def test_no_serving_stack_unless_serving(module: str) -> None:
    """FastAPI, uvicorn, Starlette, pydantic and prometheus-client load only to serve."""
    assert not _top(_loaded_after(f"import {module}")) & set(SERVING)


def test_modeldeck_ls_imports_no_serving_stack(tmp_path) -> None:
    code = ("import sys; from tui.cli import main; sys.argv = ['modeldeck']; "
            f"main(['--state-dir', {str(tmp_path / 'state')!r}, '--models-dir', "
            f"{str(tmp_path / 'models')!r}, 'ls'])")
    loaded = _top(_loaded_after(code))
    assert not loaded & set(SERVING) and not loaded & set(HEAVY) and "textual" not in loaded


def test_dashboard_imports_no_serving_stack_until_it_serves() -> None:
    """The dashboard (with its server panel) imports the serving stack only when the API
    server is started."""
    loaded = _top(_loaded_after("import tui.app.app, tui.app.widgets.server_panel"))
    assert "textual" in loaded and not loaded & set(SERVING) and not loaded & set(HEAVY)
