"""Download errors (one line, actionable, secret-free), token redaction, and the short
reason of a failed attempt."""

from __future__ import annotations

import errno
import re

from tui.errors import ModelDeckError

_TOKEN_RE = re.compile(r"(hf_|api_org_)[A-Za-z0-9_\-]{4,}")
_BEARER_RE = re.compile(r"(?i)(authorization:?\s*bearer\s+)\S+")


def redact(text: str) -> str:
    """Replace anything that looks like a Hugging Face token or bearer credential."""
    text = _BEARER_RE.sub(r"\1<redacted>", text)
    return _TOKEN_RE.sub("<redacted-token>", text)


class DownloadError(ModelDeckError):
    """A download failed; the message says why and what to do."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(redact(message), hint=redact(hint) if hint else None)


class GatedRepoError(DownloadError):
    """The repo is gated or private and this user has no access (yet)."""


class RemoteNotFoundError(DownloadError):
    """The repo, revision or file does not exist (or is hidden from this user)."""


class DiskFullError(DownloadError):
    """Not enough free space on the target volume (``cause_errno``: ENOSPC, EDQUOT…)."""

    cause_errno: int = 0


class BadServerError(DownloadError):
    """The server kept answering with bytes other than those asked for (wrong range, length
    or encoding); nothing of those answers was written."""


class AlreadyDownloadingError(DownloadError):
    """Another process holds the lock on a destination file."""


class ChecksumMismatchError(DownloadError):
    """A file's size or sha256 did not match after a retry from zero."""


def gated_message(repo: str) -> GatedRepoError:
    """The error for a gated/private repo without access."""
    return GatedRepoError(
        f"{repo} is gated or private and this token has no access",
        hint=f"accept the licence at https://huggingface.co/{repo} and set HF_TOKEN "
        "or run `hf auth login`",
    )


_ERRNO_RE = re.compile(r"\[Errno (-?\d+)\]")
_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ETIMEDOUT: "timed out",
    -2: "host not found",  # EAI_NONAME
    -3: "name lookup failed, try again",  # EAI_AGAIN
    -5: "host not found",  # EAI_NODATA
}


def _errno(exc: BaseException) -> int | None:
    """The errno of ``exc`` or of the error it was raised from (httpx wraps the socket's
    ``ConnectionRefusedError`` in two other errors), or None."""
    todo: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while todo and len(seen) < 16:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno is not None:
            return err.errno
        match = _ERRNO_RE.search(str(err))
        if match:
            return int(match.group(1))
        todo += [err.__cause__, err.__context__, *getattr(err, "exceptions", ())]
    return None


def failure_reason(exc: BaseException) -> str:
    """Why one request failed, in a few lowercase words (``connection refused``, ``HTTP 503``,
    ``no data (stalled)``); never a URL or a secret."""
    import httpx

    status = getattr(exc, "status", None)
    if isinstance(status, int) and not isinstance(exc, OSError):
        return f"HTTP {status}"
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return redact(" ".join(reason.split()))[:80]
    if isinstance(exc, httpx.ConnectTimeout):
        return "connecting timed out"
    if isinstance(exc, httpx.TimeoutException):
        return "no data (stalled)"
    code = _errno(exc)
    if code in _REASONS:
        return _REASONS[code]
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection dropped"
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect"
    return type(exc).__name__
