"""The registered remotes: ``remotes.toml`` in the state dir, one ``[remotes.<name>]`` table
each (``url``, optional ``key_env``). The user may edit the file; ModelDeck rewrites it whole
(atomically) on ``remote add``/``rm``. A key is never stored: only the name of the
environment variable read at request time.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tui.atomic import write_text_atomic
from tui.errors import InvalidInputError, NotFoundError
from tui.terminal_text import clean_line

if TYPE_CHECKING:
    from tui.runtime.types import ModelSpec

REMOTES_FILE = "remotes.toml"
MAX_FILE_BYTES = 256 << 10
MAX_REMOTES = 100
MAX_NAME = 64
MAX_URL = 2000
_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True, slots=True)
class Remote:
    """An OpenAI-compatible upstream registered by name."""

    name: str
    url: str  # base URL as given (http/https, no credentials, no trailing slash)
    key_env: str | None = None  # the environment variable holding its API key
    managed: bool = False  # a managed engine's (``modeldeck engine start``), removed at its stop

    @property
    def api_base(self) -> str:
        """``…/v1`` of the upstream."""
        return self.url if self.url.endswith("/v1") else self.url + "/v1"

    @property
    def metrics_url(self) -> str:
        """Where the upstream's Prometheus metrics usually are (``/metrics`` at its root)."""
        root = self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url
        return root + "/metrics"

    def key(self) -> str | None:
        """The API key, read from ``key_env`` now (None: none set)."""
        return os.environ.get(self.key_env) or None if self.key_env else None


def check_name(name: object) -> str:
    """A remote's name: letters, digits, ``. _ -`` (never ``/``), at most 64 characters."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME \
            or not _NAME_RE.match(name) or name in (".", ".."):
        raise InvalidInputError(
            f"{clean_line(name, 80)!r} is not a remote name: use letters, digits, '.', '_' and "
            f"'-' (at most {MAX_NAME}, no '/')")
    return name


def check_url(url: object) -> str:
    """An http(s) base URL without credentials, query or fragment; returned without a
    trailing slash."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL or not url.isprintable() \
            or any(c.isspace() for c in url):
        raise InvalidInputError(f"{clean_line(url, 80)!r} is not a URL",
                                hint="give the server's base URL, e.g. http://10.0.0.5:8000/v1")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise InvalidInputError(f"{clean_line(url, 80)!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(f"{clean_line(url, 80)!r} is not an http(s) URL",
                                hint="give the base URL, e.g. http://10.0.0.5:8000/v1")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidInputError(
            "the URL holds credentials (user:pass@): they would be stored in plain text",
            hint="remove them and put the key in an environment variable named with --key-env")
    if parts.query or parts.fragment:
        raise InvalidInputError("the URL must not have a query (?…) or fragment (#…)",
                                hint="give the server's base URL only")
    return url.rstrip("/")


def check_env_name(name: object) -> str:
    """An environment variable's name (the key is read from it, never stored)."""
    if not isinstance(name, str) or not _ENV_RE.match(name):
        # never echoed: a key given by mistake in its place must not reach a terminal or log
        raise InvalidInputError("the key variable must be the name of an environment variable "
                                "(letters, digits and '_'), not a key",
                                hint="e.g. --key-env VLLM_API_KEY")
    return name


def remotes_path(state_dir: Path) -> Path:
    """Where the registry lives."""
    return Path(state_dir) / REMOTES_FILE


def load_remotes(state_dir: Path) -> dict[str, Remote]:
    """The registered remotes by name (none when the file is absent). A file that cannot be
    read, or an entry that is not valid, is one InvalidInputError naming it."""
    path = remotes_path(state_dir)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise _bad(path, exc.strerror or str(exc)) from None
    if len(raw) > MAX_FILE_BYTES:
        raise _bad(path, f"larger than {MAX_FILE_BYTES >> 10} KiB")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad(path, "not UTF-8 text") from None
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise _bad(path, " ".join(str(exc).split())) from None
    table = data.get("remotes", {})
    if not isinstance(table, dict):
        raise _bad(path, "'remotes' must be a table ([remotes.NAME])")
    out: dict[str, Remote] = {}
    for name, entry in list(table.items())[:MAX_REMOTES]:
        try:
            check_name(name)
            if not isinstance(entry, dict):
                raise InvalidInputError("must be a table with url = \"…\"")
            key_env = entry.get("key_env")
            out[name] = Remote(name, check_url(entry.get("url")),
                               check_env_name(key_env) if key_env else None,
                               entry.get("managed") is True)
        except InvalidInputError as exc:
            raise _bad(path, f"remote {clean_line(name, 80)!r}: {exc}") from None
    return out


def _bad(path: Path, why: str) -> InvalidInputError:
    return InvalidInputError(f"cannot read {path}: {why}",
                             hint="fix the file or remove the entry with modeldeck remote rm")


def save_remotes(state_dir: Path, remotes: dict[str, Remote]) -> None:
    """Write the registry atomically (the old file or the new one, never half)."""
    lines = ["# ModelDeck remote engines (modeldeck remote add/rm). Keys are never stored",
             "# here: key_env names the environment variable holding one.", ""]
    for remote in remotes.values():
        lines.append(f"[remotes.{json.dumps(remote.name)}]")
        lines.append(f"url = {json.dumps(remote.url)}")
        if remote.key_env:
            lines.append(f"key_env = {json.dumps(remote.key_env)}")
        if remote.managed:
            lines.append("managed = true  # a managed engine's: removed when it stops")
        lines.append("")
    write_text_atomic(remotes_path(state_dir), "\n".join(lines))


def add_remote(state_dir: Path, name: str, url: str, key_env: str | None = None, *,
               replace: bool = False, managed: bool = False) -> Remote:
    """Register (or with ``replace``, re-register) a remote; returns it. A managed engine's
    entry never replaces one the user added."""
    remote = Remote(check_name(name), check_url(url),
                    check_env_name(key_env) if key_env else None, managed)
    remotes = load_remotes(state_dir)
    if managed and name in remotes and not remotes[name].managed:
        raise InvalidInputError(f"a remote named {name!r} exists already",
                                hint="pick another engine name, or modeldeck remote rm it")
    if name in remotes and not replace:
        raise InvalidInputError(f"a remote named {name!r} exists already",
                                hint="remove it first (modeldeck remote rm) or pass --replace")
    if name not in remotes and len(remotes) >= MAX_REMOTES:
        raise InvalidInputError(f"at most {MAX_REMOTES} remotes can be registered")
    remotes[name] = remote
    save_remotes(state_dir, remotes)
    return remote


def remove_remote(state_dir: Path, name: str) -> Remote:
    """Forget a remote; returns what it was."""
    remotes = load_remotes(state_dir)
    if name not in remotes:
        raise NotFoundError(f"no remote named {clean_line(name, 80)!r}",
                            hint="see modeldeck remote ls")
    remote = remotes.pop(name)
    save_remotes(state_dir, remotes)
    return remote


def split_model(model: object, remotes: dict[str, Remote]) -> tuple[Remote, str] | None:
    """``(remote, upstream id)`` for a ``<remote>/<model-id>`` naming a registered remote;
    None for anything else."""
    if not isinstance(model, str) or "/" not in model:
        return None
    name, _, upstream = model.partition("/")
    remote = remotes.get(name)
    if remote is None or not upstream:
        return None
    return remote, upstream


def remote_spec(state_dir: Path, model: str) -> ModelSpec | None:
    """A runtime :class:`ModelSpec` for ``<remote>/<id>`` of a registered remote (the OpenAI
    client backend, the key read now from the remote's variable); None for anything else.
    Its id stays ``<remote>/<id>``."""
    import dataclasses

    from tui.runtime.types import ModelSpec

    if "/" not in model:
        return None
    try:
        target = split_model(model, load_remotes(state_dir))
    except InvalidInputError:
        return None
    if target is None:
        return None
    remote, upstream = target
    spec = ModelSpec.endpoint(remote.url, upstream, remote.key())
    return dataclasses.replace(spec, id=model, name=model)
