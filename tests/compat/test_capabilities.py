"""Measured capabilities on the profile (issue 14 item 5, the data model): one verdict per
capability, persisted with the profile, readable from profiles saved before they existed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ltcai.compat import CAPABILITY_KEYS, Capability, Profile, build_profile, learn_from_smoke, rebuild_profile

WHEN = "2026-12-02T07:30:00+00:00"


def test_the_capabilities_are_the_issues_seven_and_start_untested() -> None:
    assert CAPABILITY_KEYS == ("chat", "stream", "tools", "json_schema", "embeddings", "vision", "context")
    profile = build_profile("Qwen/Qwen2.5-7B-Instruct", "ollama")
    assert set(profile.capabilities) == set(CAPABILITY_KEYS)
    for capability in profile.capabilities.values():
        assert capability == Capability("untested", "not measured", None)
        assert not capability.usable


def test_a_verdict_is_recorded_with_its_reason_and_time() -> None:
    midnight = datetime(2026, 12, 2, tzinfo=UTC)
    profile = build_profile("m").with_capability("tools", "failed", "no tool call in 2 tries", midnight)
    assert profile.capabilities["tools"] == Capability("failed", "no tool call in 2 tries", "2026-12-02T00:00:00+00:00")
    assert profile.capabilities["chat"].status == "untested"  # the others stay
    assert profile.with_capability("context", "degraded", "8192 of 32768 fit", WHEN).capabilities["context"].usable


@pytest.mark.parametrize(
    ("key", "status", "reason"),
    [("speed", "ok", "fast"), ("tools", "great", "x"), ("tools", "ok", ""), ("tools", "untested", None)],
)
def test_an_unknown_capability_status_or_a_missing_reason_is_refused(key: str, status: str, reason: str) -> None:
    with pytest.raises(ValueError):
        build_profile("m").with_capability(key, status, reason, WHEN)


def test_capabilities_persist_with_the_profile() -> None:
    profile = build_profile("m", "llamacpp").with_capability("stream", "ok", "streamed equals whole", WHEN)
    document = json.loads(json.dumps(profile.to_dict()))
    stream = {"status": "ok", "reason": "streamed equals whole", "measured_at": WHEN}
    assert document["capabilities"]["stream"] == stream
    assert list(document["capabilities"]) == list(CAPABILITY_KEYS)
    assert Profile.from_dict(document).capabilities == profile.capabilities


def test_a_profile_saved_before_capabilities_existed_reads_back_untested() -> None:
    document = build_profile("m", "llamacpp").to_dict()
    del document["capabilities"]
    restored = Profile.from_dict(document)
    assert all(c.status == "untested" for c in restored.capabilities.values())
    assert restored.to_dict()["capabilities"]["chat"]["status"] == "untested"


def test_a_newer_writers_capability_is_ignored_and_a_damaged_one_is_an_error() -> None:
    document = build_profile("m").to_dict()
    document["capabilities"]["audio"] = {"status": "ok", "reason": "heard", "measured_at": WHEN}
    del document["capabilities"]["vision"]
    restored = Profile.from_dict(document)
    assert "audio" not in restored.capabilities and restored.capabilities["vision"].status == "untested"
    document["capabilities"]["tools"] = {"status": "sort of", "reason": "?"}
    with pytest.raises(ValueError, match="not readable"):
        Profile.from_dict(document)


def test_a_rebuild_keeps_what_was_measured() -> None:
    profile = build_profile("m").with_capability("tools", "ok", "native tool calls", WHEN)
    rebuilt = rebuild_profile(profile, user_overrides={"temperature": 0.5})
    assert rebuilt.temperature == 0.5 and rebuilt.capabilities == profile.capabilities


def test_the_smoke_test_is_the_chat_capabilitys_measurement() -> None:
    profile = learn_from_smoke(build_profile("m"), "degraded", "mild repetition", None, WHEN)
    assert profile.capabilities["chat"] == Capability("degraded", "mild repetition", WHEN)
    # the chat recovery path learns a marker without a new verdict: chat stays as measured
    again = learn_from_smoke(profile, "degraded", None, "<|im_end|>", WHEN)
    assert again.capabilities["chat"] == Capability("degraded", "mild repetition", WHEN)
    assert "<|im_end|>" in again.stop
