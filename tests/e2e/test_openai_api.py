"""Real OpenAI clients against a real daemon and the real SmolLM2 engine.

The official ``openai`` package (sync and async, streaming and not) over loopback TCP
with the bearer token, and ``curl`` over the Unix socket. The first request for a model
that is not prepared prepares it just in time.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import openai
import pytest

from ltcai.compat import BAD_MARKERS

from .conftest import RunningDaemon, TcpDaemon

pytestmark = pytest.mark.e2e


def test_openai_sdk_sync_just_in_time_prepare_and_stream(tcp_daemon: TcpDaemon) -> None:
    daemon = tcp_daemon.daemon
    base_url = tcp_daemon.base_url
    token = tcp_daemon.token
    client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0)
    before = {m.id: m.model_extra["ltcai"] for m in client.models.list().data}
    assert before["smollm2"]["loaded"] is False  # listed before anything is prepared: pickers show it
    answer = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=40
    )
    text = answer.choices[0].message.content
    assert text and not any(m in text for m in BAD_MARKERS)
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    after = {m.id: m.model_extra["ltcai"] for m in client.models.list().data}
    assert after["smollm2"]["loaded"] is True and after["smollm2"]["status"] == "ready"
    assert [m for m, v in after.items() if v["loaded"]] == ["smollm2"]

    stream = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Name three colors."}], max_tokens=40, stream=True
    )
    deltas = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 1 and "".join(deltas).strip()
    assert not any(m in "".join(deltas) for m in BAD_MARKERS)


@pytest.mark.asyncio
async def test_openai_sdk_async(tcp_daemon: TcpDaemon) -> None:
    base_url = tcp_daemon.base_url
    token = tcp_daemon.token
    client = openai.AsyncOpenAI(base_url=base_url, api_key=token, max_retries=0)
    answer = await client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=20
    )
    assert answer.choices[0].message.content
    stream = await client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=20, stream=True
    )
    parts = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(parts).strip()
    await client.close()


@pytest.mark.parametrize("key", ["", "wrong-token"])
def test_wrong_or_missing_token_is_401_with_an_openai_error(tcp_daemon: TcpDaemon, key: str) -> None:
    base_url = tcp_daemon.base_url
    client = openai.OpenAI(base_url=base_url, api_key=key or "unset", max_retries=0)
    if not key:
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, default_headers={"Authorization": ""})
    with pytest.raises(openai.AuthenticationError) as failure:
        client.models.list()
    body = failure.value.body
    assert isinstance(body, dict) and body["code"] == "invalid_api_key" and body["type"] == "authentication_error"


def test_token_file_is_private(tcp_daemon: TcpDaemon) -> None:
    daemon = tcp_daemon.daemon
    token_file = daemon.root / "config" / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert (daemon.root / "config").stat().st_mode & 0o777 == 0o700


def test_curl_over_the_unix_socket(e2e_daemon: RunningDaemon) -> None:
    # curl is how the README shows the socket: a host without it fails here, not skips.
    assert shutil.which("curl"), "curl is not installed (apt-get install curl)"
    body = json.dumps({"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16})
    result = subprocess.run(
        ["curl", "-sS", "--unix-socket", str(e2e_daemon.socket), "http://ltcai/v1/chat/completions",
         "-H", "content-type: application/json", "-d", body],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    answer = json.loads(result.stdout)
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"]
    missing = subprocess.run(
        ["curl", "-sS", "--unix-socket", str(e2e_daemon.socket), "http://ltcai/v1/chat/completions",
         "-H", "content-type: application/json", "-d", '{"model": "smollm2"}'],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    error = json.loads(missing.stdout)["error"]
    assert (error["code"], error["param"]) == ("missing_field", "messages")


def test_a_model_that_cannot_be_prepared_is_a_clear_error(tcp_daemon: TcpDaemon) -> None:
    base_url = tcp_daemon.base_url
    token = tcp_daemon.token
    client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0)
    with pytest.raises(openai.APIStatusError) as failure:
        client.chat.completions.create(model="/nonexistent/x.gguf", messages=[{"role": "user", "content": "hi"}])
    assert failure.value.status_code == 400
    assert failure.value.body["code"] == "invalid_model_id"


def test_json_usage_and_completions_stream_with_the_real_engine(tcp_daemon: TcpDaemon) -> None:
    """response_format reaches llama.cpp's grammar; streamed usage is real; /v1/completions streams."""
    base_url = tcp_daemon.base_url
    token = tcp_daemon.token
    client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=180)
    structured = client.chat.completions.create(
        model="smollm2", max_tokens=300, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Give a JSON object with a key answer for 2+2."}],
    )  # fmt: skip
    assert structured.choices[0].finish_reason == "stop", structured.choices[0].message.content
    assert isinstance(json.loads(structured.choices[0].message.content), dict)

    chunks = list(client.chat.completions.create(
        model="smollm2", max_tokens=30, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Name three colors."}],
    ))  # fmt: skip
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens > 0
    streamed = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(streamed) > 1

    pieces = list(client.completions.create(model="smollm2", prompt="The sky is", max_tokens=12, stream=True))
    text = "".join(p.choices[0].text for p in pieces if p.choices)
    assert len([p for p in pieces if p.choices and p.choices[0].text]) > 1 and text.strip()
