"""Ollama's native API (docs/api.md) on a real ``ltcai serve`` with the FAKE engine, spoken to by
the official ``ollama`` Python client over the Unix socket, and by raw HTTP where the
client hides the wire (NDJSON lines, error bodies).

The fake server shows through ``GET /debug/requests`` what reached it, so each mapping
(``options`` → sampling, ``format`` → ``response_format``, ``images`` → image parts,
``tool_name`` → ``tool_call_id``) is proven at the engine, not only accepted.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import ollama
import pytest
from fake_ollama_server import FakeOllama

from ltcai.compat import SMOKE_PROMPT

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="


@pytest.fixture
def client(daemon):
    return ollama.Client(host="http://ltcai", transport=httpx.HTTPTransport(uds=str(daemon.socket_path)), timeout=60)


@pytest.fixture
def model(daemon, tag, request):
    name = f"fake-ok-{request.node.name[5:36].replace('_', '')}-{tag}"
    daemon.prepare(name)
    return name


def _sent(daemon, model: str) -> list[dict[str, Any]]:
    models = {m["input_id"]: m for m in daemon.client.get("/models").json()["models"]}
    base = models[model]["base_url"].removesuffix("/v1")
    bodies = [r["body"] for r in httpx.get(base + "/debug/requests").json()["requests"]]
    return [b for b in bodies if SMOKE_PROMPT not in json.dumps(b, ensure_ascii=False)]


def test_chat_whole_and_streamed_with_options_mapped(daemon, client, model):
    answer = client.chat(model=model, messages=[{"role": "user", "content": "2+2?"}],
                         options={"temperature": 0.7, "num_predict": 12, "seed": 5, "stop": ["END"]}, keep_alive="10m")  # fmt: skip
    assert answer.message.content == "2 + 2 = 4." and answer.done and answer.done_reason == "stop"
    assert answer.eval_count > 0 and answer.total_duration > 0
    sent = _sent(daemon, model)[-1]
    assert (sent["temperature"], sent["max_tokens"], sent["seed"]) == (0.7, 12, 5) and "END" in sent["stop"]
    assert "keep_alive" not in sent  # the daemon's, not the engine's
    (running,) = [m for m in daemon.client.get("/api/ps").json()["models"] if m["model"] == model]
    assert running["ltcai"]["keep_alive_s"] == 600 and running["expires_at"]  # the lifecycle took it

    parts = list(client.chat(model=model, messages=[{"role": "user", "content": "2+2?"}], stream=True))
    assert "".join(p.message.content for p in parts) == "2 + 2 = 4." and len(parts) > 2
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done and parts[-1].eval_count > 0


def test_a_tool_loop_in_ollamas_shape(daemon, client, model):
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.chat(model=model, messages=[ask], tools=[WEATHER])
    (call,) = first.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}  # an object
    streamed = [c for p in client.chat(model=model, messages=[ask], tools=[WEATHER], stream=True)
                for c in (p.message.tool_calls or [])]  # fmt: skip
    assert [(c.function.name, c.function.arguments) for c in streamed] == [("get_weather", {"city": "Paris"})]

    history = [ask, first.message.model_dump(exclude_none=True), {"role": "tool", "content": "11 C", "tool_name": "get_weather"}]
    second = client.chat(model=model, messages=history, tools=[WEATHER])
    assert second.message.content == "The tool said: 11 C" and not second.message.tool_calls
    turn = _sent(daemon, model)[-1]["messages"]
    assert turn[-2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert turn[-1]["tool_call_id"] == turn[-2]["tool_calls"][0]["id"]  # tied by the tool's name


def test_generate_format_images_raw_and_load(daemon, client, model):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    structured = client.generate(model=model, prompt="2+2?", format=schema, system="Answer in JSON.")
    assert json.loads(structured.response) == {"answer": 4}
    sent = _sent(daemon, model)[-1]
    assert sent["response_format"]["json_schema"]["schema"] == schema and sent["messages"][0]["role"] == "system"
    assert json.loads(client.generate(model=model, prompt="x", format="json").response) == {"answer": 4}

    streamed = list(client.generate(model=model, prompt="2+2?", stream=True))
    assert "".join(p.response for p in streamed) == "2 + 2 = 4." and streamed[-1].done

    raw = client.generate(model=model, prompt="<|im_start|>user\n2+2<|im_end|>", raw=True)
    assert raw.response == "2 + 2 = 4."
    assert httpx.get(_base(daemon, model) + "/debug/requests").json()["requests"][-1]["path"] == "/v1/completions"

    loaded = client.generate(model=model)  # no prompt: Ollama's "load the model"
    assert loaded.done and loaded.done_reason == "load"

    with pytest.raises(ollama.ResponseError) as blind:
        client.generate(model=model, prompt="what is this?", images=[PNG])
    assert blind.value.status_code == 400 and "cannot see" in blind.value.error

    unloaded = client.generate(model=model, keep_alive=0)  # no prompt, keep_alive 0: unload it
    assert unloaded.done_reason == "unload" and model not in {m.model for m in client.ps().models}


def test_a_vision_model_gets_ollamas_images_as_parts(daemon, client, tag):
    model = f"fake-gemma-ok-{tag}"
    daemon.prepare(model)
    client.chat(model=model, messages=[{"role": "user", "content": "what is this?", "images": [PNG]}])
    content = _sent(daemon, model)[-1]["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "what is this?"}
    assert content[1]["image_url"]["url"] == f"data:image/png;base64,{PNG}"


def test_embed_tags_ps_show_version(daemon, client, model):
    embedded = client.embed(model=model, input=["one", "two words"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 8 and embedded.prompt_eval_count == 3
    assert len(client.embeddings(model=model, prompt="one").embedding) == 8

    tags = {m.model: m for m in client.list().models}
    assert model in tags and "smollm2" in tags
    running = {m.model for m in client.ps().models}
    assert model in running and "smollm2" not in running
    shown = client.show(model)
    assert "completion" in shown.capabilities and "embedding" in shown.capabilities
    assert "temperature" in shown.parameters
    assert daemon.client.get("/api/version").json()["version"]


def test_pull_streams_a_prepare_as_ollama_status_lines_and_delete_unloads(start_daemon):
    """The prepare behind /api/pull is a real one: ltcai's ``ollama`` engine against the FAKE
    Ollama server (``fake_ollama_server.py``), whose layer downloads are the progress."""
    with FakeOllama(library={"llama3.2:1b": [4_000_000, 2_000]}) as upstream:
        daemon = start_daemon({"OLLAMA_HOST": upstream.host_port})
        client = ollama.Client(host="http://ltcai", transport=httpx.HTTPTransport(uds=str(daemon.socket_path)), timeout=60)
        model = "ollama:llama3.2:1b"
        statuses = [p.model_dump(exclude_none=True) for p in client.pull(model, stream=True)]
        assert statuses[0] == {"status": "pulling manifest"} and statuses[-1] == {"status": "success"}
        assert any(s.get("total") and "completed" in s for s in statuses), statuses
        assert client.pull(model).status == "success"  # the ready model: nothing more to do
        assert model in {m.model for m in client.ps().models}

        client.delete(model)
        assert model not in {m.model for m in client.ps().models}
        with pytest.raises(ollama.ResponseError) as gone:
            client.delete(model)
        assert gone.value.status_code == 404


def test_errors_are_ollamas_shape_with_ltcais_hint(daemon, model):
    response = daemon.client.post("/api/chat", json={"model": model, "messages": [{"role": "user", "content": "x"}],
                                                      "options": {"num_ctx": 4096}})  # fmt: skip
    assert response.status_code == 400
    body = response.json()
    assert isinstance(body["error"], str) and "num_ctx" in body["error"]
    assert body["code"] == "unsupported_field" and body["param"] == "options.num_ctx" and body["hint"]
    failed = daemon.client.post("/api/pull", json={"model": "no-such-gguf-anywhere"})
    last = json.loads(failed.text.strip().splitlines()[-1])  # the prepare's failure, as the stream's last line
    assert "no-such-gguf-anywhere" in last["error"] and last["code"] == "prepare_failed"
    missing = daemon.client.post("/api/show", json={"model": "no-such-model-anywhere"})
    assert missing.status_code == 404 and missing.json()["error"] == "model 'no-such-model-anywhere' not found"
    assert daemon.client.get("/api/nosuch").json()["code"] == "not_found"


def _base(daemon, model: str) -> str:
    models = {m["input_id"]: m for m in daemon.client.get("/models").json()["models"]}
    return models[model]["base_url"].removesuffix("/v1")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_keeps_its_token_for_ollama_clients_unless_opted_out_on_loopback(start_daemon, daemon_root, tag):
    port = _free_port()
    daemon = start_daemon({"LTCAI_HTTP": f"127.0.0.1:{port}"})
    token = (daemon.config_dir / "token").read_text().strip()
    host = f"http://127.0.0.1:{port}"
    with_token = ollama.Client(host=host, headers={"Authorization": f"Bearer {token}"})
    assert any(m.model == "smollm2" for m in with_token.list().models)  # the client sends the header it is given
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=host).list()
    assert refused.value.status_code == 401 and "token" in refused.value.error  # Ollama's shape
    assert daemon.client.get("/status").json()["warnings"] == []
    daemon.stop()

    port = _free_port()
    daemon = start_daemon({"LTCAI_HTTP": f"127.0.0.1:{port}"}, config="ollama_without_token = true\n",
                          root=daemon_root / "open")  # fmt: skip
    open_client = ollama.Client(host=f"http://127.0.0.1:{port}")
    assert any(m.model == "smollm2" for m in open_client.list().models)
    assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401  # /v1 keeps the token
    (warning,) = daemon.client.get("/status").json()["warnings"]
    assert "without the token" in warning
    shown = daemon.cli("status")
    assert "warning:" in shown.stdout and "without the token" in shown.stdout


def test_the_token_free_opt_in_is_refused_off_loopback():
    from ltcai.config.paths import default_paths
    from ltcai.config.settings import Settings
    from ltcai.daemon.tcp_access import ollama_open
    from ltcai.errors import InvalidRequest

    settings = Settings(paths=default_paths({}), http="0.0.0.0:8080", ollama_without_token=True)
    with pytest.raises(InvalidRequest) as refused:
        ollama_open(settings, loopback=False)
    assert "loopback only" in refused.value.message
    assert ollama_open(settings, loopback=True) is True


def test_reasoning_is_thinking_when_asked(daemon, client, tag):
    """Post-processing's ``reasoning`` is Ollama's ``thinking`` with ``think``; never in content."""
    model = f"fake-think-api-{tag}"
    daemon.prepare(model)
    ask = [{"role": "user", "content": "2+2?"}]
    thought = client.chat(model=model, messages=ask, think=True)
    assert thought.message.thinking == "Two and two make four." and thought.message.content == "2 + 2 = 4."
    plain = client.chat(model=model, messages=ask)
    assert plain.message.thinking is None and plain.message.content == "2 + 2 = 4."
    parts = list(client.generate(model=model, prompt="2+2?", think=True, stream=True))
    assert "".join(p.thinking or "" for p in parts) == "Two and two make four."
    assert "".join(p.response for p in parts) == "2 + 2 = 4."
