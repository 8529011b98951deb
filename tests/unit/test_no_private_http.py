"""The download engine uses httpx through its public API only: no private member of httpx or
httpcore is read or set, and building a download client changes nothing process-wide."""

from __future__ import annotations

import ast
import asyncio
import sys

import httpx

from tui.download import rawfetch
from tui.download.http import make_client, ssl_context

from tests.support.checks import REPO

DOWNLOAD = REPO / "tui" / "download"
ATTR_FUNCS = {"getattr", "setattr", "hasattr", "delattr"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _own_private_names() -> set[str]:
    """Private names ModelDeck defines itself (functions, classes, module and class
    attributes, ``self._x`` / ``cls._x`` assignments) anywhere in ``tui/``."""
    names: set[str] = set()
    for file in (REPO / "tui").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                targets = [node.target]
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Name):
                        names.add(t.id)
                    elif (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                          and t.value.id in ("self", "cls")):
                        names.add(t.attr)
    return {n for n in names if _private(n)}


def _foreign_private_uses() -> list[str]:
    own = _own_private_names()
    found = []
    for file in sorted(DOWNLOAD.rglob("*.py")):
        rel = file.relative_to(REPO)
        for node in ast.walk(ast.parse(file.read_text())):
            where = f"{rel}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names])
                for module in modules:
                    parts = module.split(".")
                    if parts[0] in ("httpx", "httpcore") and (
                            parts[0] == "httpcore" or any(_private(p) for p in parts)):
                        found.append(f"{where}: imports {module}")
            elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
                found.append(f"{where}: .{node.attr} (not defined by ModelDeck)")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ATTR_FUNCS and len(node.args) > 1
                  and isinstance(node.args[1], ast.Constant)
                  and isinstance(node.args[1].value, str) and _private(node.args[1].value)):
                found.append(f"{where}: {node.func.id}(…, {node.args[1].value!r})")
    return found


def test_download_engine_uses_no_private_httpx_or_httpcore_member() -> None:
    assert "rawfetch.py" in {f.name for f in DOWNLOAD.rglob("*.py")}  # the walk sees files
    found = _foreign_private_uses()
    assert not found, "\n".join(found)


def _httpcore_class_state() -> dict[str, dict[str, object]]:
    """Every class attribute of every loaded httpcore class (httpx's transport uses them)."""
    state = {}
    for name, module in list(sys.modules.items()):
        if name == "httpcore" or name.startswith("httpcore."):
            for attr, value in list(vars(module).items()):
                if isinstance(value, type):
                    state[f"{name}.{attr}"] = dict(vars(value))
    return state


def test_a_download_client_patches_nothing_process_wide() -> None:
    asyncio.run(httpx.AsyncClient().aclose())  # httpx loads its httpcore transport classes
    before = _httpcore_class_state()
    assert any("AsyncHTTP11Connection" in name for name in before)

    client = make_client(pool_size=4, stall_timeout=3.0)
    rawfetch.connector_for(client)
    asyncio.run(client.aclose())
    assert _httpcore_class_state() == before


def test_the_socket_path_uses_the_settings_modeldeck_gave_httpx(monkeypatch) -> None:
    from tui.download.http import client_settings

    for var in rawfetch.PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    monkeypatch.delenv(rawfetch.DISABLE_ENV, raising=False)

    client = make_client(pool_size=4, stall_timeout=3.0)
    try:
        settings = client_settings(client)
        assert settings is not None and settings.ssl_context is ssl_context()
        assert client.timeout.read == settings.stall_timeout == 3.0
        assert client.timeout.connect == settings.connect_timeout
        assert client.headers["user-agent"] == settings.user_agent
        connector = rawfetch.connector_for(client)
        assert connector is not None and connector.ssl_context() is ssl_context()
        assert (connector.connect_timeout, connector.stall_timeout, connector.user_agent) == (
            settings.connect_timeout, 3.0, settings.user_agent)
    finally:
        asyncio.run(client.aclose())
    other = httpx.AsyncClient()
    try:
        assert client_settings(other) is None and rawfetch.connector_for(other) is None
    finally:
        asyncio.run(other.aclose())
