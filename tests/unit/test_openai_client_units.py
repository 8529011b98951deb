"""Pure parts of the OpenAI-compatible client: which chunks are tokens, which error bodies
mean "bad key" or "no such model", ``Retry-After``, and how metrics say tokens were counted."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from tui.runtime.backends.openai import (
    _MODEL_TEXT,
    MAX_RETRY_AFTER,
    _choices,
    _is_auth,
    _retry_after,
    _server_message,
)
from tui.runtime.types import GenerationMetrics


def tokens(*choices: dict) -> list[tuple[str, str | None, bool]]:
    return list(_choices({"choices": list(choices)}, "here"))


def test_which_chunks_are_tokens() -> None:
    # llama.cpp: one chunk per token, "" while a character's UTF-8 is incomplete
    assert tokens({"delta": {"content": ""}}) == [("", None, True)]
    assert tokens({"delta": {"content": "é"}}) == [("é", None, True)]
    # the role's announcement (llama-server: content null; vLLM: content "") is not one
    assert tokens({"delta": {"role": "assistant", "content": None}})[0][2] is False
    assert tokens({"delta": {"role": "assistant", "content": ""}})[0][2] is False
    assert tokens({"delta": {"role": "assistant"}})[0][2] is False
    # Ollama sends the role with every token
    assert tokens({"delta": {"role": "assistant", "content": "hi"}}) == [("hi", None, True)]
    # an end without text is not; an end carrying the last token's text is
    assert tokens({"delta": {}, "finish_reason": "length"}) == [("", "length", False)]
    assert tokens({"delta": {"content": ""}, "finish_reason": "stop"}) == [("", "stop", False)]
    assert tokens({"delta": {"content": "."}, "finish_reason": "stop"}) == [(".", "stop", True)]
    # reasoning is a generated token too, not shown
    assert tokens({"delta": {"reasoning_content": "hmm"}}) == [("", None, True)]
    # the completions API's "text"
    assert tokens({"text": ""}) == [("", None, True)]


def body(message: str, **fields: object) -> bytes:
    return json.dumps({"error": {"message": message, **fields}}).encode()


@pytest.mark.parametrize("raw", [
    body("Authentication Error, No api key passed in.", type="auth_error", code="400"),
    body("Authentication Error, Invalid proxy server token passed. Received API Key = sk-…"),
    body("litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect API "
         "key provided: sk-proj-****.", type=None, code="500"),
    body("nope", type="invalid_request_error", code="invalid_api_key"),
    b'{"detail": "Unauthorized"}',
    b"invalid bearer token",
    b'{"error": "Invalid API Key"}',
])
def test_bad_key_bodies(raw: bytes) -> None:
    assert _is_auth(*_server_message(raw), 400) and _is_auth(*_server_message(raw), 500)
    assert not _is_auth(*_server_message(raw), 429)  # a rate limit is not about the key


def test_litellm_without_a_database() -> None:
    # a key that is not the master key, no database to look it up: 400 no_db_connection
    no_db = _server_message(body("No connected db.", type="no_db_connection", code="400"))
    assert _is_auth(*no_db, 400)
    outage = _server_message(body("Service Unavailable, the authentication database is "
                                  "temporarily unreachable.", type="no_db_connection"))
    assert not _is_auth(*outage, 503)
    assert _is_auth("LiteLLM Virtual Key expected. Received=abc, expected to start with 'sk-'.",
                    [], 400)
    assert _is_auth("anything", [], 401) and _is_auth("", [], 403)


@pytest.mark.parametrize("raw", [
    body("This model's maximum context length is 4096 tokens. However, you requested 5000 "
         "tokens (max_tokens=5000).", type="invalid_request_error"),
    body("max_tokens must be at least 1, got 0."),
    body("Invalid value for key 'messages'"),
    body("Invalid model name passed in model=x. Call `/v1/models` to view available models "
         "for your key."),
    body("litellm.InternalServerError: upstream connect error"),
    b"<html>502 Bad Gateway</html>",
])
def test_other_error_bodies_are_not_about_the_key(raw: bytes) -> None:
    assert not _is_auth(*_server_message(raw), 400)


@pytest.mark.parametrize("message", [
    "The model `x` does not exist.",
    "Invalid model name passed in model=x. Call `/v1/models` to view available models",
    'model "x" not found, try pulling it first',
    "The model `gpt-5` does not exist or you do not have access to it.",
])
def test_no_such_model_bodies(message: str) -> None:
    assert _MODEL_TEXT.search(message)


def test_server_message_shapes() -> None:
    assert _server_message(body("m", type="auth_error", code=401)) == ("m", ["auth_error", "401"])
    assert _server_message(b'{"error": "plain"}') == ("plain", [])
    assert _server_message(b'{"detail": "d"}') == ("d", [])
    assert _server_message(b"not json") == ("not json", [])
    assert _server_message(b"[1, 2]") == ("[1, 2]", [])
    assert _server_message(b"[" * 100_000)[0].startswith("[[")  # no RecursionError


def test_retry_after() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert _retry_after("7") == 7
    assert _retry_after(" 120 ") == 120
    assert _retry_after("9" * 400) == MAX_RETRY_AFTER
    date = format_datetime(datetime(2030, 1, 1, 12, 0, 42, tzinfo=UTC), usegmt=True)
    assert _retry_after(date, now) == 42
    past = format_datetime(datetime(2029, 1, 1, tzinfo=UTC), usegmt=True)
    assert _retry_after(past, now) == 0
    for bad in (None, "", "soon", "-3", "1.5", "٣", "Mon, 99 Foo 2030 99:99:99 GMT"):
        assert _retry_after(bad, now) is None


def test_summary_marks_estimated_counts() -> None:
    m = GenerationMetrics("m", 0, 40, 12.0, None, 30.0, 1.5, "length", usage="estimated")
    assert m.summary().startswith("40 tokens (estimated), 30.0 tok/s")
    assert m.to_dict()["usage"] == "estimated"
    m.usage = "reported"
    assert m.summary().startswith("40 tokens, ")
    assert GenerationMetrics("m", 3, 1, None, None, None, 0.1, "stop").usage == "counted"
