"""The whole OpenAI chat request through a real ``ltcai serve`` with the FAKE engine, spoken
to by the official ``openai`` SDK over the Unix socket.

The fake server (``tests/fakes/fake_openai_server.py``) answers a chat with ``tools`` with
a call of the tool, a ``response_format`` with JSON that fits it, and shows through
``GET /debug/requests`` exactly what reached it: so each test proves a field was passed on
(or refused), not merely accepted.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from ltcai.compat import SMOKE_PROMPT

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def sdk(daemon):
    http = httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket_path)), timeout=60)
    client = openai.OpenAI(base_url="http://ltcai/v1", api_key="unused-on-the-socket", http_client=http, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def model(daemon, tag, request):
    """A FAKE model prepared on the fake engine; /v1 finds it by the id it was prepared with."""
    name = f"fake-ok-{request.node.name[5:40].replace('_', '')}-{tag}"
    daemon.prepare(name)
    return name


def _base(daemon, model: str) -> str:
    """The FAKE engine server's root URL for ``model``."""
    models = {m["input_id"]: m for m in daemon.client.get("/models").json()["models"]}
    return models[model]["base_url"].removesuffix("/v1")


def _engine_requests(daemon, model: str) -> list[dict[str, Any]]:
    bodies = [r["body"] for r in httpx.get(_base(daemon, model) + "/debug/requests").json()["requests"]]
    return [b for b in bodies if "messages" in b and SMOKE_PROMPT not in json.dumps(b, ensure_ascii=False)]


def test_a_two_turn_tool_loop_keeps_the_calls_and_passes_every_field(daemon, sdk, model):
    first = sdk.chat.completions.create(
        model=model, messages=ASK, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, seed=11,
        user="u-1", presence_penalty=0.5, frequency_penalty=0.25, logit_bias={"42": -5},
    )  # fmt: skip
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    sent = _engine_requests(daemon, model)
    assert len(sent) == 1  # a tool call is an answer: no recovery retry for its empty content
    for name, value in (("tools", [WEATHER]), ("tool_choice", "required"), ("parallel_tool_calls", False),
                        ("seed", 11), ("user", "u-1"), ("presence_penalty", 0.5), ("frequency_penalty", 0.25),
                        ("logit_bias", {"42": -5})):  # fmt: skip
        assert sent[0][name] == value, name

    second = sdk.chat.completions.create(
        model=model,
        tools=[WEATHER],
        messages=[*ASK, choice.message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}],
    )  # fmt: skip
    assert second.choices[0].message.content == "The tool said: sunny, 21 C"
    assert second.choices[0].message.tool_calls is None
    turn = _engine_requests(daemon, model)[-1]["messages"]
    assert turn[-2]["tool_calls"][0]["id"] == call.id and turn[-2]["content"] is None
    assert turn[-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}


def test_streamed_tool_call_deltas_arrive_whole_and_in_order_with_real_usage(daemon, sdk, model):
    stream = sdk.chat.completions.create(
        model=model, messages=ASK, tools=[WEATHER], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id == "call_fake0" and deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(arguments) == {"city": "Paris"} and len(deltas) > 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert len(_engine_requests(daemon, model)) == 1


def test_json_schema_logprobs_and_usage_reach_the_engine_and_come_back(daemon, sdk, model):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    answer = sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "2+2?"}], logprobs=True, top_logprobs=2,
        response_format={"type": "json_schema", "json_schema": {"name": "sum", "schema": schema}},
    )  # fmt: skip
    assert json.loads(answer.choices[0].message.content) == {"answer": 4}
    assert answer.choices[0].logprobs.content[0].token
    sent = _engine_requests(daemon, model)[-1]
    assert sent["response_format"]["json_schema"]["schema"] == schema and sent["top_logprobs"] == 2

    streamed = list(sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "2+2?"}], stream=True,
        stream_options={"include_usage": True},
    ))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "2 + 2 = 4."
    assert streamed[-1].usage.total_tokens == streamed[-1].usage.prompt_tokens + streamed[-1].usage.completion_tokens


def test_errors_name_the_field_in_openais_shape(daemon, sdk, model):
    with pytest.raises(openai.BadRequestError) as unknown:
        sdk.chat.completions.create(model=model, messages=ASK, extra_body={"frobnicate": True})
    assert unknown.value.body["code"] == "unknown_field" and unknown.value.body["param"] == "frobnicate"
    assert unknown.value.body["type"] == "invalid_request_error" and unknown.value.body["hint"]
    with pytest.raises(openai.BadRequestError) as image:
        sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])  # fmt: skip
    assert image.value.body["code"] == "model_cannot_see" and "fake-ok-errors" in image.value.body["message"]


def test_a_vision_model_gets_the_image_part(daemon, sdk, tag):
    model = f"fake-gemma-ok-{tag}"  # the gemma family profile sees
    daemon.prepare(model)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": [{"type": "text", "text": "What?"}, image]}])
    content = _engine_requests(daemon, model)[-1]["messages"][-1]["content"]
    assert image in content


def test_the_control_chat_speaks_the_same_request(daemon, model):
    daemon.prepare(model)
    body = {"model": model, "engine": "fake", "messages": ASK, "tools": [WEATHER]}
    answer = daemon.client.post("/chat", json=body).json()
    assert answer["tool_calls"][0]["function"]["name"] == "get_weather" and answer["finish_reason"] == "tool_calls"
    deltas = list(daemon.events("POST", "/chat", {**body, "stream": True}))
    assert [d["tool_calls"][0]["index"] for d in deltas if "tool_calls" in d] == [0] * sum("tool_calls" in d for d in deltas)
    refused = daemon.client.post("/chat", json={**body, "tools": "all of them"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tools"


def test_legacy_completions_answer_and_stream_with_usage(daemon, sdk, model):
    whole = sdk.completions.create(model=model, prompt="2+2=", max_tokens=8, seed=3)
    assert whole.choices[0].text == "2 + 2 = 4." and whole.usage.completion_tokens > 0
    sent = httpx.get(_base(daemon, model) + "/debug/requests").json()["requests"][-1]
    assert sent["path"] == "/v1/completions" and sent["body"]["seed"] == 3 and sent["body"]["prompt"] == "2+2="
    chunks = list(sdk.completions.create(model=model, prompt="2+2=", stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "2 + 2 = 4."
    assert len([c for c in chunks if c.choices and c.choices[0].text]) > 1  # streamed, not one lump
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    with pytest.raises(openai.BadRequestError) as echo:
        sdk.completions.create(model=model, prompt="x", echo=True)
    assert echo.value.body["param"] == "echo"


def test_embeddings_float_and_base64_and_a_model_that_cannot_embed(daemon, sdk, model, tag):
    floats = sdk.embeddings.create(model=model, input=["one", "two words"], encoding_format="float", dimensions=4)
    assert [d.index for d in floats.data] == [0, 1] and all(len(d.embedding) == 4 for d in floats.data)
    assert floats.usage.prompt_tokens == 3
    decoded = sdk.embeddings.create(model=model, input=["one", "two words"], dimensions=4)  # the SDK asks base64
    for got, want in zip(decoded.data, floats.data, strict=True):
        assert got.embedding == pytest.approx(want.embedding, abs=1e-6)
    sent = [r["body"] for r in httpx.get(_base(daemon, model) + "/debug/requests").json()["requests"]][-1]
    assert sent["encoding_format"] == "float" and sent["dimensions"] == 4  # ltcai encodes base64 itself

    mute = f"fake-ok-no-embed-{tag}"
    daemon.prepare(mute)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.embeddings.create(model=mute, input="x")
    assert refused.value.body["code"] == "model_cannot_embed" and mute in refused.value.body["message"]


def test_reasoning_is_reasoning_content_on_v1(daemon, sdk, tag):
    """A ``<think>`` block (post-processing's ``reasoning``) is OpenAI's ``reasoning_content``."""
    model = f"fake-think-v1-{tag}"
    daemon.prepare(model)
    answer = sdk.chat.completions.create(model=model, messages=ASK)
    assert answer.choices[0].message.content == "2 + 2 = 4."
    assert answer.choices[0].message.model_extra["reasoning_content"] == "Two and two make four."
    chunks = list(sdk.chat.completions.create(model=model, messages=ASK, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas) == "Two and two make four."
    assert "".join(d.content or "" for d in deltas) == "2 + 2 = 4."
