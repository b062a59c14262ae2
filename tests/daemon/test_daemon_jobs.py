"""Prepare jobs on a real ``ltcai serve`` subprocess driven by the FAKE engine plugin.

Every state is reached; a failure in each phase ends FAILED with that phase's state and
error code; a cancel or a stall in each phase ends the job and leaves no engine process;
single-flight holds under 50 concurrent clients; every transition is logged with the
job's id, engine and model bound (in-process, through ``capture_logs``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
import pytest
import structlog
from ltcai_fake_engine import FAIL_CODE, PHASE_STATE, PHASES

from ltcai.daemon.prepare_machine import STEPS

STEP_STATES = [s.value for s in STEPS]


def state_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "state"]


def served_pid(events: list[dict[str, Any]]) -> int:
    """The engine pid the SERVER_STARTING step reported when it ended."""
    done = [e for e in state_events(events) if e["from"] == "server_starting"]
    assert done, "the job never finished server_starting"
    match = re.search(r"pid (\d+)", done[0]["message"])
    assert match, done[0]
    return int(match.group(1))


# ------------------------------------------------------------------------ success paths


def test_fake_ok_passes_every_step_in_order_and_ends_ready(daemon, tag, pid_alive):
    """FAKE engine, all phases succeed: RESOLVING … SMOKE_TEST → READY, a full report."""
    model = f"fake-ok-{tag}"
    events = daemon.prepare(model)
    states = [e["state"] for e in state_events(events)]
    assert states == [*STEP_STATES, "ready"]
    assert [e["from"] for e in state_events(events)] == [None, *STEP_STATES]
    assert all(e["job_id"] == events[0]["job_id"] for e in events)

    report = events[-1]["report"]
    assert report["status"] == "ok"
    assert report["state"] == "ready"
    assert report["ready_to_chat"] is True
    assert report["downloaded"] is True
    assert report["loaded"] is True
    assert report["error"] is None
    assert report["compatibility_status"] == "ok"
    assert report["smoke_test"]["answer"] == "2 + 2 = 4."
    assert report["smoke_test"]["status"] == "ok"
    assert report["resolution"]["resolved_model"] == model
    assert report["resolution"]["engine"] == "fake"
    assert report["current"] == f"fake:{model}"
    assert report["download_result"]["source"] == "fake"
    assert report["install_result"] is None
    logged = [log["state"] for log in report["stage_logs"]]
    assert logged == [*STEP_STATES, "ready"]
    install_log = report["stage_logs"][STEP_STATES.index("engine_install")]
    assert install_log["message"].startswith("skipped")
    download_log = report["stage_logs"][STEP_STATES.index("downloading")]
    assert download_log["message"] == "downloaded fake weights"

    models = {m["model"]: m for m in daemon.client.get("/models").json()["models"]}
    assert models[model]["status"] == "ready"
    assert models[model]["job_id"] == report["job_id"]
    assert models[model]["pid"] == served_pid(events)
    assert pid_alive(models[model]["pid"])


def test_fake_needs_install_runs_the_install_step(daemon, tag):
    report = daemon.report(f"fake-needs-install-{tag}")
    assert report["state"] == "ready"
    assert report["install_result"] == {"installed": True, "message": "fake engine installed", "version": "0.0-fake"}
    install_log = next(log for log in report["stage_logs"] if log["state"] == "engine_install")
    assert install_log["message"] == "fake engine installed"


def test_fake_degraded_answer_ends_degraded_and_chat_ready(daemon, tag):
    report = daemon.report(f"fake-degraded-{tag}")
    assert report["state"] == "degraded"
    assert report["status"] == "degraded"
    assert report["ready_to_chat"] is True
    assert report["compatibility_status"] == "degraded"
    assert report["smoke_test"]["reason"] == "answer did not contain expected result"
    assert report["error"] is None


@pytest.mark.parametrize("phase", PHASES)
def test_fake_slow_phase_reports_progress_and_still_succeeds(daemon, tag, phase):
    """FAKE engine slow in one phase: progress events are published in that state."""
    events = daemon.prepare(f"fake-slow-{phase}-{tag}")
    assert events[-1]["report"]["state"] == "ready"
    if phase in ("models", "smoke"):
        return  # those phases are the server's; "slow" only concerns adapter phases
    progress = [e for e in events if e["type"] == "progress" and e["state"] == PHASE_STATE[phase]]
    assert progress, f"no progress published during {phase}"
    if phase == "download":
        assert progress[-1]["progress"] == {"done": 1_000_000, "total": 1_000_000, "unit": "B"}


def test_prepare_of_a_ready_model_returns_its_job_and_force_replaces_the_server(daemon, tag, pid_alive):
    model = f"fake-ok-{tag}"
    first = daemon.prepare(model)
    again = daemon.prepare(model)
    assert again[-1]["report"]["job_id"] == first[-1]["report"]["job_id"]
    old_pid = served_pid(first)

    forced = daemon.prepare(model, force=True)
    assert forced[-1]["report"]["job_id"] != first[-1]["report"]["job_id"]
    assert forced[-1]["report"]["state"] == "ready"
    new_pid = served_pid(forced)
    assert new_pid != old_pid
    assert not pid_alive(old_pid), "the replaced engine server still runs"
    assert pid_alive(new_pid)


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize("phase", PHASES)
def test_fake_failure_in_each_phase_ends_failed_with_its_state_and_code(daemon, tag, phase, pid_alive):
    """FAKE engine told to fail one phase: FAILED, error.state = that phase, the right code."""
    model = f"fake-fail-{phase}-{tag}" if phase != "smoke" else f"fake-failed-smoke-{tag}"
    events = daemon.prepare(model)
    report = events[-1]["report"]
    assert report["status"] == "failed"
    assert report["state"] == "failed"
    assert report["ready_to_chat"] is False
    assert report["error"]["state"] == PHASE_STATE[phase]
    assert report["error"]["code"] == FAIL_CODE[phase]
    assert report["error"]["message"]
    states = [e["state"] for e in state_events(events)]
    reached = STEP_STATES[: STEP_STATES.index(PHASE_STATE[phase]) + 1]
    assert states == [*reached, "failed"]
    # Nothing half-done: no server left running, nothing registered as loaded.
    if PHASES.index(phase) > PHASES.index("serve"):
        assert not pid_alive(served_pid(events))
    assert model not in {m["model"] for m in daemon.client.get("/models").json()["models"]}


def test_fake_server_exit_at_start_reports_its_output(daemon, tag):
    report = daemon.report(f"fake-fail-serve-{tag}")
    assert "exited with code 3" in report["error"]["message"]
    assert "told to fail at start" in (report["error"]["hint"] or "")


def test_fake_leaked_marker_fails_the_smoke_test_and_the_profile_records_it(daemon, tag):
    model = f"fake-leak-{tag}"
    report = daemon.report(model)
    assert report["state"] == "failed"
    assert report["error"]["code"] == "smoke_test_failed"
    assert report["smoke_test"]["reason"] == "role token leakage (<|im_end|>)"
    assert report["smoke_test"]["answer"] == "2 + 2 = 4."  # post-processed for the user
    profile = daemon.client.get(f"/profiles/fake:{model}").json()["profile"]
    assert profile["quality_status"] == "failed"
    assert profile["chat_compatible"] is False
    assert profile["last_test_error"] == "role token leakage (<|im_end|>)"


@pytest.mark.parametrize("phase", ["check", "download", "load"])
def test_fake_adapter_bug_is_internal_error_without_traceback(daemon, tag, phase):
    report = daemon.report(f"fake-bug-{phase}-{tag}")
    assert report["error"]["code"] == "internal_error"
    assert report["error"]["state"] == PHASE_STATE[phase]
    assert "RuntimeError: fake engine bug" in report["error"]["message"]
    assert "Traceback" not in str(report)


# ------------------------------------------------------------------------------ cancel


@pytest.mark.parametrize("phase", PHASES)
def test_cancel_in_each_phase_ends_cancelled_and_leaves_no_engine_process(daemon, tag, phase, pid_alive):
    """FAKE engine hangs in one phase; cancel ends the job CANCELLED there, server stopped."""
    model = f"fake-hang-{phase}-{tag}"
    job_id = daemon.start_job(model)
    daemon.wait_for_state(job_id, PHASE_STATE[phase])
    pid = daemon.engine_pid(model) if PHASES.index(phase) >= PHASES.index("serve") else None

    response = daemon.client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["status"] == "cancelled"
    assert summary["state"] == "cancelled"

    job = daemon.client.get(f"/jobs/{job_id}").json()
    assert job["report"]["status"] == "cancelled"
    assert job["report"]["error"]["code"] == "cancelled"
    assert job["report"]["error"]["state"] == PHASE_STATE[phase]
    assert job["events"][-1]["type"] == "report"
    if pid is not None:
        assert not pid_alive(pid), f"engine {pid} survived the cancel"
    assert model not in {m["model"] for m in daemon.client.get("/models").json()["models"]}
    assert all(p["pid"] != pid for p in daemon.engine_processes())

    # Cancelling again is harmless and changes nothing.
    again = daemon.client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"


def test_cancel_of_an_unknown_job_is_404(daemon):
    response = daemon.client.post("/jobs/nosuchjob/cancel")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job_not_found"


def test_cancel_of_a_finished_job_changes_nothing(daemon, tag):
    report = daemon.report(f"fake-fail-check-{tag}")
    response = daemon.client.post(f"/jobs/{report['job_id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    assert daemon.client.get(f"/jobs/{report['job_id']}").json()["report"]["error"]["code"] == "engine_unavailable"


# ------------------------------------------------------------------------------- stalls


def test_every_phase_that_stops_moving_fails_stalled(stall_daemon, tag, pid_alive):
    """FAKE engine hangs in each phase under a 1 s stall timeout: FAILED ``stalled`` there.

    The jobs run at once (one daemon, one per phase); a ``crawl`` job that takes longer
    than the timeout but keeps reporting progress must not stall.
    """
    jobs = {phase: stall_daemon.start_job(f"fake-hang-{phase}-{tag}") for phase in PHASES}
    crawler = stall_daemon.start_job(f"fake-crawl-download-{tag}")
    outcome = {}
    for phase, job_id in jobs.items():
        events = list(stall_daemon.events("GET", f"/jobs/{job_id}/events"))
        error = events[-1]["report"]["error"]
        outcome[phase] = (events[-1]["report"]["state"], error["code"], error["state"])
        if PHASES.index(phase) > PHASES.index("serve"):
            assert not pid_alive(served_pid(events)), f"engine of the stalled {phase} job survived"
        assert "made no progress for 1 s" in error["message"]
    assert outcome == {phase: ("failed", "stalled", PHASE_STATE[phase]) for phase in PHASES}
    crawled = list(stall_daemon.events("GET", f"/jobs/{crawler}/events"))[-1]["report"]
    assert crawled["state"] == "ready", crawled["error"]


# -------------------------------------------------------------------------- single flight


@pytest.mark.asyncio
async def test_fifty_concurrent_prepares_of_five_models_make_five_jobs(daemon, tag, async_client_for):
    """50 clients, 5 FAKE models (slow downloads): exactly 5 jobs; identical stories."""
    models = [f"fake-slow-download-{tag}-{i}" for i in range(5)]
    results: dict[int, tuple[str, list[dict[str, Any]]]] = {}

    async with async_client_for(daemon.socket_path) as client:

        async def one(i: int) -> None:
            model = models[i % 5]
            events = []
            async with client.stream("POST", "/prepare", json={"model": model, "engine": "fake"}) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.strip():
                        events.append(daemon_json(line))
            results[i] = (model, events)

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)

    assert len(results) == 50
    by_model: dict[str, list[list[dict[str, Any]]]] = {}
    for model, events in results.values():
        by_model.setdefault(model, []).append(events)
    assert sorted(by_model) == sorted(models)
    job_ids = {model: {e["job_id"] for s in streams for e in s} for model, streams in by_model.items()}
    assert all(len(ids) == 1 for ids in job_ids.values()), job_ids
    assert len({next(iter(ids)) for ids in job_ids.values()}) == 5
    for model, streams in by_model.items():
        assert len(streams) == 10
        terminal = streams[0][-1]
        assert terminal["type"] == "report"
        assert terminal["report"]["state"] == "ready"
        for stream in streams:
            assert stream[-1] == terminal  # the very same terminal event
            assert state_events(stream) == state_events(streams[0])  # the same story

    listed = [j for j in daemon.client.get("/jobs").json()["jobs"] if j["model"] in models]
    assert len(listed) == 5
    assert {j["job_id"] for j in listed} == {next(iter(ids)) for ids in job_ids.values()}


def daemon_json(line: str) -> dict[str, Any]:
    assert "Traceback" not in line
    return json.loads(line)


# ----------------------------------------------------------------------------- logging


@pytest.mark.asyncio
async def test_every_transition_is_logged_with_job_engine_and_model_bound(inprocess_daemon):
    """In-process daemon + FAKE engine: each state change is a log line with the job bound."""
    async with inprocess_daemon() as d:
        with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            events = await d.prepare("fake-ok")
            failed = await d.prepare("fake-fail-load")
    job_id = events[-1]["report"]["job_id"]
    transitions = [e["state"] for e in state_events(events)]
    logged = [
        line for line in logs
        if line["event"] in ("prepare state", "prepare finished") and line.get("job_id") == job_id
    ]
    assert [line["state"] for line in logged] == transitions
    for line in logged:
        assert line["engine"] == "fake"
        assert line["model"] == "fake-ok"
    failed_id = failed[-1]["report"]["job_id"]
    failed_lines = [line for line in logs if line.get("job_id") == failed_id and line["event"] == "prepare finished"]
    assert [line["state"] for line in failed_lines] == ["failed"]
    assert failed_lines[0]["model"] == "fake-fail-load"
    # The engine process's start is logged inside the job too.
    started = [line for line in logs if line["event"] == "engine process started" and line.get("job_id") == job_id]
    assert len(started) == 1 and started[0]["engine"] == "fake"
