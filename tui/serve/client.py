"""The CLI's client of a running ``modeldeck serve`` (``ps``, ``load``, ``unload``).

:func:`find_server` reads ``serve.json`` and trusts it only once the process it names is
alive and answers ``/api/health`` as ModelDeck with that pid; a stale file is ignored. The
API key comes from the same place as the server's (``serve_api_key_env`` /
``serve_api_key_file``), never the command line. Answers are read within bounds and their
errors become one line. No FastAPI, uvicorn or pydantic here: ``modeldeck ps`` stays fast.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from tui.errors import InvalidInputError, ModelDeckError
from tui.serve.auth import load_api_key
from tui.serve.state import ServerInfo, read_state
from tui.settings import Settings
from tui.terminal_text import clean_line

MAX_ANSWER = 16 << 20
HEALTH_SECONDS = 3.0


class ServerError(ModelDeckError):
    """The server refused or failed a request; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class ServeClient:
    """Calls to one server's management API."""

    def __init__(self, info: ServerInfo, api_key: str | None) -> None:
        self.info = info
        self._key = api_key

    @property
    def url(self) -> str:
        return self.info.url

    def request(self, method: str, path: str, body: Any = None, *,
                timeout: float | None = 30.0, headers: dict[str, str] | None = None) -> Any:
        """The JSON answer of ``method path``; ServerError (one line) for an error answer."""
        import httpx

        headers = {**(headers or {}),
                   **({"authorization": f"Bearer {self._key}"} if self._key else {})}
        try:
            with httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=5.0),
                              trust_env=False) as client, client.stream(
                    method, path, json=body, headers=headers) as response:
                data = b""
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_ANSWER:
                        raise ServerError(f"the server at {self.url} sent more than "
                                          f"{MAX_ANSWER >> 20} MiB", 502)
                status = response.status_code
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach the server at {self.url}: "
                              f"{type(exc).__name__}", 0,
                              hint="is modeldeck serve still running?") from None
        try:
            answer = json.loads(data.decode("utf-8")) if data else None
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ServerError(f"the server at {self.url} sent something that is not JSON",
                              status) from None
        if status >= 400:
            raise ServerError(_error_text(answer, status), status)
        return answer

    def ps(self) -> list[dict[str, Any]]:
        return _models(self.request("GET", "/api/ps"))

    def load(self, model_id: str, options: dict[str, Any]) -> dict[str, Any]:
        answer = self.request("POST", f"/api/models/{quote(model_id, safe='')}/load", options,
                              timeout=None)
        if not isinstance(answer, dict):
            raise ServerError("the server's answer to load is not an object", 502)
        return answer

    def unload(self, model_id: str, force: bool) -> bool:
        answer = self.request("POST", f"/api/models/{quote(model_id, safe='')}/unload",
                              {"force": force}, timeout=None)
        return bool(isinstance(answer, dict) and answer.get("unloaded"))


def _models(answer: Any) -> list[dict[str, Any]]:
    models = answer.get("models") if isinstance(answer, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise ServerError("the server's list of loaded models is malformed", 502)
    return models


def _error_text(answer: Any, status: int) -> str:
    error = answer.get("error") if isinstance(answer, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        return f"the server answered HTTP {status}"
    return clean_line(message, 300)


def find_server(settings: Settings) -> ServeClient | None:
    """The running server ``serve.json`` names, if it is alive and is ModelDeck; else None.

    InvalidInputError when it asks for an API key this process does not have.
    """
    info = read_state(settings.state_dir)
    if info is None:
        return None
    key = None
    if info.auth:
        key = load_api_key(env_name=settings.serve_api_key_env,
                           key_file=settings.serve_api_key_file)
        if key is None:
            raise InvalidInputError(
                f"the server at {info.url} needs its API key",
                hint=f"set {settings.serve_api_key_env} (or serve_api_key_file) as for "
                "modeldeck serve")
    client = ServeClient(info, key)
    try:
        health = client.request("GET", "/api/health", timeout=HEALTH_SECONDS)
    except ServerError:
        return None
    if not (isinstance(health, dict) and health.get("service") == "modeldeck"
            and health.get("pid") == info.pid):
        return None
    return client
