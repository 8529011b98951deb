"""An upstream's ``/v1/models``, fetched with a short timeout, bounded and cached.

Nothing the upstream says is trusted: the body is read up to :data:`MAX_BODY` bytes, at most
:data:`MAX_MODELS` ids are kept, an id longer than :data:`MAX_ID` or holding control or escape
characters is skipped (counted, never shown raw), and errors are one line without the key.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from tui.remote.registry import Remote
from tui.terminal_text import clean_line

TIMEOUT = 3.0  # seconds for the whole list
TTL = 30.0  # seconds a list (or a failure) is reused
MAX_BODY = 4 << 20
MAX_MODELS = 1000
MAX_ID = 256
SHOWN = 160


@dataclass(frozen=True, slots=True)
class RemoteModels:
    """What one fetch of a remote's model list gave."""

    remote: Remote
    ids: tuple[str, ...] = ()
    error: str | None = None  # one line: why the list is not there
    skipped: int = 0  # ids left out (too many, too long, unprintable)
    fetched_at: float = 0.0

    @property
    def reachable(self) -> bool:
        return self.error is None


def headers(remote: Remote) -> dict[str, str]:
    """Request headers for ``remote``: its key (read now from its variable), no compression."""
    out = {"Accept": "application/json", "Accept-Encoding": "identity"}
    key = remote.key()
    if key:
        out["Authorization"] = f"Bearer {key}"
    return out


def scrub(text: str, remote: Remote, limit: int = SHOWN) -> str:
    """Text from an upstream or an exception, fit to show: the key blanked, one line."""
    key = remote.key()
    if key:
        text = text.replace(key, "***")
    return clean_line(" ".join(text.split()), limit)


def parse_models(raw: bytes, secret: str | None = None) -> tuple[list[str], int]:
    """The ids of an OpenAI model list and how many were skipped (one holding ``secret``
    too); ValueError when it is not one."""
    data = json.loads(raw.decode("utf-8"))
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("not an OpenAI model list (no data array)")
    ids: list[str] = []
    seen: set[str] = set()
    skipped = 0
    for item in items:
        model = item.get("id") if isinstance(item, dict) else None
        if not isinstance(model, str) or not model or len(model) > MAX_ID \
                or clean_line(model) != model or model in seen or len(ids) >= MAX_MODELS \
                or (secret and secret in model):
            skipped += 1
            continue
        seen.add(model)
        ids.append(model)
    return ids, skipped


async def fetch_models(remote: Remote, timeout: float = TIMEOUT,
                       client: httpx.AsyncClient | None = None) -> RemoteModels:
    """GET ``<base>/v1/models`` of ``remote``; never raises for what the upstream does."""
    url = remote.api_base + "/models"
    own = client is None
    client = client or httpx.AsyncClient(trust_env=False)
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("GET", url, headers=headers(remote),
                                     timeout=timeout) as response:
                body = bytearray()
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > MAX_BODY:
                        return _failed(remote, f"its model list is larger than "
                                               f"{MAX_BODY >> 20} MiB")
                if response.status_code != 200:
                    text = scrub(body[:2000].decode("utf-8", "replace"), remote, 80)
                    return _failed(remote, f"GET /v1/models answered HTTP "
                                           f"{response.status_code}" + (f": {text}" if text
                                                                        else ""))
        ids, skipped = parse_models(bytes(body), remote.key())
    except TimeoutError:
        return _failed(remote, f"no model list within {timeout:g} s")
    except httpx.ConnectError:
        return _failed(remote, "connection refused or host unknown")
    except httpx.HTTPError as exc:
        return _failed(remote, scrub(f"{type(exc).__name__}: {exc}", remote))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return _failed(remote, "its /v1/models is not an OpenAI model list ("
                       + scrub(str(exc), remote, 60) + ")")
    finally:
        if own:
            await client.aclose()
    return RemoteModels(remote, tuple(ids), None, skipped, time.monotonic())


def _failed(remote: Remote, why: str) -> RemoteModels:
    return RemoteModels(remote, (), why, 0, time.monotonic())


@dataclass(eq=False)
class ModelCache:
    """The model lists of remotes, each reused for :data:`TTL` seconds (a failure too, so a
    dead upstream costs one timeout per TTL, not one per request)."""

    ttl: float = TTL
    timeout: float = TIMEOUT
    clock: Callable[[], float] = time.monotonic
    _lists: dict[str, tuple[float, RemoteModels]] = field(default_factory=dict)

    async def get(self, remote: Remote) -> RemoteModels:
        cached = self._lists.get(remote.name)
        now = self.clock()
        if cached is not None and cached[1].remote == remote and now - cached[0] < self.ttl:
            return cached[1]
        result = await fetch_models(remote, self.timeout)
        if len(self._lists) >= 1000:
            self._lists.clear()
        self._lists[remote.name] = (self.clock(), result)
        return result

    async def all(self, remotes: dict[str, Remote]) -> list[RemoteModels]:
        """The lists of every remote, fetched together."""
        return list(await asyncio.gather(*(self.get(r) for r in remotes.values())))

    def forget(self, name: str | None = None) -> None:
        if name is None:
            self._lists.clear()
        else:
            self._lists.pop(name, None)


_SHARED = ModelCache()  # the dashboard's: its rows are re-read often, the lists need not be


def list_all(remotes: dict[str, Remote], timeout: float = TIMEOUT, *, cached: bool = False
             ) -> list[RemoteModels]:
    """Blocking: every remote's model list (for the CLI, and with ``cached`` the dashboard's
    row worker, which reuses a list for :data:`TTL` seconds)."""
    if not remotes:
        return []
    cache = _SHARED if cached else ModelCache(ttl=0, timeout=timeout)
    return asyncio.run(cache.all(remotes))


def remote_listing(state_dir: object, timeout: float = TIMEOUT, *, cached: bool = False
                   ) -> tuple[list[tuple[str, Remote]], list[str]]:
    """Blocking: ``[("<remote>/<id>", remote), …]`` of every reachable remote, and one warning
    line per remote that is not (or a registry that cannot be read). Never raises for them."""
    from pathlib import Path

    from tui.errors import InvalidInputError
    from tui.remote.registry import load_remotes

    try:
        remotes = load_remotes(Path(str(state_dir)))
    except InvalidInputError as exc:
        return [], [str(exc)]
    rows: list[tuple[str, Remote]] = []
    warnings: list[str] = []
    for result in list_all(remotes, timeout, cached=cached):
        if result.error:
            warnings.append(f"remote {result.remote.name} is unreachable, its models are not "
                            f"listed: {result.error}")
        rows.extend((f"{result.remote.name}/{model}", result.remote) for model in result.ids)
    return rows, warnings
