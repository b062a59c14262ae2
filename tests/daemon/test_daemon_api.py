"""The control API's resources on a real ``ltcai serve`` subprocess with the FAKE engine.

status, engines, prepare (stream / job id), jobs (list, show, follow, cancel is in
test_daemon_jobs), models (loaded, unload), profiles (list, show, forget), chat (one
answer, streamed, an engine that crashes under a chat), logs.
"""

from __future__ import annotations

import os
from typing import Any



def _chat(daemon, model: str, **body: Any):
    turn = {} if "messages" in body else {"prompt": "What is 2+2?"}  # one or the other, never both
    return daemon.client.post("/chat", json={"model": model, "engine": "fake", **turn, **body})


def test_status_describes_the_daemon(daemon):
    status = daemon.client.get("/status").json()
    assert status["pid"] == daemon.process.pid
    assert status["socket"] == str(daemon.socket_path)
    assert status["data_dir"] == str(daemon.data_dir)
    assert "fake" in status["engines"]
    assert isinstance(status["jobs_running"], int)
    assert isinstance(status["models"], list)
    assert status["version"]


def test_engines_lists_the_fake_engine_with_its_check(daemon):
    engines = {e["name"]: e for e in daemon.client.get("/engines").json()["engines"]}
    fake = engines["fake"]
    assert fake["available"] is True
    assert fake["version"] == "0.0-fake"
    assert "FAKE" in fake["description"]


def test_prepare_without_stream_answers_202_with_a_job_to_follow(daemon, tag):
    response = daemon.client.post("/prepare", json={"model": f"fake-slow-load-{tag}", "engine": "fake", "stream": False})
    assert response.status_code == 202
    job = response.json()
    assert job["engine"] == "fake"
    assert job["model"] == f"fake-slow-load-{tag}"
    assert job["status"] == "running"
    followed = list(daemon.events("GET", f"/jobs/{job['job_id']}/events"))
    assert followed[0]["type"] == "state" and followed[0]["state"] == "resolving"
    assert followed[-1]["report"]["state"] == "ready"


def test_jobs_list_show_and_events_tell_the_same_story(daemon, tag):
    events = daemon.prepare(f"fake-ok-{tag}")
    job_id = events[-1]["report"]["job_id"]
    listed = {j["job_id"]: j for j in daemon.client.get("/jobs").json()["jobs"]}
    assert listed[job_id]["status"] == "ok"
    assert listed[job_id]["state"] == "ready"
    shown = daemon.client.get(f"/jobs/{job_id}").json()
    assert shown["report"] == events[-1]["report"]
    replay = list(daemon.events("GET", f"/jobs/{job_id}/events"))
    assert replay == events  # followed from the start, long after the end
    missing = daemon.client.get("/jobs/nosuchjob")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "job_not_found"


def test_chat_answers_once_and_streamed(daemon, tag):
    model = f"fake-ok-{tag}"
    daemon.prepare(model)
    answer = _chat(daemon, model)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["content"] == "2 + 2 = 4."
    assert body["finish_reason"] == "stop"
    assert body["recovered"] is False
    assert body["model"] == model

    deltas = list(daemon.events("POST", "/chat", {"model": model, "engine": "fake", "prompt": "2+2?", "stream": True}))
    assert "".join(d.get("content", "") for d in deltas) == "2 + 2 = 4."
    assert deltas[-1] == {"finish_reason": "stop"}

    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert _chat(daemon, model, messages=messages, temperature=0.5, max_tokens=8).json()["content"] == "2 + 2 = 4."


def test_chat_with_a_model_not_prepared_is_409_with_a_hint(daemon, tag):
    response = _chat(daemon, f"fake-ok-never-prepared-{tag}")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "model_not_ready"
    assert "ltcai prepare" in error["hint"]


def test_an_engine_that_dies_under_a_chat_gives_a_clear_error_and_the_model_stops(daemon, tag, pid_alive, wait_until):
    """FAKE server exits on the first chat: 5xx JSON, model marked stopped, next chat 409."""
    model = f"fake-crash-chat-{tag}"
    report = daemon.report(model)
    assert report["state"] == "ready"
    pid = daemon.engine_pid(model)
    response = _chat(daemon, model)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "engine_unreachable"

    def stopped() -> bool:
        models = {m["model"]: m for m in daemon.client.get("/models").json()["models"]}
        return models[model]["status"] == "stopped"

    wait_until(stopped)
    assert not pid_alive(pid)
    again = _chat(daemon, model)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "model_not_ready"
    # Preparing again starts a fresh server and the model chats again.
    assert daemon.report(model, force=True)["state"] == "ready"
    assert daemon.engine_pid(model) != pid


def test_unload_stops_the_engine_and_forgets_the_model(daemon, tag, pid_alive):
    model = f"fake-ok-{tag}"
    daemon.prepare(model)
    pid = daemon.engine_pid(model)
    response = daemon.client.post("/models/unload", json={"model": model, "engine": "fake"})
    assert response.status_code == 200
    assert response.json()["unloaded"]["model"] == model
    assert not pid_alive(pid)
    assert model not in {m["model"] for m in daemon.client.get("/models").json()["models"]}
    again = daemon.client.post("/models/unload", json={"model": model, "engine": "fake"})
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "model_not_loaded"


def test_profiles_list_show_with_layers_and_forget(daemon, tag):
    model = f"fake-ok-{tag}"
    daemon.prepare(model)
    key = f"fake:{model}"
    listed = daemon.client.get("/profiles").json()["profiles"]
    assert any(p["model_id"] == model and p["engine"] == "fake" for p in listed)
    shown = daemon.client.get(f"/profiles/{key}").json()
    assert shown["profile"]["quality_status"] == "ok"
    assert shown["profile"]["chat_compatible"] is True
    layers = {e["field"]: e["layer"] for e in shown["explain"]}
    assert layers["temperature"] == "family"
    assert layers["quality_status"] == "state"
    assert shown["profile"]["last_test_error"] is None
    forgotten = daemon.client.delete(f"/profiles/{key}")
    assert forgotten.status_code == 200
    assert forgotten.json() == {"forgotten": key}
    gone = daemon.client.get(f"/profiles/{key}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "profile_not_found"
    assert daemon.client.delete(f"/profiles/{key}").status_code == 404


def test_logs_show_each_engine_process_output(daemon, tag):
    model = f"fake-ok-{tag}"
    daemon.prepare(model)
    pid = daemon.engine_pid(model)
    processes = daemon.client.get("/logs?engine=fake").json()["engines"]
    mine = next(p for p in processes if p["pid"] == pid)
    assert mine["engine"] == "fake"
    assert mine["tail"][0] == f"fake-openai-server pid={pid} model={model}"
    assert os.path.exists(mine["log_path"])
    assert daemon.client.get("/logs?engine=nosuch").json() == {"engines": []}


def test_chat_reasoning_goes_to_its_own_field_whole_and_streamed(daemon, tag):
    """A ``<think>`` block is the model's reasoning (issue 14): never in ``content``, passed on
    as ``reasoning``, streamed as it comes."""
    from ltcai_fake_engine import THINKING_ANSWER

    assert THINKING_ANSWER.startswith("<think>Two and two make four.</think>")
    model = f"fake-think-{tag}"
    daemon.prepare(model)
    body = _chat(daemon, model).json()
    assert (body["content"], body["reasoning"]) == ("2 + 2 = 4.", "Two and two make four.")

    deltas = list(daemon.events("POST", "/chat", {"model": model, "engine": "fake", "prompt": "2+2?", "stream": True}))
    assert "".join(d.get("content", "") for d in deltas) == "2 + 2 = 4."
    assert "".join(d.get("reasoning", "") for d in deltas) == "Two and two make four."
    first_content = next(i for i, d in enumerate(deltas) if "content" in d)
    assert all("reasoning" not in d for d in deltas[first_content:])  # the thinking came first, as it streamed


def test_ltcai_enforces_the_stops_an_engine_ignored(daemon, tag):
    """The ``think`` fake ignores stop sequences; a request's stop still cuts the answer,
    whole and streamed (issue 14: ltcai enforces every stop itself)."""
    model = f"fake-think-stops-{tag}"
    daemon.prepare(model)
    assert _chat(daemon, model, stop=[" = "]).json()["content"] == "2 + 2"
    body = {"model": model, "engine": "fake", "prompt": "2+2?", "stream": True, "stop": ["+"]}
    deltas = list(daemon.events("POST", "/chat", body))
    assert "".join(d.get("content", "") for d in deltas) == "2"
