"""Tool calling for a model whose template has none: unit tests of ``ltcai.daemon.tool_emulation``
(pure), and the whole loop through a real ``ltcai serve`` with the FAKE engine, whose
profile is given a chat template without tools (as SmolLM2's GGUF has) in the config."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from ltcai.compat import SMOKE_PROMPT
from ltcai.daemon.tool_emulation import emulated_call, template_has_tools, tool_calls_in
from ltcai.daemon.validation import parse_chat

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def test_a_template_without_tools_is_told_apart():
    assert not template_has_tools(CHATML)
    assert template_has_tools("{% if tools %}{{ tools | tojson }}{% endif %}")
    assert template_has_tools(None)  # unknown: the engine's own handling stands


def test_the_tools_go_to_the_prompt_and_a_required_call_is_constrained():
    call = parse_chat({
        "model": "m", "tools": [WEATHER], "tool_choice": "required", "seed": 3,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
    })  # fmt: skip
    emulated = emulated_call(call)
    assert set(emulated.fields) == {"seed", "response_format"}  # no tool field reaches the engine
    schema = emulated.fields["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["name"] == {"const": "get_weather"} and schema["required"] == ["name", "arguments"]
    system, user, assistant, result = emulated.messages
    assert system["content"].startswith("Be brief.") and "get_weather" in system["content"] and "must call" in system["content"]
    assert assistant == {"role": "assistant", "content": '{"name": "get_weather", "arguments": {"city": "Paris"}}'}
    assert result == {"role": "user", "content": "The tool get_weather returned: sunny"}
    auto = emulated_call(parse_chat({"model": "m", "tools": [WEATHER], "messages": [{"role": "user", "content": "hi"}]}))
    assert "response_format" not in auto.fields and auto.messages[0]["role"] == "system"


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
        '[{"name": "get_weather", "parameters": {"city": "Paris"}}]',
    ],
)
def test_a_call_written_as_text_becomes_a_tool_call(text):
    (call,) = tool_calls_in(text, [WEATHER])
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'} and call["id"].startswith("call_")


@pytest.mark.parametrize(
    "text", ["It is sunny.", '{"name": "other_tool", "arguments": {}}', '{"answer": 4}', "{not json", '["a"]']
)
def test_anything_else_stays_the_answer(text):
    assert tool_calls_in(text, [WEATHER]) is None


def _sent(daemon, model: str) -> list[dict[str, Any]]:
    models = {m["input_id"]: m for m in daemon.client.get("/models").json()["models"]}
    base = models[model]["base_url"].removesuffix("/v1")
    bodies = [r["body"] for r in httpx.get(base + "/debug/requests").json()["requests"]]
    return [b for b in bodies if SMOKE_PROMPT not in json.dumps(b, ensure_ascii=False)]


def test_a_two_turn_tool_loop_for_a_model_whose_template_has_no_tools(start_daemon, tag):
    model = f"fake-ok-notools-{tag}"
    daemon = start_daemon(config=f'[profiles."{model}"]\nchat_template = {json.dumps(CHATML)}\n')
    daemon.prepare(model)
    http = httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket_path)), timeout=60)
    client = openai.OpenAI(base_url="http://ltcai/v1", api_key="unused", http_client=http, max_retries=0)
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=model, messages=ask, tools=[WEATHER], tool_choice="required")
    (call,) = first.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert first.choices[0].finish_reason == "tool_calls" and first.choices[0].message.content is None
    sent = _sent(daemon, model)[-1]
    assert "tools" not in sent and sent["response_format"]["type"] == "json_schema"  # constrained by ltcai

    streamed = list(client.chat.completions.create(model=model, messages=ask, tools=[WEATHER], tool_choice="required", stream=True))
    deltas = [d for c in streamed if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert [(d.function.name, json.loads(d.function.arguments)) for d in deltas] == [("get_weather", {"city": "Paris"})]

    history = [*ask, first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]  # fmt: skip
    second = client.chat.completions.create(model=model, messages=history, tools=[WEATHER])
    assert second.choices[0].message.content == "2 + 2 = 4." and second.choices[0].message.tool_calls is None
    turns = _sent(daemon, model)[-1]["messages"]
    assert turns[-1] == {"role": "user", "content": "The tool get_weather returned: sunny, 21 C"}
    http.close()
