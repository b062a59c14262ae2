"""A streamed ``/v1`` or ``/api`` request that starts a prepare says so while it waits, and
names the job in ``X-Ltcai-Prepare-Job`` (issue 13 item 5): a real ``ltcai serve`` with the
FAKE engine, whose ``slow-download`` models take ~0.3 s to prepare with progress all along.

``/v1/chat/completions`` is covered in ``tests/e2e/test_lifecycle_e2e.py`` and the unit
tests of the OpenAI surface; here the others: ``/v1/completions`` (SSE comments), Ollama's
``/api/chat`` and ``/api/generate`` (empty chunks with the progress under ``ltcai``), read
raw and through the official ``ollama`` client.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import ollama
import pytest

HEADER = "x-ltcai-prepare-job"


@pytest.fixture
def jit_daemon(start_daemon):
    """A daemon whose unprepared ids go to the fake engine (as a client's would to llamacpp)."""
    return start_daemon({"LTCAI_DEFAULT_ENGINE": "fake"})


def _report(daemon, job_id: str) -> dict[str, Any]:
    return daemon.client.get(f"/jobs/{job_id}").json()["report"]


def test_a_v1_completion_stream_waits_with_comments_and_names_the_job(jit_daemon, tag):
    model = f"fake-slow-download-cmpl-{tag}"
    body = {"model": model, "prompt": "2+2=", "stream": True}
    with jit_daemon.client.stream("POST", "/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        job_id = response.headers[HEADER]
        lines = [line for line in response.iter_lines() if line]
    comments = [line for line in lines if line.startswith(":")]
    data = [line for line in lines if line.startswith("data: ")]
    assert comments and lines.index(comments[0]) == 0 and lines.index(comments[-1]) < lines.index(data[0])
    assert any("downloading" in c for c in comments) and all(job_id in c for c in comments)
    assert data[-1] == "data: [DONE]"
    assert "".join(json.loads(d[6:])["choices"][0]["text"] for d in data[:-1] if json.loads(d[6:])["choices"]).strip()
    assert _report(jit_daemon, job_id)["ready_to_chat"] is True

    # Ready now: no comments, no header.
    with jit_daemon.client.stream("POST", "/v1/completions", json=body, timeout=60) as response:
        assert HEADER not in response.headers
        assert not any(line.startswith(":") for line in response.iter_lines())


@pytest.mark.parametrize(("route", "key"), [("/api/chat", "message"), ("/api/generate", "response")])
def test_an_ollama_stream_waits_with_empty_chunks_that_carry_the_progress(jit_daemon, tag, route, key):
    model = f"fake-slow-download-{key}-{tag}"
    body: dict[str, Any] = {"model": model}  # Ollama streams unless told not to
    body.update({"messages": [{"role": "user", "content": "2+2?"}]} if key == "message" else {"prompt": "2+2?"})
    with jit_daemon.client.stream("POST", route, json=body, timeout=60) as response:
        assert response.status_code == 200 and "ndjson" in response.headers["content-type"]
        job_id = response.headers[HEADER]
        lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
    waiting = [line for line in lines if "ltcai" in line]
    answer = [line for line in lines if "ltcai" not in line]
    assert waiting and lines[: len(waiting)] == waiting  # all before the answer, from the first line
    assert all(line["ltcai"]["prepare_job"] == job_id and not line["done"] and line["model"] == model for line in waiting)
    assert any("downloading" in line["ltcai"]["status"] for line in waiting)
    empty = {"role": "assistant", "content": ""} if key == "message" else ""
    assert all(line[key] == empty for line in waiting)
    text = "".join(line[key]["content"] if key == "message" else line[key] for line in answer)
    assert text == "2 + 2 = 4." and answer[-1]["done"] is True
    assert _report(jit_daemon, job_id)["ready_to_chat"] is True


def test_the_official_ollama_client_reads_a_stream_that_waited_on_a_prepare(jit_daemon, tag):
    client = ollama.Client(host="http://ltcai", transport=httpx.HTTPTransport(uds=str(jit_daemon.socket_path)), timeout=60)
    parts = list(client.chat(model=f"fake-slow-download-client-{tag}", messages=[{"role": "user", "content": "2+2?"}], stream=True))
    assert len(parts) > 2 and not parts[0].message.content  # a waiting chunk parsed as an empty one
    assert "".join(p.message.content or "" for p in parts) == "2 + 2 = 4." and parts[-1].done
    generated = list(client.generate(model=f"fake-slow-download-gen-{tag}", prompt="2+2?", stream=True))
    assert "".join(p.response or "" for p in generated) == "2 + 2 = 4." and generated[-1].done


def test_an_ollama_answer_not_streamed_names_the_job_that_prepared_it(jit_daemon, tag):
    model = f"fake-ok-whole-{tag}"
    answer = jit_daemon.client.post("/api/chat", json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False})
    assert answer.status_code == 200 and answer.json()["message"]["content"] == "2 + 2 = 4."
    assert _report(jit_daemon, answer.headers[HEADER])["ready_to_chat"] is True
    again = jit_daemon.client.post("/api/generate", json={"model": model, "prompt": "hi", "stream": False})
    assert again.status_code == 200 and HEADER not in again.headers

    # A prepare that fails: the stream's last line is Ollama's error, naming the job.
    failing = f"fake-fail-load-{tag}"
    with jit_daemon.client.stream("POST", "/api/chat", json={"model": failing, "messages": [{"role": "user", "content": "hi"}]}) as response:
        job_id = response.headers[HEADER]
        lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
    assert lines[-1]["code"] == "model_not_ready" and job_id in lines[-1]["hint"]
    assert all("ltcai" in line for line in lines[:-1])
