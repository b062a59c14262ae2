"""One "start or join a prepare" for every API, on an in-process daemon with the FAKE engine.

The control API's ``POST /prepare`` and the OpenAI API's just-in-time prepare go through
``preparing.start_or_join``: for one model they share one job, a chat-ready model is not
prepared again unless forced, and a failed just-in-time prepare names its job.

The OpenAI API has no ``engine`` field and a plugin's engine is never a platform default,
so its resolution is pointed at the FAKE engine by monkeypatch (``_on_the_fake_engine``).
"""

from __future__ import annotations

from typing import Any

import pytest

import ltcai.daemon.model_access as model_access

MESSAGES = [{"role": "user", "content": "2+2?"}]


@pytest.fixture(name="fake_openai")
def _on_the_fake_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve = model_access.resolve_with_settings  # how /v1 and /api resolve a model
    monkeypatch.setattr(
        model_access, "resolve_with_settings", lambda settings, plugins, model, engine: resolve(settings, plugins, model, engine or "fake")
    )


def _jobs_of(listing: dict[str, Any], model: str) -> list[str]:
    return [job["job_id"] for job in listing["jobs"] if job["model"] == model]


@pytest.mark.asyncio
async def test_the_control_and_openai_apis_start_or_join_one_prepare(inprocess_daemon: Any, tag: str, fake_openai: None) -> None:
    model = f"fake-crawl-load-{tag}"  # the load takes ~1.5 s: the chat arrives while it runs
    async with inprocess_daemon() as d:
        started = await d.client.post("/prepare", json={"model": model, "engine": "fake", "stream": False})
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]
        assert started.json()["status"] == "running"
        chat = await d.client.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES})
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"]
        assert _jobs_of((await d.client.get("/jobs")).json(), model) == [job_id]
        # Chat-ready now: a prepare is answered with the job that made it so...
        again = await d.client.post("/prepare", json={"model": model, "engine": "fake", "stream": False})
        assert again.json()["job_id"] == job_id and again.json()["status"] == "ok"
        # ...unless forced.
        forced = await d.client.post("/prepare", json={"model": model, "engine": "fake", "stream": False, "force": True})
        assert forced.json()["job_id"] != job_id
        # And a chat meanwhile joins the forced job rather than starting a third.
        chat = await d.client.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES})
        assert chat.status_code == 200, chat.text
        assert _jobs_of((await d.client.get("/jobs")).json(), model) == [job_id, forced.json()["job_id"]]


@pytest.mark.asyncio
async def test_a_failed_just_in_time_prepare_is_a_409_naming_its_job(inprocess_daemon: Any, tag: str, fake_openai: None) -> None:
    model = f"fake-fail-load-{tag}"
    async with inprocess_daemon() as d:
        chat = await d.client.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES})
        assert chat.status_code == 409, chat.text
        error = chat.json()["error"]
        [job_id] = _jobs_of((await d.client.get("/jobs")).json(), model)
        assert error["code"] == "model_not_ready"
        assert error["message"].startswith(f"{model} could not be made ready: failed during model_loading")
        assert error["hint"] == f"see `ltcai jobs {job_id}` for the full report"
