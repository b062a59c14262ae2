"""A bug in a prepare job's runner, on an in-process daemon with the FAKE engine.

The bug is injected with monkeypatch where no step's own containment reaches: an event the
machine refuses (``IllegalTransition``: a step's answer for the wrong state, or the smoke
verdict itself), and a cleanup that raises. Either way the job ends
FAILED with ``internal_error``, every follower gets that end, and the daemon keeps serving
(before the fix the exception cancelled the daemon's root task group).
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

import ltcai.daemon.prepare_runner as runner
from ltcai.daemon.prepare_machine import PrepareMachine, PrepareState, SmokeDone, StepDone
from ltcai.errors import IllegalTransition

S = PrepareState


async def _follow(client: Any, job_id: str) -> list[dict[str, Any]]:
    events = []
    async with client.stream("GET", f"/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.strip():
                assert "Traceback" not in line
                events.append(json.loads(line))
    return events


def _inject(monkeypatch: pytest.MonkeyPatch, where: str, model: str) -> None:
    if where == "machine":
        original_step = runner._STEPS[S.MODEL_LOADING]

        async def wrong_state(work: Any) -> Any:
            if work.job.machine.model != model:
                return await original_step(work)
            return StepDone(S.DOWNLOADING, "an answer for the wrong state")

        monkeypatch.setitem(runner._STEPS, S.MODEL_LOADING, wrong_state)
    elif where == "verdict":
        # The machine refuses the smoke verdict: whatever the smoke chat said, the model is
        # not chat-ready, so it must not have been registered as such meanwhile.
        original_handle = PrepareMachine.handle

        def refuse_smoke(self: PrepareMachine, event: Any) -> Any:
            if self.model == model and isinstance(event, SmokeDone):
                raise IllegalTransition("the machine refuses this verdict (injected)")
            return original_handle(self, event)

        monkeypatch.setattr(PrepareMachine, "handle", refuse_smoke)
    else:
        original_cleanup = runner._cleanup

        async def broken_cleanup(work: Any) -> None:
            await original_cleanup(work)
            if work.job.machine.model == model:
                raise RuntimeError("a bug in cleanup")

        monkeypatch.setattr(runner, "_cleanup", broken_cleanup)


@pytest.mark.asyncio
@pytest.mark.parametrize(("where", "behaviour", "end_code", "end_state"), [
    ("machine", "ok", "internal_error", "model_loading"),
    ("verdict", "ok", "internal_error", "smoke_test"),
    # The machine had already decided (the load failed); the cleanup's bug cannot change it.
    ("cleanup", "fail-load", "model_load_failed", "model_loading"),
])
async def test_a_runner_bug_ends_its_job_for_every_follower_and_the_daemon_lives(
    inprocess_daemon: Any, monkeypatch: pytest.MonkeyPatch, tag: str,
    where: str, behaviour: str, end_code: str, end_state: str,
) -> None:
    model = f"fake-{behaviour}-{tag}{where[0]}"
    _inject(monkeypatch, where, model)
    async with inprocess_daemon() as d:
        started = await d.client.post("/prepare", json={"model": model, "engine": "fake", "stream": False})
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]
        followed: list[list[dict[str, Any]]] = []

        async def follow() -> None:
            followed.append(await _follow(d.client, job_id))

        with anyio.fail_after(30):  # before the fix: followers wait forever (or the daemon is gone)
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(follow)
        for events in followed:
            assert events[-1]["type"] == "report", events[-3:]
            report = events[-1]["report"]
            assert report["status"] == "failed" and report["ready_to_chat"] is False
            assert (report["error"]["code"], report["error"]["state"]) == (end_code, end_state)
            assert [e["state"] for e in events if e["type"] == "state"][-1] == "failed"
        # Only the machine's final decision registers a model: none was made here.
        assert (await d.client.get("/models")).json()["models"] == []
        # The daemon lives: the same model id's job is over, another prepares as usual.
        assert (await d.client.get(f"/jobs/{job_id}")).json()["status"] == "failed"
        after = await d.prepare(f"fake-ok-{tag}-after")
        assert after[-1]["report"]["status"] == "ok"


@pytest.mark.asyncio
async def test_a_crash_the_machine_cannot_record_still_ends_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit: when even the machine refuses to record the crash, followers get an error event
    and the job is done (never a follower waiting forever)."""
    from ltcai.daemon.jobs import Job

    machine = PrepareMachine("job-x", "fake", "m")
    machine.start()
    job = Job(machine, None)

    def broken(self: PrepareMachine, event: Any) -> Any:
        raise IllegalTransition("the machine is broken too (injected)")

    monkeypatch.setattr(PrepareMachine, "handle", broken)
    job.end_after_crash(RuntimeError("the runner's bug"))
    assert job.done.is_set()
    followed = [event async for event in job.follow()]
    assert followed[-1]["type"] == "error" and followed[-1]["error"]["code"] == "internal_error"


@pytest.mark.asyncio
async def test_a_crash_before_the_first_step_is_recorded_from_the_start() -> None:
    from ltcai.daemon.jobs import Job

    job = Job(PrepareMachine("job-y", "fake", "m"), None)
    job.end_after_crash(RuntimeError("before start"))
    report = job.machine.report
    assert report is not None and report.status == "failed"
    assert report.error is not None and (report.error.code, report.error.state) == ("internal_error", "resolving")
    assert "RuntimeError: before start" in report.error.message
    assert [e["type"] for e in job.events] == ["state", "report"]
