"""ModelDeck settings: defaults, overridden by a TOML file, overridden by ``MODELDECK_*`` env vars.

Settings are loaded once (:func:`load_settings`) into a frozen :class:`Settings` and passed to
the services; nothing here writes a file. Every value remembers where it came from, which
``modeldeck config`` prints.
"""

from __future__ import annotations

import difflib
import math
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
MAX_RATE = 1 << 50  # 1 PiB/s: anything above is a typo, and would overflow timers
MAX_CONFIG_BYTES = 1 << 20
# MODELDECK_* variables that are not settings but are read somewhere; others get a warning.
OTHER_ENV_NAMES = (
    "MODELDECK_CONFIG", "MODELDECK_WORKSPACE_ROOT", "MODELDECK_HTTPX_BODY", "MODELDECK_API_KEY",
    "MODELDECK_DEBUG", "MODELDECK_SERVE_API_KEY",
)


def _show(value: Any) -> str:
    """A value for an error message: its kind for tables and lists, else a short repr."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(text: Any) -> float | int:
    """A finite int or float from a TOML number or a string; ValueError otherwise."""
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise ValueError(f"expected a number, got {_show(text)}")
    if isinstance(text, int):
        return text
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {_show(text)}") from None
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {_show(text)}")
    return value


def parse_rate(text: str | int | float) -> int:
    """Parse a byte size/rate such as ``"50M"``, ``"1.5GiB"``, ``"800k/s"`` or ``0`` into bytes."""
    if isinstance(text, str):
        match = _SIZE_RE.match(text)
        if not match:
            raise ValueError(f"not a size: {_show(text)} (use e.g. 50M, 1.5G, 0 for none)")
        number, unit, _ = match.groups()
        value = float(number) * _UNITS[unit.lower()]
    else:
        if isinstance(text, bool) or not isinstance(text, int | float):
            raise ValueError(f"not a size: {_show(text)} (use e.g. 50M, 1.5G, 0 for none)")
        value = _number(text)
    if value < 0:
        raise ValueError(f"size must not be negative: {_show(text)}")
    if not math.isfinite(value) or value > MAX_RATE:
        raise ValueError(f"size {_show(text)} is too large (at most 1P)")
    return int(value)


def _parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    if isinstance(text, int) and text in (0, 1):
        return bool(text)
    if not isinstance(text, str):
        raise ValueError(f"not a boolean: {_show(text)} (use true or false)")
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {_show(text)} (use true or false)")


def _path(text: Any) -> Path:
    if not isinstance(text, str):
        raise ValueError(f"expected a folder path (a string), got {_show(text)}")
    if not text.strip():
        raise ValueError("is empty, which would mean the current directory (unset it or give "
                         "a folder)")
    if "\x00" in text:
        raise ValueError(f"contains a NUL byte: {_show(text)}")
    return Path(os.path.expanduser(text))


def _parse_paths(text: str | list[str]) -> tuple[Path, ...]:
    if isinstance(text, str):
        return tuple(_path(p) for p in text.split(os.pathsep) if p)
    if not isinstance(text, list):
        raise ValueError(f"expected a list of folders, got {_show(text)}")
    return tuple(_path(p) for p in text)


def _parse_path(text: str) -> Path:
    return _path(text)


def _int_between(minimum: int, maximum: int):
    def parse(text: Any) -> int:
        digits = re.fullmatch(r"\s*([+-]?)(\d+)\s*", text) if isinstance(text, str) else None
        if digits:  # a long run of digits is out of range, not worth converting
            huge = len(digits.group(2)) > 30
            value = int(text) if not huge else (minimum - 1 if digits.group(1) == "-" else
                                                 maximum + 1)
        elif isinstance(text, int) and not isinstance(text, bool):
            value = text
        else:
            number = None if isinstance(text, str) else _number(text)
            if number is None or number != int(number):
                raise ValueError(f"not a whole number: {_show(text)}")
            value = int(number)
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {_show(text)}")
        if value > maximum:
            raise ValueError(f"must be at most {maximum}, got {_show(text)}")
        return value

    return parse


def _float_between(minimum: float, maximum: float):
    def parse(text: Any) -> float:
        value = float(_number(text))
        if value < minimum:
            raise ValueError(f"must be at least {minimum:g}, got {_show(text)}")
        if value > maximum:
            raise ValueError(f"must be at most {maximum:g}, got {_show(text)}")
        return value

    return parse


def _choice(*options: str):
    def parse(text: Any) -> str:
        value = text.strip().lower() if isinstance(text, str) else None
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {_show(text)}")
        return value

    return parse


def _parse_threshold(text: Any) -> str:
    """A free-space threshold: a size (``10G``) or a share of the volume (``5%``)."""
    if isinstance(text, str) and text.strip().endswith("%"):
        share = _float_between(0.0, 100.0)(text.strip()[:-1])
        return f"{share:g}%"
    try:
        parse_rate(text)
    except ValueError:
        raise ValueError(f"not a size or a share: {_show(text)} (use e.g. 10G or 5%; 0 turns "
                         "the warning off)") from None
    return str(text).strip()


def low_disk_threshold(setting: str, total: int) -> int:
    """Bytes of free space below which the models volume counts as low (``total`` its size)."""
    if setting.endswith("%"):
        return int(total * float(setting[:-1]) / 100)
    return parse_rate(setting)


_HOST_RE = re.compile(r"^[A-Za-z0-9.:%_-]{1,253}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.\[\]:_-]{1,253}(:\d{1,5})?$")


def _parse_host(text: Any) -> str:
    value = text.strip() if isinstance(text, str) else None
    if not value or not _HOST_RE.match(value.strip("[]")):
        raise ValueError(f"not a host name or IP address: {_show(text)}")
    return value.strip("[]")


def _parse_env_name(text: Any) -> str:
    if not isinstance(text, str) or not _ENV_NAME_RE.match(text.strip()):
        raise ValueError(f"not an environment variable name: {_show(text)}")
    return text.strip()


def _parse_optional_path(text: Any) -> Path | None:
    if isinstance(text, str) and not text.strip():
        return None
    return _path(text)


def _parse_origins(text: Any) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else text
    if not isinstance(items, list):
        raise ValueError(f"expected a list of origins, got {_show(text)}")
    origins = []
    for item in items:
        value = item.strip().rstrip("/") if isinstance(item, str) else None
        if value == "":
            continue
        if value != "*" and (value is None or not _ORIGIN_RE.match(value)):
            raise ValueError(f"not an origin (http(s)://host[:port] or *): {_show(item)}")
        origins.append(value)
    return tuple(origins)


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
    give_up_after: float = 10.0  # minutes of failed retries without progress before a job fails
    keep_alive_minutes: float = 5.0  # 0 = keep loaded models until asked
    max_loaded_models: int = 1
    parallel_requests: int = 4  # llama.cpp: answers one model decodes together
    queue_limit: int = 32  # requests waiting per model beyond those; more are refused
    serve_host: str = "127.0.0.1"  # `modeldeck serve` binds here (another needs an API key)
    serve_port: int = 8765
    serve_api_key_env: str = "MODELDECK_SERVE_API_KEY"  # the variable holding the API key
    serve_api_key_file: Path | None = None  # or a file holding it
    serve_cors_origins: tuple[str, ...] = ()  # browser origins allowed (none: CORS off)
    serve_max_tokens: int = 4096  # the most tokens one answer may ask for
    serve_with_dashboard: bool = False  # the dashboard starts the server too
    # New downloads go to models_dir/<kind folder>/... (load_settings turns it on by default;
    # a Settings built directly keeps the flat layout).
    organize_by_kind: bool = False
    low_disk_warning: str = "10G"  # the dashboard warns below this much free space (or "5%")
    theme: str = "dark"
    ascii: bool = False
    bell: bool = True
    low_redraw: bool = False
    config_path: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)  # unknown keys, env names

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
            if f.name in {"sources", "config_path", "warnings"}:
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
    "concurrent_downloads": _int_between(1, 64),
    "connections_per_download": _int_between(1, 128),
    "connections_per_host": _int_between(1, 256),
    "bandwidth_limit": parse_rate,
    "stall_timeout": _float_between(1.0, 86_400.0),
    "give_up_after": _float_between(0.1, 10_080.0),
    "keep_alive_minutes": _float_between(0.0, 525_600.0),
    "max_loaded_models": _int_between(1, 64),
    "parallel_requests": _int_between(1, 64),
    "queue_limit": _int_between(0, 100_000),
    "serve_host": _parse_host,
    "serve_port": _int_between(0, 65_535),
    "serve_api_key_env": _parse_env_name,
    "serve_api_key_file": _parse_optional_path,
    "serve_cors_origins": _parse_origins,
    "serve_max_tokens": _int_between(1, 1_000_000),
    "serve_with_dashboard": _parse_bool,
    "organize_by_kind": _parse_bool,
    "low_disk_warning": _parse_threshold,
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

    Raises :class:`InvalidInputError` naming the key, the value and its source for a bad
    value or an unreadable config file. Unknown keys and ``MODELDECK_*`` names are not errors:
    they are listed in ``Settings.warnings``. Reads only; never creates a file or directory.
    """
    env = os.environ if env is None else env
    if config_path is None:
        config_path = Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else default_config_path()

    values: dict[str, Any] = {
        "models_dir": default_models_dir(),
        "state_dir": default_state_dir(),
        "organize_by_kind": True,
    }
    sources: dict[str, str] = {}
    warnings: list[str] = []
    file_found: Path | None = None

    if config_path.is_file():
        file_found = config_path
        section = _read_config(config_path, warnings)
        for key, raw in section.items():
            if key not in _PARSERS:
                warnings.append(f"unknown setting {key!r} in {config_path} ignored"
                                + _did_you_mean(key, SETTING_NAMES))
                continue
            values[key] = _parse(key, raw, f"config file {config_path}")
            sources[key] = f"file {config_path}"

    known_env = {env_var(k) for k in SETTING_NAMES} | set(OTHER_ENV_NAMES)
    for var in sorted(env):
        if var.startswith(ENV_PREFIX) and var not in known_env:
            warnings.append(f"unknown environment variable {var} ignored"
                            + _did_you_mean(var, sorted(known_env)))
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

    return Settings(**values, config_path=file_found, sources=sources,
                    warnings=tuple(warnings))


def _read_config(path: Path, warnings: list[str]) -> dict[str, Any]:
    """The settings table of a TOML config file (top level, or a ``[modeldeck]`` table)."""
    def fail(why: str) -> InvalidInputError:
        return InvalidInputError(f"cannot read config file {path}: {why}",
                                 hint="fix or remove the file")

    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise fail(exc.strerror or str(exc)) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise fail(f"larger than {MAX_CONFIG_BYTES >> 20} MiB")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise fail("not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise fail(" ".join(str(exc).split())) from None
    except RecursionError:
        raise fail("nested too deeply") from None
    if "modeldeck" not in data:
        return data
    section = data["modeldeck"]
    if not isinstance(section, dict):
        raise fail(f"'modeldeck' must be a table ([modeldeck]), got {_show(section)}")
    for key in data:
        if key != "modeldeck":
            warnings.append(f"setting {key!r} outside the [modeldeck] table of {path} ignored")
    return section


def _did_you_mean(name: str, known: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _parse(key: str, raw: Any, where: str) -> Any:
    try:
        return _PARSERS[key](raw)
    except ValueError as exc:
        raise InvalidInputError(f"bad value for {key} in {where}: {exc}") from None
