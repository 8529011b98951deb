"""``modeldeck doctor``: what this machine offers ModelDeck, checked without side effects.

The inventory is looked at through a read-only connection (header, schema, every page);
``modeldeck doctor --repair`` (:mod:`tui.repair`) is what fixes a broken one.

Backends are detected with ``importlib.util.find_spec`` and package metadata, never
imported (importing torch takes seconds). The Hub token is reported as present or absent,
never shown.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from tui import __version__
from tui import formatting as fmt
from tui.settings import Settings
from tui.store.health import inspect, open_readonly, store_error


@dataclass(slots=True)
class Check:
    """One line of the report: ``status`` is ok, warn or fail."""

    name: str
    status: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready representation."""
        return {"name": self.name, "status": self.status, "detail": self.detail}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _backend(module: str, dist: str, extra: str) -> Check:
    if importlib.util.find_spec(module) is None:
        return Check(module, "warn", f"not installed (pip install 'modeldeck[{extra}]')")
    return Check(module, "ok", f"{dist} {_version(dist) or '?'}")


def _existing_parent(path: Path) -> Path:
    path = path.expanduser()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def token_source() -> str | None:
    """Where a Hugging Face token would come from, or None. Never returns the token."""
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return "HF_TOKEN environment variable"
    hf_home = Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()
    token_path = Path(os.environ.get("HF_TOKEN_PATH", hf_home / "token")).expanduser()
    if token_path.is_file() and token_path.stat().st_size > 0:
        return f"token file {token_path}"
    return None


def gpu_check() -> Check:
    """NVML status: GPUs with memory, or a quiet 'no GPU'."""
    try:
        from tui.resources.nvml import GpuReader
    except ImportError:
        return Check("gpu", "warn", "resource reader unavailable")
    reader = GpuReader()
    reader.open()
    try:
        gpus, status = reader.read()
    finally:
        reader.close()
    if not gpus:
        return Check("gpu", "warn", status)
    parts = [f"#{g.index} {g.name} {fmt.size(g.mem_total)}" for g in gpus]
    return Check("gpu", "ok", "; ".join(parts))


def inventory_check(path: Path) -> Check:
    """The inventory file: missing (fine), usable, or what is wrong with it (read-only look)."""
    if not path.exists() and not path.is_symlink():
        return Check("inventory", "ok", f"none yet at {path} (created on first use)")
    problem = inspect(path, thorough=True)
    if problem is not None:
        return Check("inventory", "fail", str(problem))
    try:
        conn = open_readonly(path)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            counts = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                      for t in ("models", "jobs")] if version else [0, 0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Check("inventory", "fail", str(store_error(exc, path)))
    return Check("inventory", "ok",
                 f"{path} (schema {version}, {counts[0]} models, {counts[1]} download jobs)")


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in display order."""
    checks = [
        Check("modeldeck", "ok", __version__),
        Check(
            "python",
            "ok" if sys.version_info >= (3, 11) else "fail",
            f"{platform.python_version()} ({sys.executable})",
        ),
        Check("platform", "ok", f"{platform.system()} {platform.machine()}"),
        _backend("llama_cpp", "llama-cpp-python", "llama"),
        _backend("transformers", "transformers", "transformers"),
        _backend("torch", "torch", "transformers"),
        gpu_check(),
    ]
    models = _existing_parent(settings.models_dir)
    usage = shutil.disk_usage(models)
    free_gib = usage.free / 2**30
    checks.append(
        Check(
            "models volume",
            "ok" if free_gib >= 10 else "warn",
            f"{settings.models_dir}: {fmt.size(usage.free)} free of {fmt.size(usage.total)}",
        )
    )
    state = _existing_parent(settings.state_dir)
    writable = os.access(state, os.W_OK)
    checks.append(
        Check("state dir", "ok" if writable else "fail",
              f"{settings.state_dir}{'' if writable else ' (not writable)'}")
    )
    checks.append(inventory_check(settings.db_path))
    source = token_source()
    checks.append(
        Check("hub token", "ok" if source else "warn",
              f"present ({source})" if source else "absent (gated repos need HF_TOKEN)")
    )
    endpoint = os.environ.get("HF_ENDPOINT")
    checks.append(Check("hub endpoint", "ok", endpoint or "https://huggingface.co (default)"))
    civitai = bool((os.environ.get("CIVITAI_TOKEN") or "").strip())
    checks.append(Check("civitai token", "ok", "present (CIVITAI_TOKEN)" if civitai else
                        "absent (files whose creator requires a login need CIVITAI_TOKEN)"))
    return checks
