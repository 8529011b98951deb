"""CivitAI's public REST API: a model or version's files, sizes, SHA256 hashes, type and base
model, as ``modeldeck pull civitai:<model>[@<version>]`` needs them.

Endpoints (https://developer.civitai.com/site/reference/model-versions and the REST API
reference): ``GET /api/v1/models/{id}`` (``modelVersions``, newest first) and
``GET /api/v1/model-versions/{id}``; each file's ``downloadUrl``
(``/api/download/models/{versionId}…``) redirects to a signed storage URL.

The endpoint comes from ``CIVITAI_ENDPOINT`` (default ``https://civitai.com``), the token from
``CIVITAI_TOKEN``, both read at call time. The token goes only to the endpoint's origin as
``Authorization: Bearer`` (never ``?token=``: a URL is shown and stored), and never into a
log, an error or the database. Every answer is untrusted: bounded in size, parsed without
huge numbers, each field checked before use.
"""

from __future__ import annotations

import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from tui import kinds
from tui.download.errors import DownloadError, RemoteNotFoundError
from tui.errors import InvalidInputError
from tui.metadata.types import JSON_HOOKS, SQLITE_INT_MAX, BigNumber

DEFAULT_ENDPOINT = "https://civitai.com"
MAX_ANSWER = 8 << 20  # bytes of JSON read from one API answer
MAX_FILES = 1000  # files of one version looked at
MAX_TEXT = 200  # names, base models: longer text is cut
TIMEOUT = 30.0
TOKEN_HINT = ("set CIVITAI_TOKEN to an API key from your CivitAI account settings "
              "(civitai.com/user/account)")
_ID_RE = re.compile(r"^[0-9]{1,12}$")
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_REF_RE = re.compile(r"^civitai:([0-9]{1,12})(?:@([0-9]{1,12}))?$", re.IGNORECASE)
_HOSTS = ("civitai.com", "www.civitai.com", "civitai.green", "www.civitai.green")

# CivitAI's model ``type`` -> ModelDeck's kind. A textual-inversion embedding is a prompt
# token for an image model, not a sentence-embedding model: it has its own kind.
TYPE_KINDS: dict[str, str] = {
    "checkpoint": kinds.DIFFUSION,
    "lora": kinds.LORA,
    "locon": kinds.LORA,
    "dora": kinds.LORA,
    "lycoris": kinds.LORA,
    "vae": kinds.VAE,
    "controlnet": kinds.CONTROLNET,
    "textualinversion": kinds.TEXTUAL_INVERSION,
}
MODEL_FILE_TYPES = ("model", "pruned model")  # not the VAE, config or training data files
SAFE_FORMATS = ("safetensor", "safetensors")
PICKLE_FORMATS = ("pickletensor", "pickle")
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def civitai_endpoint() -> str:
    """``CIVITAI_ENDPOINT`` now, else ``https://civitai.com``, without a trailing /."""
    return (os.environ.get("CIVITAI_ENDPOINT") or DEFAULT_ENDPOINT).strip().rstrip("/")


def civitai_token() -> str | None:
    """``CIVITAI_TOKEN``, or None."""
    token = (os.environ.get("CIVITAI_TOKEN") or "").strip()
    return token or None


def origin_of(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` with the default port filled in."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def kind_for(model_type: str | None) -> str:
    """ModelDeck's kind for a CivitAI model ``type`` (``unknown`` for Upscaler, Other, …)."""
    return TYPE_KINDS.get((model_type or "").replace(" ", "").lower(), kinds.UNKNOWN)


def parse_ref(text: str) -> tuple[int, int | None] | None:
    """``(model id, version id or None)`` from ``civitai:123``, ``civitai:123@456`` or a
    CivitAI page URL (``https://civitai.com/models/123/name?modelVersionId=456``); None if
    ``text`` is neither. A CivitAI URL that names no model raises :class:`InvalidInputError`.
    """
    text = text.strip()
    m = _REF_RE.match(text)
    if m:
        return int(m.group(1)), int(m.group(2)) if m.group(2) else None
    if not text.lower().startswith(("http://", "https://")):
        return None
    parts = urlsplit(text)
    host = (parts.hostname or "").lower()
    if host not in _HOSTS and origin_of(text) != origin_of(civitai_endpoint()):
        return None
    segments = [s for s in parts.path.split("/") if s]
    query = parse_qs(parts.query[:2000])
    version = (query.get("modelVersionId") or [""])[0]
    if len(segments) >= 2 and segments[0] == "models" and _ID_RE.match(segments[1]):
        if version and not _ID_RE.match(version):
            raise InvalidInputError(f"modelVersionId {version[:20]!r} is not a number")
        return int(segments[1]), int(version) if version else None
    raise InvalidInputError(
        f"not a CivitAI model page: {text[:100]!r}",
        hint="use https://civitai.com/models/<id>[?modelVersionId=<id>] or civitai:<id>[@<id>]")


@dataclass(frozen=True, slots=True)
class CivitaiFile:
    """One file of a version. ``size_kb`` is CivitAI's approximate size (``sizeKB``)."""

    id: int
    name: str
    type: str
    format: str | None
    primary: bool
    sha256: str | None
    download_url: str
    size_kb: float | None = None

    @property
    def is_pickle(self) -> bool:
        """A PyTorch pickle (``PickleTensor``, ``.ckpt``/``.pt``…): loading it can run code."""
        fmt = (self.format or "").lower()
        return fmt in PICKLE_FORMATS or (
            fmt not in SAFE_FORMATS and self.name.lower().endswith(PICKLE_SUFFIXES))

    @property
    def is_safe(self) -> bool:
        """Safetensors (or GGUF): data only."""
        return not self.is_pickle and self.name.lower().endswith((".safetensors", ".gguf"))


@dataclass(slots=True)
class CivitaiVersion:
    """A model version with what a download needs."""

    id: int
    model_id: int
    model_name: str
    model_type: str
    name: str
    base_model: str | None
    files: list[CivitaiFile] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """ModelDeck's kind for the model's type."""
        return kind_for(self.model_type)

    @property
    def ref(self) -> str:
        """``civitai:<model>@<version>``."""
        return f"civitai:{self.model_id}@{self.id}"

    def pick(self, wanted: str | None = None, *, allow_pickle: bool = False) -> CivitaiFile:
        """The model file to download: ``wanted`` by name, else the SafeTensor one (the
        primary first), else a pickle when ``allow_pickle``. One line when there is none."""
        models = [f for f in self.files if f.type.lower() in MODEL_FILE_TYPES
                  and f.name.lower().endswith(WEIGHT_SUFFIXES)]
        if wanted:
            chosen = [f for f in self.files if f.name == wanted]
            if not chosen:
                names = ", ".join(f.name for f in models[:5]) or "none"
                raise RemoteNotFoundError(f"{self.ref} has no file {wanted[:100]!r}",
                                          hint=f"its model files: {names}")
            models = chosen
        if not models:
            raise RemoteNotFoundError(f"{self.ref} has no model file ModelDeck can use",
                                      hint="only safetensors, GGUF and PyTorch files are "
                                      "downloaded")
        safe = [f for f in models if f.is_safe]
        if safe:
            return sorted(safe, key=lambda f: not f.primary)[0]
        pickles = [f for f in models if f.is_pickle]
        if pickles and not allow_pickle:
            raise InvalidInputError(
                f"{self.ref} has only {pickles[0].name} in an unsafe format (a PyTorch pickle "
                "can run code when loaded)",
                hint="pass --allow-pickle to download it anyway")
        return sorted(pickles or models, key=lambda f: not f.primary)[0]


class CivitaiClient:
    """Calls to CivitAI's API (blocking; run in a thread from asyncio)."""

    def __init__(self, endpoint: str | None = None, token: str | None = None) -> None:
        self.endpoint = (endpoint or civitai_endpoint()).rstrip("/")
        self._token = token if token is not None else civitai_token()

    @property
    def has_token(self) -> bool:
        """Whether a token is configured (never the token itself)."""
        return bool(self._token)

    def version(self, model_id: int, version_id: int | None = None) -> CivitaiVersion:
        """The given version of ``model_id``, or its newest one."""
        if version_id is None:
            data = self._get(f"/api/v1/models/{model_id}", f"civitai:{model_id}")
            versions = data.get("modelVersions")
            if not isinstance(versions, list) or not versions or not isinstance(
                    versions[0], dict):
                raise RemoteNotFoundError(f"civitai:{model_id} has no published version")
            version = dict(versions[0])
            version.setdefault("modelId", model_id)
            version["model"] = {"name": data.get("name"), "type": data.get("type")}
            return parse_version(version, model_id, self.endpoint)
        data = self._get(f"/api/v1/model-versions/{version_id}",
                         f"civitai:{model_id}@{version_id}")
        return parse_version(data, model_id, self.endpoint, version_id)

    def _get(self, path: str, what: str) -> dict:
        import httpx

        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        url = self.endpoint + path
        try:
            with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client, \
                    client.stream("GET", url, headers=headers) as resp:
                status = resp.status_code
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER:
                        raise DownloadError(
                            f"CivitAI's answer for {what} is over {MAX_ANSWER >> 20} MiB; "
                            "not reading it", hint="check CIVITAI_ENDPOINT")
        except httpx.HTTPError as exc:
            raise DownloadError(f"cannot reach CivitAI at {self.endpoint} for {what} "
                                f"({type(exc).__name__})",
                                hint="check the network or CIVITAI_ENDPOINT") from None
        if status in (401, 403):
            if self._token:
                raise DownloadError(f"CivitAI refused CIVITAI_TOKEN for {what} (HTTP {status})",
                                    hint="check the key in your CivitAI account settings")
            raise DownloadError(f"{what} needs a CivitAI login (HTTP {status})",
                                hint=TOKEN_HINT)
        if status == 404:
            raise RemoteNotFoundError(f"CivitAI has no {what} (HTTP 404)",
                                      hint="check the model and version ids")
        if status != 200:
            raise DownloadError(f"CivitAI answered HTTP {status} for {what}",
                                hint="try again later")
        try:
            data = json.loads(bytes(body).decode("utf-8"), **JSON_HOOKS)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise DownloadError(f"CivitAI's answer for {what} is not JSON",
                                hint="check CIVITAI_ENDPOINT") from None
        if not isinstance(data, dict):
            raise DownloadError(f"CivitAI's answer for {what} is not a JSON object",
                                hint="check CIVITAI_ENDPOINT")
        return data


def parse_version(data: dict, model_id: int, endpoint: str,
                  version_id: int | None = None) -> CivitaiVersion:
    """A :class:`CivitaiVersion` from an API answer, every field checked: ids are the ones
    asked for, names are text, hashes 64 hex digits, download URLs on the API's origin."""
    vid = _int(data.get("id"))
    what = f"civitai:{model_id}" + (f"@{version_id}" if version_id else "")
    if vid is None or (version_id is not None and vid != version_id):
        raise DownloadError(f"CivitAI's answer for {what} names another version",
                            hint="check CIVITAI_ENDPOINT")
    answered_model = _int(data.get("modelId"))
    if answered_model is not None and answered_model != model_id:
        raise InvalidInputError(f"CivitAI version {vid} belongs to model {answered_model}, "
                                f"not {model_id}", hint=f"use civitai:{answered_model}@{vid}")
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    raw_files = data.get("files")
    files: list[CivitaiFile] = []
    for item in raw_files[:MAX_FILES] if isinstance(raw_files, list) else []:
        f = _parse_file(item, endpoint, f"civitai:{model_id}@{vid}")
        if f is not None:
            files.append(f)
    return CivitaiVersion(
        id=vid, model_id=model_id, model_name=_text(model.get("name")) or f"model {model_id}",
        model_type=_text(model.get("type")) or "Other", name=_text(data.get("name")) or str(vid),
        base_model=_text(data.get("baseModel")), files=files)


def _parse_file(item: object, endpoint: str, ref: str) -> CivitaiFile | None:
    if not isinstance(item, dict):
        return None
    name, url = item.get("name"), item.get("downloadUrl")
    if not isinstance(name, str) or not name or not isinstance(url, str):
        return None
    if origin_of(url) != origin_of(endpoint):
        raise DownloadError(f"CivitAI's download URL for {ref} is not on {endpoint}; "
                            "not following it", hint="check CIVITAI_ENDPOINT")
    hashes = item.get("hashes") if isinstance(item.get("hashes"), dict) else {}
    sha = next((v for k, v in hashes.items() if str(k).upper() == "SHA256"), None)
    if sha is not None and (not isinstance(sha, str) or not _SHA256_RE.match(sha)):
        raise DownloadError(f"CivitAI's SHA256 for {ref} {name[:80]!r} is not 64 hex digits",
                            hint="check CIVITAI_ENDPOINT")
    meta = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
    size = item.get("sizeKB")
    size_kb = float(size) if isinstance(size, int | float) and not isinstance(
        size, bool | BigNumber) and math.isfinite(size) and 0 <= size <= SQLITE_INT_MAX / 1024 \
        else None
    return CivitaiFile(
        id=_int(item.get("id")) or 0, name=name[:1000], type=_text(item.get("type")) or "Model",
        format=_text(meta.get("format")), primary=item.get("primary") is True,
        sha256=sha.lower() if sha else None, download_url=url, size_kb=size_kb)


def _int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**12:
        return value
    return None


def _text(value: object) -> str | None:
    """Printable text (control, format and unassigned characters dropped), one line, cut."""
    if not isinstance(value, str):
        return None
    text = "".join(c for c in value[:4 * MAX_TEXT] if unicodedata.category(c)[0] != "C"
                   or c in "\t\n")
    text = " ".join(text.split())[:MAX_TEXT]
    return text or None
