"""Unit tests of the one chat-request validator (``ltcai.daemon.validation``) and of what a
chat sends an engine (``ltcai.daemon.engine_request``): pure functions, no daemon."""

from __future__ import annotations

from typing import Any

import pytest

from ltcai.compat import AnswerStream, build_profile, clean_answer
from ltcai.daemon.chat import all_stops
from ltcai.daemon.engine_request import engine_params
from ltcai.daemon.validation import (
    EMBED_FIELDS,
    ENGINE_FIELDS,
    check_engine_embeds,
    check_engine_takes,
    check_model_sees,
    parse_chat,
    parse_embeddings,
)
from ltcai.engines.base import EngineAdapter, RequestRules
from ltcai.errors import FieldError

USER = {"role": "user", "content": "hi"}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def _refused(body: dict[str, Any], code: str, param: str) -> FieldError:
    with pytest.raises(FieldError) as caught:
        parse_chat({"model": "m", **body})
    assert (caught.value.code, caught.value.param) == (code, param), caught.value.message
    assert caught.value.http_status == 400
    return caught.value


def test_a_whole_tool_loop_conversation_is_accepted_and_normalised():
    call = parse_chat({
        "model": "m",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
            USER,
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
        "seed": 7, "user": "u", "logprobs": True, "top_logprobs": 2, "presence_penalty": 0.5,
        "frequency_penalty": -0.5, "logit_bias": {"42": -100}, "n": 1,
        "temperature": 0.3, "top_p": 0.9, "max_completion_tokens": 9, "max_tokens": 99, "stop": "END",
        "stream": True, "stream_options": {"include_usage": True},
    })  # fmt: skip
    assert call.messages[0] == {"role": "system", "content": "be brief"}
    assert call.messages[2]["content"] is None and call.messages[2]["tool_calls"][0]["id"] == "c1"
    assert call.messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    assert call.overrides == {"temperature": 0.3, "top_p": 0.9, "max_tokens": 9, "stop": ["END"]}
    assert set(call.fields) == {
        "tools", "tool_choice", "parallel_tool_calls", "response_format", "seed", "user", "logprobs",
        "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias",
    }  # fmt: skip  (n=1 is OpenAI's default: the same request without it)
    assert call.stream and call.include_usage and call.wants_tools and not call.has_images


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({}, "missing_field", "messages"),
        ({"messages": []}, "invalid_field", "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "invalid_field", "messages[0].role"),
        ({"messages": [{"role": "function", "content": "x"}]}, "invalid_field", "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "missing_field", "messages[0].content"),
        ({"messages": [{"role": "user", "content": 5}]}, "invalid_field", "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "invalid_field", "messages[0].content[0].type"),
        ({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]},
         "invalid_field", "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]},
         "invalid_field", "messages[0].content[0].image_url.url"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "invalid_field", "messages[0].tool_call_id"),
        ({"messages": [{"role": "assistant", "content": None}]}, "invalid_field", "messages[0].content"),
        ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {"name": "f"}}]}]},
         "invalid_field", "messages[0].tool_calls[0].function.arguments"),
        ({"messages": [{"role": "user", "content": "x", "tool_call_id": "c"}]}, "unknown_field", "messages[0].tool_call_id"),
        ({"messages": [USER], "frobnicate": 1}, "unknown_field", "frobnicate"),
        ({"messages": [USER], "functions": []}, "unknown_field", "functions"),
        ({"messages": [USER], "temperature": 5}, "invalid_field", "temperature"),
        ({"messages": [USER], "temperature": "hot"}, "invalid_field", "temperature"),
        ({"messages": [USER], "max_tokens": 0}, "invalid_field", "max_tokens"),
        ({"messages": [USER], "stop": [1]}, "invalid_field", "stop"),
        ({"messages": [USER], "seed": 1.5}, "invalid_field", "seed"),
        ({"messages": [USER], "logit_bias": {"1": 500}}, "invalid_field", "logit_bias.1"),
        ({"messages": [USER], "top_logprobs": 3}, "invalid_field", "top_logprobs"),
        ({"messages": [USER], "tools": [{"type": "function", "function": {}}]}, "invalid_field", "tools[0].function.name"),
        ({"messages": [USER], "tool_choice": "required"}, "invalid_field", "tool_choice"),
        ({"messages": [USER], "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}},
         "invalid_field", "tool_choice.function.name"),
        ({"messages": [USER], "response_format": {"type": "yaml"}}, "invalid_field", "response_format.type"),
        ({"messages": [USER], "response_format": {"type": "json_schema"}}, "invalid_field", "response_format.json_schema"),
        ({"messages": [USER], "stream_options": {"include_usage": True}}, "invalid_field", "stream_options"),
        ({"messages": [USER], "stream": True, "stream_options": {"bogus": 1}}, "unknown_field", "stream_options.bogus"),
        ({"messages": [USER], "n": 2}, "unsupported_field", "n"),
    ],
)  # fmt: skip
def test_each_bad_field_is_a_400_naming_it(body, code, param):
    error = _refused(body, code, param)
    assert f"'{param}'" in error.message or param in error.message


def test_images_are_kept_as_parts_and_refused_for_a_model_that_cannot_see():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    call = parse_chat({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}]})
    assert call.has_images and call.messages[0]["content"][1] == image
    check_model_sees(call, "gemma-3", vision=True)
    with pytest.raises(FieldError) as caught:
        check_model_sees(call, "smollm2", vision=False)
    assert caught.value.code == "model_cannot_see" and "smollm2" in caught.value.message


def test_an_engine_refuses_by_name_a_field_it_does_not_take():
    call = parse_chat({"model": "m", "messages": [USER], "tools": [WEATHER], "logit_bias": {"1": 1}})
    check_engine_takes(call, "vllm", None)
    check_engine_takes(call, "x", frozenset({"tools", "logit_bias"}))
    with pytest.raises(FieldError) as caught:
        check_engine_takes(call, "ollama", frozenset({"tools"}))
    assert caught.value.code == "unsupported_field" and caught.value.param == "logit_bias"
    assert "ollama" in caught.value.message


def test_every_engine_declares_only_fields_the_validator_knows():
    from ltcai.engines import lmstudio, llamacpp, mlx, ollama, openai_remote, vllm

    adapters: list[EngineAdapter] = [
        llamacpp.LlamaCppEngine(), mlx.MlxEngine(), ollama.OllamaEngine(), vllm.VllmEngine(), lmstudio.LMStudioEngine(),
        *(openai_remote.RemoteOpenAIEngine(p) for p in openai_remote.PROVIDERS),
    ]  # fmt: skip
    for adapter in adapters:
        fields = adapter.request_rules.fields
        known = ENGINE_FIELDS | EMBED_FIELDS | {"image_url"}
        assert fields is None or fields <= known, (adapter.name, fields - known)


def _profile(model: str = "smollm2", **user: Any):
    return build_profile(model, "openai", user_overrides=user or None)


def test_a_hosted_model_gets_only_what_the_user_set_and_at_most_its_stops():
    """OpenAI: no family temperature/top_p/max_tokens/stops; 4 stops sent, the rest held."""
    rules = RequestRules(profile_sampling=False, max_stop=4, max_tokens_name="max_completion_tokens")
    profile = _profile("gpt-4o")
    assert profile.temperature == 0.2 and len(profile.stop) == 5  # what the family table says
    params, held = engine_params(rules, profile, {}, {})
    assert params == {} and held == []
    params, held = engine_params(rules, profile, {"max_tokens": 50, "stop": ["a", "b", "c", "d", "e"]}, {"seed": 1})
    assert params == {"max_completion_tokens": 50, "stop": ["a", "b", "c", "d"], "seed": 1}
    assert held == ["e"]
    params, _ = engine_params(rules, _profile("gpt-4o", temperature=0.7), {}, {})
    assert params == {"temperature": 0.7}  # the user's own config layer is the user's


def test_a_local_model_gets_the_profile_and_the_request_on_top():
    profile = _profile()
    params, held = engine_params(RequestRules(), profile, {"temperature": 0.9}, {"tools": [WEATHER]})
    assert params["temperature"] == 0.9 and params["max_tokens"] == profile.max_tokens
    assert params["stop"] == list(profile.stop) and params["tools"] == [WEATHER] and held == []


@pytest.mark.parametrize("split", [1, 2, 3, 5, 100])
def test_held_stops_are_cut_whole_and_streamed_alike(split):
    """The stops an engine could not take are enforced on the output with the ones it was
    sent (it may ignore those too): the chat path's AnswerStream / clean_answer."""
    text, profile = "The answer is 4. END of it. STOP", build_profile("some-hosted-model")
    params, held = engine_params(RequestRules(max_stop=1), profile, {"stop": ["STOP", "END"]}, {})
    stops = all_stops(params, held)
    assert params["stop"] == [*profile.stop, "STOP", "END"][:1] and set(stops) >= {"STOP", "END"}
    assert clean_answer(text, profile, stops=stops).answer == "The answer is 4."
    stream = AnswerStream(profile, stops=stops)
    pieces = [stream.feed(text[i : i + split]).content for i in range(0, len(text), split)]
    assert "".join(pieces) + stream.finish().content == "The answer is 4."


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"input": "x"}, "missing_field", "model"),
        ({"model": "m"}, "missing_field", "input"),
        ({"model": "m", "input": ""}, "invalid_field", "input"),
        ({"model": "m", "input": ["a", 3]}, "invalid_field", "input"),
        ({"model": "m", "input": "a", "encoding_format": "hex"}, "invalid_field", "encoding_format"),
        ({"model": "m", "input": "a", "dimensions": 0}, "invalid_field", "dimensions"),
        ({"model": "m", "input": "a", "pooling": "mean"}, "unknown_field", "pooling"),
    ],
)
def test_embedding_requests_are_checked_by_the_same_rules(body, code, param):
    with pytest.raises(FieldError) as caught:
        parse_embeddings(body)
    assert (caught.value.code, caught.value.param) == (code, param)


def test_embedding_inputs_and_the_engines_that_cannot():
    assert parse_embeddings({"model": "m", "input": "a b"}).inputs == ["a b"]
    assert parse_embeddings({"model": "m", "input": [1, 2, 3]}).inputs == [[1, 2, 3]]
    call = parse_embeddings({"model": "m", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 4})
    assert call.inputs == ["a", "b"] and call.base64 and call.fields == {"dimensions": 4}
    check_engine_embeds(call, "openai", RequestRules())
    with pytest.raises(FieldError) as mlx:
        check_engine_embeds(call, "mlx", RequestRules(embeddings=False))
    assert mlx.value.code == "model_cannot_embed" and "mlx" in mlx.value.message
    with pytest.raises(FieldError) as dims:
        check_engine_embeds(call, "llamacpp", RequestRules(fields=frozenset({"tools"})))
    assert dims.value.code == "unsupported_field" and dims.value.param == "dimensions"
