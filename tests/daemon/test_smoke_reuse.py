"""A just-in-time prepare reuses a recent smoke verdict (issue 13: fast re-prepare).

The rules (``ltcai.daemon.smoke_reuse``) and the machine's skipped step are pure; the
daemon tests run a real ``ltcai serve`` with the FAKE engine (real server processes):
its ``weights`` models leave a real file, and the fake server's ``/debug/requests``
shows whether the smoke chat reached a new server.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from ltcai.compat import SMOKE_PROMPT
from ltcai.daemon.prepare_machine import PrepareMachine, PrepareState, SmokeDone, StepDone
from ltcai.daemon.report import SmokeTest
from ltcai.daemon.smoke_reuse import SMOKE_REUSE_MAX_AGE_S, SmokeRecord, WeightsStamp, fingerprint, reuse_refusal, stamp_weights

NOW = 1_800_000_000.0
STAMP = WeightsStamp("/models/m.gguf", 1000, 1_700_000_000_000_000_000)


def _record(status: str = "ok", age: float = 60.0, weights: WeightsStamp = STAMP, setup: str = "s1") -> SmokeRecord:
    return SmokeRecord(SmokeTest(SMOKE_PROMPT, "2 + 2 = 4.", status, "clean answer", 0.8), NOW - age, weights, setup)  # type: ignore[arg-type]


def test_a_recent_verdict_on_the_same_file_and_set_up_stands() -> None:
    assert reuse_refusal(_record(), STAMP, "s1", NOW) is None
    assert reuse_refusal(_record("degraded"), STAMP, "s1", NOW) is None
    text = _record(age=180).describe(NOW)
    assert text.startswith("smoke test passed 3 min ago on this file (m.gguf, 1000 B, modified 2023-11-14 22:13 UTC)")
    assert text.endswith("; not repeated")
    assert "found problems (clean answer)" in _record("degraded").describe(NOW)


@pytest.mark.parametrize(
    ("record", "weights", "setup", "why"),
    [
        (None, STAMP, "s1", "no earlier smoke test"),
        (_record("failed"), STAMP, "s1", "the last smoke test failed"),
        (_record(age=SMOKE_REUSE_MAX_AGE_S + 1), STAMP, "s1", "7 days old (at most 7 days)"),
        (_record(age=-3600), STAMP, "s1", "old"),  # a clock that went back: not trusted
        (_record(), WeightsStamp(STAMP.path, STAMP.size, STAMP.mtime_ns + 1), "s1", "weights changed"),
        (_record(), WeightsStamp(STAMP.path, STAMP.size + 1, STAMP.mtime_ns), "s1", "weights changed"),
        (_record(), WeightsStamp("/elsewhere/m.gguf", STAMP.size, STAMP.mtime_ns), "s1", "weights changed"),
        (_record(), None, "s1", "no file"),
        (_record(), STAMP, "s2", "engine settings changed"),
    ],
)
def test_anything_that_may_have_changed_the_verdict_refuses_it(record, weights, setup, why) -> None:
    refusal = reuse_refusal(record, weights, setup, NOW)
    assert refusal is not None and why in refusal


def test_the_set_up_fingerprint_follows_the_profile_and_settings_but_not_the_context_chosen_per_load() -> None:
    from ltcai.compat import build_profile

    profile = build_profile("m", "llamacpp")
    base = fingerprint(profile, "b1", {"n_gpu_layers": 0, "n_ctx": 4096})
    assert fingerprint(profile, "b1", {"n_gpu_layers": 0, "n_ctx": 1024}) == base  # the budget shrank it
    assert fingerprint(profile, "b2", {"n_gpu_layers": 0, "n_ctx": 4096}) != base
    assert fingerprint(profile, "b1", {"n_gpu_layers": 99, "n_ctx": 4096}) != base
    stopped = build_profile("m", "llamacpp", user_overrides={"extra_stop": ["END"]})
    assert fingerprint(stopped, "b1", {"n_gpu_layers": 0, "n_ctx": 4096}) != base


def test_a_folder_is_stamped_by_all_its_files(tmp_path: Path) -> None:
    (tmp_path / "a.safetensors").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "config.json").write_bytes(b"{}")
    before = stamp_weights(str(tmp_path))
    assert before is not None and before.size == 12
    os.utime(tmp_path / "sub" / "config.json", ns=(0, before.mtime_ns + 5_000_000_000))
    after = stamp_weights(str(tmp_path))
    assert after is not None and after.mtime_ns == before.mtime_ns + 5_000_000_000
    assert stamp_weights(str(tmp_path / "missing.gguf")) is None


def test_a_reused_verdict_decides_the_end_state_and_shows_as_skipped() -> None:
    for status, end in (("ok", PrepareState.READY), ("degraded", PrepareState.DEGRADED)):
        machine = PrepareMachine("j1", "fake", "m", clock=lambda: NOW)
        action = machine.start()
        while action.state is not PrepareState.SMOKE_TEST:
            action = machine.handle(StepDone(action.state, "done"))
        why = _record(status, age=180).describe(NOW)
        finish = machine.handle(SmokeDone(status, "clean answer", "2 + 2 = 4.", SMOKE_PROMPT, 0.8, reused=why))  # type: ignore[arg-type]
        assert finish.state is end
        report = finish.report
        assert report.compatibility_status == status and report.smoke_test is not None
        smoke_log = next(log for log in report.stage_logs if log.state == "smoke_test")
        assert smoke_log.message == f"skipped: {why}"
        assert smoke_log.extra is not None and smoke_log.extra["skipped"] is True


# ------------------------------------------------------------------ the daemon, FAKE engine


def _v1_chat(daemon, model: str) -> str:
    """A /v1 chat (prepares just in time); the prepare job's id from the header."""
    body = {"model": model, "messages": [{"role": "user", "content": "What is 2+2?"}]}
    answer = daemon.client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "2 + 2 = 4."
    return answer.headers["x-ltcai-prepare-job"]


def _job_report(daemon, job_id: str) -> dict[str, Any]:
    return daemon.client.get(f"/jobs/{job_id}").json()["report"]


def _smoke_log(report: dict[str, Any]) -> dict[str, Any]:
    return next(log for log in report["stage_logs"] if log["state"] == "smoke_test")


def _smoke_chats(daemon, model: str) -> int:
    """How many smoke chats the model's current fake server answered."""
    served = {m["input_id"]: m for m in daemon.client.get("/models").json()["models"]}[model]
    requests = httpx.get(served["base_url"].removesuffix("/v1") + "/debug/requests").json()["requests"]
    return sum(SMOKE_PROMPT in json.dumps(r["body"], ensure_ascii=False) for r in requests)


def _unload(daemon, model: str, wait_until, pid_alive) -> None:
    pid = daemon.engine_pid(model)
    assert daemon.client.post("/models/unload", json={"model": model, "engine": "fake"}).status_code == 200
    wait_until(lambda: not pid_alive(pid), timeout=10)


def test_a_just_in_time_prepare_after_an_unload_does_not_repeat_the_smoke_chat(start_daemon, wait_until, pid_alive):
    daemon = start_daemon({"LTCAI_DEFAULT_ENGINE": "fake"})
    model, degraded = "fake-weights-reuse", "fake-weights-degraded-reuse"
    first = _job_report(daemon, _v1_chat(daemon, model))
    assert first["state"] == "ready" and not _smoke_log(first)["message"].startswith("skipped")
    assert _smoke_chats(daemon, model) == 1
    _unload(daemon, model, wait_until, pid_alive)

    again = _job_report(daemon, _v1_chat(daemon, model))
    assert again["state"] == "ready" and again["ready_to_chat"]
    message = _smoke_log(again)["message"]
    assert message.startswith("skipped: smoke test passed ") and message.endswith("; not repeated"), message
    assert f"{model}.bin, 977 KiB, modified " in message
    assert again["smoke_test"] == first["smoke_test"]  # the verdict that stands
    assert _smoke_chats(daemon, model) == 0  # the new server never saw the smoke prompt
    profile = daemon.client.get(f"/profiles/fake:{model}").json()["profile"]
    assert profile["capabilities"]["context"]["status"] == "ok"  # measured on this load

    # DEGRADED stays DEGRADED.
    job = daemon.client.post("/prepare", json={"model": degraded, "engine": "fake", "stream": False}).json()["job_id"]
    wait_until(lambda: _job_report(daemon, job) is not None)
    _unload(daemon, degraded, wait_until, pid_alive)
    body = {"model": degraded, "messages": [{"role": "user", "content": "hi"}]}
    jit = daemon.client.post("/v1/chat/completions", json=body).headers["x-ltcai-prepare-job"]
    report = _job_report(daemon, jit)
    assert report["state"] == "degraded" and report["compatibility_status"] == "degraded"
    assert _smoke_log(report)["message"].startswith("skipped: smoke test found problems")

    # The user asking to prepare gets it tested.
    _unload(daemon, model, wait_until, pid_alive)
    asked = daemon.report(model)
    assert asked["state"] == "ready" and not _smoke_log(asked)["message"].startswith("skipped")
    assert _smoke_chats(daemon, model) == 1


def test_a_weights_file_modified_since_the_smoke_test_is_tested_again(start_daemon, wait_until, pid_alive):
    daemon = start_daemon({"LTCAI_DEFAULT_ENGINE": "fake"})
    model = "fake-weights-touched"
    _v1_chat(daemon, model)
    _unload(daemon, model, wait_until, pid_alive)
    weights = daemon.data_dir / "models" / "fake" / f"{model}.bin"
    info = weights.stat()
    os.utime(weights, ns=(info.st_atime_ns, info.st_mtime_ns + 2_000_000_000))

    again = _job_report(daemon, _v1_chat(daemon, model))
    assert again["state"] == "ready" and not _smoke_log(again)["message"].startswith("skipped")
    assert _smoke_chats(daemon, model) == 1
    # The new verdict is on record for the next time.
    _unload(daemon, model, wait_until, pid_alive)
    assert _smoke_log(_job_report(daemon, _v1_chat(daemon, model)))["message"].startswith("skipped")
