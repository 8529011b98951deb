"""The server's API key: where it comes from, when it is required, how it is checked.

The key comes from an environment variable (``serve_api_key_env``, ``--api-key-env``) or a file
(``serve_api_key_file``, ``--api-key-file``), never from the command line (it would show in
``ps``). It is compared in constant time (:func:`hmac.compare_digest`) and never logged,
echoed or stored (``serve.json`` only says whether one is set). Binding an address other
than loopback without a key is refused (:func:`check_bind`).

:class:`AuthMiddleware` is plain ASGI (no Starlette import): every path but the health check
needs ``Authorization: Bearer <key>`` when a key is set.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from tui.errors import InvalidInputError
from tui.terminal_text import clean_line

MIN_KEY_CHARS = 16
MAX_KEY_CHARS = 1024
MAX_KEY_FILE = 4096
MAKE_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
OPEN_PATHS = frozenset({"/api/health"})


def load_api_key(
    *,
    env_name: str,
    key_file: Path | None = None,
    explicit_env: bool = False,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The API key from ``key_file`` if given, else from the variable ``env_name`` (None when
    it is unset and was not asked for explicitly). InvalidInputError for an unreadable file,
    an unset variable named on the command line, or a key too short or with spaces or
    control characters."""
    if key_file is not None:
        return _check(_read_key_file(Path(key_file)), f"the key file {clean_line(key_file)}")
    env = os.environ if environ is None else environ
    value = env.get(env_name)
    if not value:
        if explicit_env:
            raise InvalidInputError(f"{env_name} is not set (it should hold the API key)",
                                    hint=f"export {env_name}=$({MAKE_KEY})")
        return None
    return _check(value.strip(), env_name)


def _read_key_file(path: Path) -> str:
    where = clean_line(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InvalidInputError(f"cannot read the API key file {where}: "
                                f"{exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInputError(f"the API key file {where} is not a regular file")
        raw = os.read(fd, MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_KEY_FILE:
        raise InvalidInputError(f"the API key file {where} is larger than {MAX_KEY_FILE} bytes",
                                hint="it should hold only the key")
    try:
        return raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InvalidInputError(f"the API key file {where} is not ASCII text") from None


def _check(key: str, where: str) -> str:
    if not all(0x21 <= ord(c) <= 0x7E for c in key):
        raise InvalidInputError(f"the API key in {where} has spaces or control characters",
                                hint=f"make one with: {MAKE_KEY}")
    if not MIN_KEY_CHARS <= len(key) <= MAX_KEY_CHARS:
        raise InvalidInputError(
            f"the API key in {where} has {len(key)} characters; use {MIN_KEY_CHARS} to "
            f"{MAX_KEY_CHARS}", hint=f"make one with: {MAKE_KEY}")
    return key


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (only this machine can connect)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, key: str | None, env_name: str) -> None:
    """Refuse to listen beyond loopback without an API key (one line, what to do)."""
    if key is None and not is_loopback(host):
        raise InvalidInputError(
            f"refusing to listen on {clean_line(host)} without an API key",
            hint=f"set {env_name} (or serve_api_key_file) to a key of {MIN_KEY_CHARS}+ "
            "characters, or keep 127.0.0.1 and reach it through ssh -L",
        )


def key_matches(given: bytes | None, key: bytes) -> bool:
    """Constant-time comparison (also when lengths differ)."""
    if given is None:
        return False
    return hmac.compare_digest(given, key)


def bearer(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The token of an ``Authorization: Bearer …`` header, or None."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return None
    return None


Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

UNAUTHORIZED = (
    b'{"error":{"message":"missing or wrong API key: send Authorization: Bearer <key>",'
    b'"type":"invalid_request_error","param":null,"code":"invalid_api_key"}}'
)


class AuthMiddleware:
    """Require ``Authorization: Bearer <key>`` on every HTTP request but :data:`OPEN_PATHS`
    and CORS preflights (answered by the CORS layer outside this one)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or (
                scope["method"] == "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if key_matches(bearer(scope["headers"]), self.key):
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(UNAUTHORIZED)).encode()),
            (b"www-authenticate", b'Bearer realm="modeldeck"'),
        ]})
        await send({"type": "http.response.body", "body": UNAUTHORIZED})
