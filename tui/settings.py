"""ModelDeck settings: defaults, overridden by a TOML file, overridden by ``MODELDECK_*`` env vars.

Settings are loaded once (:func:`load_settings`) into a frozen :class:`Settings` and passed to
the services; nothing here writes a file. Every value remembers where it came from, which
``modeldeck config`` prints.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from tui.errors import InvalidInputError

APP_NAME = "modeldeck"
ENV_PREFIX = "MODELDECK_"
CONFIG_ENV = "MODELDECK_CONFIG"

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*(?:/s)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_rate(text: str | int | float) -> int:
    """Parse a byte size/rate such as ``"50M"``, ``"1.5GiB"``, ``"800k/s"`` or ``0`` into bytes."""
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"size must not be negative: {text}")
        return int(text)
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 50M, 1.5G, 0 for none)")
    number, unit, _ = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


def _parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def _parse_paths(text: str | list[str]) -> tuple[Path, ...]:
    items = text if isinstance(text, list) else [p for p in str(text).split(os.pathsep) if p]
    return tuple(Path(os.path.expanduser(str(p))) for p in items)


def _parse_path(text: str) -> Path:
    return Path(os.path.expanduser(str(text)))


def _int_at_least(minimum: int):
    def parse(text: Any) -> int:
        if isinstance(text, bool):
            raise ValueError(f"not a whole number: {text!r}")
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise ValueError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _float_at_least(minimum: float):
    def parse(text: Any) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise ValueError(f"not a number: {text!r}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _choice(*options: str):
    def parse(text: Any) -> str:
        value = str(text).strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {text!r}")
        return value

    return parse


def _workspace_root() -> Path | None:
    """``/workspace`` on RunPod-style pods, when it exists and is writable."""
    root = Path(os.environ.get("MODELDECK_WORKSPACE_ROOT", "/workspace"))
    if root.is_dir() and os.access(root, os.W_OK):
        return root
    return None


def default_models_dir() -> Path:
    """``/workspace/models`` where a writable ``/workspace`` exists, else the user data dir."""
    root = _workspace_root()
    if root is not None:
        return root / "models"
    return Path(platformdirs.user_data_dir(APP_NAME)) / "models"


def default_state_dir() -> Path:
    """Beside the models on a pod volume (it survives pod restarts), else the user state dir."""
    root = _workspace_root()
    if root is not None:
        return root / ".modeldeck"
    return Path(platformdirs.user_state_dir(APP_NAME))


def default_config_path() -> Path:
    """Where the TOML config file is looked for when ``MODELDECK_CONFIG`` is not set."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


@dataclass(frozen=True)
class Settings:
    """The effective settings. Build with :func:`load_settings`; tests may construct directly."""

    models_dir: Path
    state_dir: Path
    extra_dirs: tuple[Path, ...] = ()
    scan_hf_cache: bool = True
    concurrent_downloads: int = 2
    connections_per_download: int = 8
    connections_per_host: int = 16
    bandwidth_limit: int = 0  # bytes per second, 0 = unlimited
    stall_timeout: float = 20.0  # seconds without a byte before a connection is restarted
    keep_alive_minutes: float = 5.0  # 0 = keep loaded models until asked
    max_loaded_models: int = 1
    theme: str = "dark"
    ascii: bool = False
    bell: bool = True
    low_redraw: bool = False
    config_path: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def db_path(self) -> Path:
        """The SQLite inventory file."""
        return self.state_dir / "modeldeck.db"

    def source_of(self, name: str) -> str:
        """Where the value of setting ``name`` came from."""
        return self.sources.get(name, "default")

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values of every setting."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in {"sources", "config_path"}:
                continue
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [str(v) for v in value]
            out[f.name] = value
        return out


# name -> parser; the env var is MODELDECK_<NAME upper>, the TOML key is the name.
_PARSERS: dict[str, Any] = {
    "models_dir": _parse_path,
    "state_dir": _parse_path,
    "extra_dirs": _parse_paths,
    "scan_hf_cache": _parse_bool,
    "concurrent_downloads": _int_at_least(1),
    "connections_per_download": _int_at_least(1),
    "connections_per_host": _int_at_least(1),
    "bandwidth_limit": parse_rate,
    "stall_timeout": _float_at_least(1.0),
    "keep_alive_minutes": _float_at_least(0.0),
    "max_loaded_models": _int_at_least(1),
    "theme": _choice("dark", "light"),
    "ascii": _parse_bool,
    "bell": _parse_bool,
    "low_redraw": _parse_bool,
}

SETTING_NAMES: tuple[str, ...] = tuple(_PARSERS)


def env_var(name: str) -> str:
    """The environment variable that sets ``name``."""
    return ENV_PREFIX + name.upper()


def load_settings(
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load settings: defaults < TOML file < ``MODELDECK_*`` env vars < ``overrides``.

    Raises :class:`InvalidInputError` naming the key and its source for a bad value or an
    unreadable config file. Reads only; never creates a file or directory.
    """
    env = os.environ if env is None else env
    if config_path is None:
        config_path = Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else default_config_path()

    values: dict[str, Any] = {
        "models_dir": default_models_dir(),
        "state_dir": default_state_dir(),
    }
    sources: dict[str, str] = {}
    file_found: Path | None = None

    if config_path.is_file():
        file_found = config_path
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInputError(
                f"cannot read config file {config_path}: {exc}",
                hint="fix or remove the file",
            ) from None
        section = data.get("modeldeck", data)
        for key, raw in section.items():
            if key not in _PARSERS:
                raise InvalidInputError(
                    f"unknown setting {key!r} in {config_path}",
                    hint=f"known settings: {', '.join(SETTING_NAMES)}",
                )
            values[key] = _parse(key, raw, f"config file {config_path}")
            sources[key] = f"file {config_path}"

    for key in SETTING_NAMES:
        var = env_var(key)
        if var in env:
            values[key] = _parse(key, env[var], f"environment variable {var}")
            sources[key] = f"env {var}"

    for key, raw in (overrides or {}).items():
        if key not in _PARSERS:
            raise InvalidInputError(f"unknown setting {key!r}")
        values[key] = _parse(key, raw, "command line")
        sources[key] = "command line"

    return Settings(**values, config_path=file_found, sources=sources)


def _parse(key: str, raw: Any, where: str) -> Any:
    try:
        return _PARSERS[key](raw)
    except ValueError as exc:
        raise InvalidInputError(f"bad value for {key} in {where}: {exc}") from None
