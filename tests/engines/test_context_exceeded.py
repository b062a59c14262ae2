"""A prompt longer than the context: the engines' refusals become one clear 400.

The bodies are the ones the two llama.cpp servers send (llama-server's
``exceed_context_size_error``; llama-cpp-python's ``context_length_exceeded``, built
from its ``Requested tokens (N) exceed context window of M``); the end-to-end tests
(tests/e2e/test_context_e2e.py) get them from the real servers.
"""

from __future__ import annotations

import json

import pytest

from ltcai.engines.base import ServedModel
from ltcai.engines.openai_client import _chunks_of, _status_error
from ltcai.errors import ChatError, InvalidRequest

SERVED = ServedModel(engine="llamacpp", model="smollm2", base_url="http://127.0.0.1:1/v1")

LLAMA_SERVER = json.dumps({"error": {
    "code": 400, "message": "request (5123 tokens) exceeds the available context size (4096 tokens)",
    "type": "exceed_context_size_error", "n_prompt_tokens": 5123, "n_ctx": 4096,
}})  # fmt: skip
LLAMA_CPP_PYTHON = json.dumps({"error": {
    "message": "This model's maximum context length is 4096 tokens. However, you requested 5187 tokens"
    " (5123 in the messages, 64 in the completion). Please reduce the length of the messages or completion.",
    "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded",
}})  # fmt: skip
LLAMA_CPP_PYTHON_COMPLETION = json.dumps({"error": {
    "message": "This model's maximum context length is 4096 tokens, however you requested 5187 tokens"
    " (5123 in your prompt; 64 for the completion). Please reduce your prompt; or completion length.",
    "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded",
}})  # fmt: skip
RAW = '{"detail": "Requested tokens (5123) exceed context window of 4096"}'


@pytest.mark.parametrize("body", [LLAMA_SERVER, LLAMA_CPP_PYTHON, LLAMA_CPP_PYTHON_COMPLETION, RAW])
def test_a_prompt_that_does_not_fit_is_a_400_with_both_numbers(body: str) -> None:
    error = _status_error(SERVED, 400, body)
    assert isinstance(error, InvalidRequest) and error.http_status == 400
    assert error.code == "context_exceeded"
    assert error.message == "the prompt is 5123 tokens; smollm2 has a 4096-token context per request"
    assert error.hint is not None and "n_ctx in [engines.llamacpp]" in error.hint and "shorten" in error.hint


def test_other_errors_stay_engine_errors() -> None:
    error = _status_error(SERVED, 400, '{"error": {"message": "bad grammar", "type": "invalid_request_error"}}')
    assert isinstance(error, ChatError) and error.code == "chat_failed"
    assert _status_error(SERVED, 401, LLAMA_SERVER).code == "auth_failed"  # credentials first, whatever the body


def test_a_stream_that_reports_it_as_an_event_is_the_same_error() -> None:
    with pytest.raises(InvalidRequest) as caught:
        _chunks_of(SERVED, LLAMA_SERVER.encode())
    assert caught.value.code == "context_exceeded"
    with pytest.raises(ChatError):
        _chunks_of(SERVED, b'{"error": {"message": "out of memory"}}')
