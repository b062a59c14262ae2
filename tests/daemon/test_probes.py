"""Measured capabilities (issue 14 items 5–6) through a real ``ltcai serve`` with the FAKE
engine: the probes a prepare runs, where their verdicts show, and the 400 a request gets
for a capability its probe found failed.

The fake server calls a tool when asked, answers ``response_format`` with fitting JSON,
embeds, and reports ``n_ctx`` 2048 on ``GET /props``; ``no-tools`` / ``no-schema`` models
ignore tools / response_format, so their probes fail for real.
"""

from __future__ import annotations

import json

import httpx
import pytest

from ltcai.compat import CAPABILITY_KEYS
from ltcai.daemon.probes import WEATHER_TOOL

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _report(events):
    return events[-1]["report"]


def _capabilities(report):
    smoke = next(s for s in report["stage_logs"] if s["state"] == "smoke_test")
    return smoke["extra"]["capabilities"]


def _profile(daemon, model):
    profiles = daemon.client.get("/profiles").json()["profiles"]
    return next(p for p in profiles if p["model_id"] == model)


def _engine_posts(daemon, model):
    models = {m["input_id"]: m for m in daemon.client.get("/models").json()["models"]}
    base = models[model]["base_url"].removesuffix("/v1")
    return [r["body"] for r in httpx.get(base + "/debug/requests").json()["requests"]]


def test_a_default_prepare_measures_chat_and_context_only(daemon, tag):
    model = f"fake-ok-defaultprobe-{tag}"
    report = _report(daemon.prepare(model))
    assert report["ready_to_chat"], report
    found = _capabilities(report)
    assert list(found) == list(CAPABILITY_KEYS)
    assert found["chat"]["status"] == "ok"
    assert found["context"] == {"status": "ok", "reason": found["context"]["reason"], "measured_at": found["context"]["measured_at"]}
    assert "2048 tokens per slot" in found["context"]["reason"]
    for key in ("stream", "tools", "json_schema", "embeddings", "vision"):
        assert found[key]["status"] == "untested", (key, found[key])
    # One completion: the smoke test. No probe generated anything.
    assert len(_engine_posts(daemon, model)) == 1


def test_probe_measures_every_capability_and_saves_it_on_the_profile(daemon, tag):
    model = f"fake-ok-fullprobe-{tag}"
    report = _report(daemon.prepare(model, probe=True))
    assert report["status"] == "ok", report
    found = _capabilities(report)
    for key in ("chat", "stream", "tools", "json_schema", "embeddings", "context"):
        assert found[key]["status"] == "ok", (key, found[key])
        assert found[key]["measured_at"], key
    assert found["vision"] == {"status": "untested", "reason": "the model does not claim vision", "measured_at": found["vision"]["measured_at"]}
    assert 'get_weather({"city": "Paris"})' in found["tools"]["reason"]
    # Kept on the profile, which is what every listing reads.
    assert _profile(daemon, model)["capabilities"] == found
    sent = _engine_posts(daemon, model)
    tool_requests = [b for b in sent if b.get("tools")]
    assert tool_requests and tool_requests[0]["tool_choice"] == "required"
    assert any((b.get("response_format") or {}).get("type") == "json_schema" for b in sent)
    assert any(b.get("stream") for b in sent)
    assert any("input" in b for b in sent)  # the embeddings probe


def test_failed_tools_and_schema_probes_refuse_those_requests_with_the_reason(daemon, tag):
    model = f"fake-no-tools-no-schema-{tag}"
    report = _report(daemon.prepare(model, probe=True))
    # The model still chats: a failed probe never changes the chat verdict.
    assert report["status"] == "ok", report
    found = _capabilities(report)
    assert found["tools"]["status"] == "failed" and "no tool call" in found["tools"]["reason"]
    assert found["json_schema"]["status"] == "failed" and "not JSON" in found["json_schema"]["reason"]

    tools = daemon.client.post("/v1/chat/completions", json={"model": model, "messages": ASK, "tools": [WEATHER_TOOL]})
    assert tools.status_code == 400, tools.text
    error = tools.json()["error"]
    assert error["code"] == "capability_failed" and error["param"] == "tools"
    assert f"its tools probe failed on {found['tools']['measured_at'][:10]}: no tool call" in error["message"]
    assert "--probe" in error["hint"]

    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    refused = daemon.client.post("/v1/chat/completions", json={"model": model, "messages": ASK, "response_format": schema})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "capability_failed"

    ollama = daemon.client.post("/api/chat", json={"model": model, "messages": ASK, "tools": [WEATHER_TOOL], "stream": False})
    assert ollama.status_code == 400, ollama.text
    assert "its tools probe failed" in ollama.json()["error"]

    # What was not measured as failed still works, and the refused requests never reached the engine.
    before = len(_engine_posts(daemon, model))
    plain = daemon.client.post("/v1/chat/completions", json={"model": model, "messages": ASK})
    assert plain.status_code == 200, plain.text
    assert len(_engine_posts(daemon, model)) == before + 1


def test_models_and_show_carry_the_measured_capabilities(daemon, tag):
    model = f"fake-no-tools-no-embed-listed-{tag}"
    daemon.prepare(model, probe=True)
    listed = {m["id"]: m for m in daemon.client.get("/v1/models").json()["data"]}[model]
    assert listed["capabilities"]["tools"]["status"] == "failed"
    assert listed["capabilities"]["embeddings"]["status"] == "failed"
    assert listed["capabilities"]["json_schema"]["status"] == "ok"
    shown = daemon.client.post("/api/show", json={"model": model}).json()
    # The engine takes tools and embeds; this model's probes failed at both.
    assert shown["capabilities"] == ["completion"]
    assert shown["ltcai"]["capabilities"]["tools"]["status"] == "failed"


@pytest.mark.parametrize("json_output", [False, True])
def test_profiles_and_prepare_report_show_each_verdict(daemon, tag, json_output):
    model = f"fake-no-schema-cli{int(json_output)}-{tag}"
    prepared = daemon.cli("prepare", model, "--engine", "fake", "--probe")
    assert prepared.returncode == 0, prepared.stderr
    assert "json_schema:" in prepared.stdout and "failed" in prepared.stdout
    assert "tools:" in prepared.stdout
    key = _profile(daemon, model)["key"]
    if json_output:
        listing = json.loads(daemon.cli("profiles", "--json").stdout)
        entry = next(p for p in listing if p["key"] == key)
        assert entry["capabilities"]["json_schema"]["status"] == "failed"
        assert entry["capabilities"]["tools"]["status"] == "ok"
        return
    table = daemon.cli("profiles").stdout
    assert "CAPABILITIES" in table
    shown = daemon.cli("profiles", key).stdout
    assert "CAPABILITY" in shown and "EVIDENCE" in shown
    assert "not JSON" in shown  # the json_schema probe's evidence
