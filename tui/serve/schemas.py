"""Request bodies of the API (pydantic: validated, and documented at ``/docs``).

Unknown fields are accepted and ignored, as OpenAI-compatible servers do (clients send
``frequency_penalty``, ``user``, …); the fields that would change an answer in a way this
server cannot honour are refused by :mod:`tui.serve.openai_api` with one line instead.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_STOP = 4  # stop strings, as OpenAI
MAX_STOP_CHARS = 256
MAX_INPUTS = 2048  # embeddings inputs, as OpenAI

KeepAlive = float | int | str | None


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextPart(BaseModel):
    """A part of a message's content; only text is understood."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One message of the conversation."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(default=None, max_length=256)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _Sampling(_Open):
    model: str = Field(description="a ModelDeck model id (GET /v1/models)")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(1 << 63), lt=1 << 64)
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: Any = None
    keep_alive: KeepAlive = Field(
        default=None, description="ModelDeck extension, as Ollama's: how long the model stays "
        "loaded after this request (seconds or '5m'; 0 unloads it after the answer, -1 pins it)")


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class EmbeddingRequest(_Open):
    """``POST /v1/embeddings``."""

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    keep_alive: KeepAlive = None


class LoadRequest(BaseModel):
    """``POST /api/models/{id}/load``."""

    model_config = ConfigDict(extra="forbid")
    context_length: int | None = Field(default=None, ge=16, le=1 << 22)
    gpu_layers: Literal["auto", "all"] | int = Field(default="auto")
    parallel: int | None = Field(default=None, ge=1, le=64)
    threads: int | None = Field(default=None, ge=1, le=1024)
    keep_alive: KeepAlive = None
    force: bool = False


class UnloadRequest(BaseModel):
    """``POST /api/models/{id}/unload``."""

    model_config = ConfigDict(extra="forbid")
    force: bool = False


class DownloadRequest(BaseModel):
    """``POST /api/downloads``: what ``modeldeck pull`` takes."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=2048,
                        description="catalog id, owner/repo, owner/repo:QUANT or http(s) URL")
    quant: str | None = Field(default=None, max_length=64)
    files: list[str] = Field(default_factory=list, max_length=1000)
    include: list[str] = Field(default_factory=list, max_length=100)
    exclude: list[str] = Field(default_factory=list, max_length=100)
    revision: str | None = Field(default=None, max_length=256)
    sha256: str | None = Field(default=None, max_length=64)
