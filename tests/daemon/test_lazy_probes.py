"""Capabilities probed on first use (issue 14 item 5, "lazily"), through a real
``ltcai serve`` with the FAKE engine: a default prepare measures chat and context only;
the first request that needs tools (or a JSON schema) starts that probe in the background
and is answered at once; the verdict lands on the profile, and a failed one refuses the
next such request.

The fake's ``no-tools`` / ``no-schema`` models ignore tools / response_format, so their
probes fail for real.
"""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from ltcai.compat import build_profile, resolve
from ltcai.daemon import capability_gate
from ltcai.daemon.models import LoadedModel, ModelRegistry
from ltcai.daemon.probes import WEATHER_TOOL
from ltcai.daemon.readiness import Readiness
from ltcai.engines.base import ServedModel

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}


def _capability(daemon, model, key):
    profiles = daemon.client.get("/profiles").json()["profiles"]
    return next(p for p in profiles if p["model_id"] == model)["capabilities"][key]


def _measured(daemon, model, key, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _capability(daemon, model, key)
        if found["measured_at"]:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{key} of {model} was not probed within {timeout} s")


def _engine_posts(daemon, model, listed="requests"):
    """The fake engine's last POST bodies: the clients' (``requests``) or the probes' (``probes``)."""
    models = {m["input_id"]: m for m in daemon.client.get("/models").json()["models"]}
    base = models[model]["base_url"].removesuffix("/v1")
    return [r["body"] for r in httpx.get(base + "/debug/requests").json()[listed]]


def _probe_posts(daemon, model):
    return _engine_posts(daemon, model, "probes")


def test_first_tools_request_probes_tools_and_a_failure_refuses_the_next(daemon, tag):
    model = f"fake-no-tools-lazy-{tag}"
    assert daemon.prepare(model)[-1]["report"]["ready_to_chat"]
    assert _capability(daemon, model, "tools")["status"] == "untested"

    first = daemon.client.post("/v1/chat/completions", json={"model": model, "messages": ASK, "tools": [WEATHER_TOOL]})
    assert first.status_code == 200, first.text  # untested: answered, not refused, not held for the probe
    found = _measured(daemon, model, "tools")
    assert found["status"] == "failed" and "no tool call" in found["reason"]
    (probe,) = _probe_posts(daemon, model)
    assert probe["tool_choice"] == "required" and probe["tools"] == [WEATHER_TOOL]
    assert len(_engine_posts(daemon, model)) == 2  # the smoke test and the client's request

    again = daemon.client.post("/v1/chat/completions", json={"model": model, "messages": ASK, "tools": [WEATHER_TOOL]})
    assert again.status_code == 400 and again.json()["error"]["code"] == "capability_failed"
    ollama = daemon.client.post("/api/chat", json={"model": model, "messages": ASK, "tools": [WEATHER_TOOL], "stream": False})
    assert ollama.status_code == 400 and "its tools probe failed" in ollama.json()["error"]
    # Nothing else was probed: no request needed it.
    assert _capability(daemon, model, "json_schema")["measured_at"] is None


def test_a_working_capability_is_probed_once_and_recorded_ok(daemon, tag):
    model = f"fake-ok-lazy-{tag}"
    assert daemon.prepare(model)[-1]["report"]["ready_to_chat"]
    for _ in range(3):
        answer = daemon.client.post("/v1/chat/completions", json={"model": model, "messages": ASK, "tools": [WEATHER_TOOL]})
        assert answer.status_code == 200, answer.text
    found = _measured(daemon, model, "tools")
    assert found["status"] == "ok" and "get_weather" in found["reason"]
    time.sleep(0.2)  # a second probe, had one started, would have reached the engine by now
    assert len(_probe_posts(daemon, model)) == 1


def test_a_json_schema_request_over_ollama_probes_json_schema(daemon, tag):
    model = f"fake-no-schema-lazy-{tag}"
    assert daemon.prepare(model)[-1]["report"]["ready_to_chat"]
    answer = daemon.client.post(
        "/api/chat", json={"model": model, "messages": ASK, "format": SCHEMA["json_schema"]["schema"], "stream": False}
    )
    assert answer.status_code == 200, answer.text
    found = _measured(daemon, model, "json_schema")
    assert found["status"] == "failed" and "not JSON" in found["reason"]


# --- the background task, on its own -------------------------------------------------------

class _Book:
    def __init__(self):
        self.saved = []

    async def put(self, profile):
        self.saved.append(profile)
        return profile


def _loaded_model(model="m"):
    resolution = resolve(model, "fake", extra_engines=["fake"])
    served = ServedModel(engine="fake", model=model, base_url="http://127.0.0.1:9/v1")
    return LoadedModel(resolution=resolution, served=served, profile=build_profile(model, "fake"),
                       status=Readiness.READY, job_id="j")  # fmt: skip


@pytest.fixture
def failing_probe(monkeypatch):
    """A probe that finds tools failed (as an engine that went away mid-probe would)."""

    async def probe(services, loaded, keys, progress=None):
        for key in keys:
            loaded.profile = loaded.profile.with_capability(key, "failed", "connection refused", "2026-12-02T12:00:00+00:00")
        return loaded.profile

    monkeypatch.setattr(capability_gate.probes, "probe_capabilities", probe)


@pytest.mark.asyncio
@pytest.mark.parametrize("still_served", [True, False])
async def test_a_verdict_lands_only_on_a_model_still_served(failing_probe, still_served):
    registry, book = ModelRegistry(), _Book()
    services = type("Services", (), {"models": registry, "profiles": book})()
    loaded = _loaded_model()
    async with anyio.create_task_group() as tg:
        await tg.start(registry.run)
        registry.add(loaded)
        if not still_served:
            registry.remove(*loaded.key)  # unloaded while the probe ran
        assert capability_gate.probe_on_first_use(services, loaded, "tools")
        assert not capability_gate.probe_on_first_use(services, loaded, "tools")  # one at a time
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    tools = loaded.profile.capabilities["tools"]
    if still_served:
        assert (tools.status, [p.capabilities["tools"].status for p in book.saved]) == ("failed", ["failed"])
    else:
        assert (tools.status, book.saved) == ("untested", [])


def test_no_probe_starts_when_the_registry_does_not_run():
    services = type("Services", (), {"models": ModelRegistry(), "profiles": _Book()})()
    assert not capability_gate.probe_on_first_use(services, _loaded_model(), "tools")
