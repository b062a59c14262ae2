"""Unit tests of the pure prepare state machine (no I/O, no runner, no engine).

Every legal path is walked and every edge missing from the table is tried, so the table in
``ltcai.daemon.prepare_machine`` is the one place a change of rules can be made.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ltcai.daemon.prepare_machine as pm
from ltcai.daemon.prepare_machine import (
    STEPS,
    TRANSITIONS,
    Cancel,
    Finish,
    Interrupted,
    PrepareMachine,
    PrepareState,
    RunStep,
    SmokeDone,
    StepDone,
    StepFailed,
    Transition,
    check_transition,
    restore,
)
from ltcai.daemon.report import PrepareReport
from ltcai.errors import (
    ChatError,
    DownloadError,
    EngineError,
    EngineUnavailable,
    IllegalTransition,
    InvalidModelId,
    LtcaiError,
    ServerStartError,
)

S = PrepareState
ALL_STATES = list(PrepareState)
TERMINAL = [s for s in ALL_STATES if s.is_terminal]
NON_TERMINAL = [s for s in ALL_STATES if not s.is_terminal]
LEGAL_PAIRS = [(a, b) for a in ALL_STATES for b in sorted(TRANSITIONS[a], key=ALL_STATES.index)]
ILLEGAL_PAIRS = [(a, b) for a in ALL_STATES for b in ALL_STATES if b not in TRANSITIONS[a]]
SMOKE_PROMPT = "한국어로 한 문장만 답해. 2+2는?"


class Clock:
    """A deterministic clock: 1000.0, 1001.0, … one second per reading."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start - 1

    def __call__(self) -> float:
        self.now += 1
        return self.now


def new_machine(clock: Clock | None = None) -> PrepareMachine:
    return PrepareMachine("job-1", "llamacpp", "smollm2", clock=clock or Clock())


def started(clock: Clock | None = None) -> PrepareMachine:
    machine = new_machine(clock)
    machine.start()
    return machine


def smoke(status: str, reason: str = "ok", answer: str = "2 + 2 = 4.") -> SmokeDone:
    return SmokeDone(
        status=status,  # type: ignore[arg-type]  # tests also feed it bad statuses
        reason=reason,
        answer=answer,
        prompt=SMOKE_PROMPT,
        seconds=0.9,
    )


def drive_to(target: PrepareState, clock: Clock | None = None) -> PrepareMachine:
    """A started machine brought to ``target`` by the shortest legal story."""
    machine = started(clock)
    if target in (S.CANCELLED, S.INTERRUPTED):
        machine.handle(Cancel() if target is S.CANCELLED else Interrupted())
        return machine
    for step in STEPS:
        if machine.state is target:
            return machine
        if step is S.SMOKE_TEST:
            break
        machine.handle(StepDone(step, f"{step.value} done"))
    outcome = {S.READY: "ok", S.DEGRADED: "degraded", S.FAILED: "failed"}[target]
    machine.handle(smoke(outcome, reason="mild repetition" if outcome != "ok" else "ok"))
    return machine


def right_event(state: PrepareState) -> StepDone | SmokeDone:
    return smoke("ok") if state is S.SMOKE_TEST else StepDone(state, f"{state.value} done")


# --- the module's surface and the table's shape ----------------------------------------


def test_exported_names_are_the_public_api() -> None:
    assert sorted(pm.__all__) == sorted(
        [
            "SNAPSHOT_VERSION",
            "STEPS",
            "TRANSITIONS",
            "Action",
            "Cancel",
            "Event",
            "Finish",
            "Interrupted",
            "PrepareMachine",
            "PrepareState",
            "RunStep",
            "SmokeDone",
            "StepDone",
            "StepFailed",
            "Transition",
            "check_transition",
            "restore",
        ]
    )
    for name in pm.__all__:
        assert hasattr(pm, name)


def test_state_values_are_the_lower_case_json_names() -> None:
    assert [s.value for s in PrepareState] == [
        "resolving",
        "engine_check",
        "engine_install",
        "downloading",
        "server_starting",
        "model_serving",
        "model_loading",
        "smoke_test",
        "ready",
        "degraded",
        "failed",
        "cancelled",
        "interrupted",
    ]


def test_steps_are_the_spec_chain_in_order() -> None:
    assert STEPS == (
        S.RESOLVING,
        S.ENGINE_CHECK,
        S.ENGINE_INSTALL,
        S.DOWNLOADING,
        S.SERVER_STARTING,
        S.MODEL_SERVING,
        S.MODEL_LOADING,
        S.SMOKE_TEST,
    )


def test_table_covers_every_state_once() -> None:
    assert set(TRANSITIONS) == set(PrepareState)


def test_terminal_states_have_no_exits_and_are_exactly_the_five() -> None:
    assert set(TERMINAL) == {S.READY, S.DEGRADED, S.FAILED, S.CANCELLED, S.INTERRUPTED}
    for state in TERMINAL:
        assert TRANSITIONS[state] == frozenset()


@pytest.mark.parametrize("state", NON_TERMINAL, ids=lambda s: s.value)
def test_every_non_terminal_state_can_fail_be_cancelled_or_interrupted(state: PrepareState) -> None:
    assert {S.FAILED, S.CANCELLED, S.INTERRUPTED} <= TRANSITIONS[state]


def test_chain_is_strictly_linear() -> None:
    aborts = {S.FAILED, S.CANCELLED, S.INTERRUPTED}
    for step, following in itertools.pairwise(STEPS):
        assert TRANSITIONS[step] - aborts == {following}
    assert TRANSITIONS[S.SMOKE_TEST] - aborts == {S.READY, S.DEGRADED}


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.value)
def test_ready_to_chat_only_for_ready_and_degraded(state: PrepareState) -> None:
    assert state.ready_to_chat is (state in (S.READY, S.DEGRADED))


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.value)
def test_is_terminal_means_no_exits(state: PrepareState) -> None:
    assert state.is_terminal is (not TRANSITIONS[state])


# --- every legal path --------------------------------------------------------------------

SMOKE_CASES = [
    ("ok", S.READY, "ok"),
    ("degraded", S.DEGRADED, "degraded"),
    ("failed", S.FAILED, "failed"),
]


def test_every_skip_combination_and_smoke_outcome_walks_the_whole_chain() -> None:
    for mask, (smoke_status, end, status) in itertools.product(
        itertools.product([False, True], repeat=len(STEPS) - 1), SMOKE_CASES
    ):
        machine = new_machine()
        action: Any = machine.start()
        visited = [action.state]
        for step, skipped in zip(STEPS[:-1], mask, strict=True):
            assert isinstance(action, RunStep) and action.state is step
            action = machine.handle(
                StepDone(step, "nothing to do" if skipped else "done", skipped=skipped)
            )
            visited.append(action.state)
        action = machine.handle(smoke(smoke_status, reason="x"))
        assert isinstance(action, Finish)
        assert action.state is end and machine.state is end
        assert machine.history == (*STEPS, end) == (*visited, end)
        assert action.report.status == status
        assert action.report.ready_to_chat is end.ready_to_chat
        logged_steps = [log.state for log in action.report.stage_logs]
        assert logged_steps == [s.value for s in (*STEPS, end)]
        for log, skipped in zip(action.report.stage_logs[: len(mask)], mask, strict=True):
            assert log.message == ("skipped: nothing to do" if skipped else "done")
        assert action.report.downloaded is (not mask[STEPS.index(S.DOWNLOADING)])
        assert action.report.loaded is (not mask[STEPS.index(S.MODEL_LOADING)])


@pytest.mark.parametrize(("smoke_status", "end", "status"), SMOKE_CASES)
def test_smoke_outcome_picks_the_end_state(
    smoke_status: str, end: PrepareState, status: str
) -> None:
    machine = drive_to(S.SMOKE_TEST)
    action = machine.handle(smoke(smoke_status, reason="why", answer="answer"))
    assert isinstance(action, Finish) and action.state is end
    report = action.report
    assert report.state == end.value and report.status == status
    assert report.compatibility_status == smoke_status
    assert report.smoke_test is not None
    assert report.smoke_test.to_dict() == {
        "prompt": SMOKE_PROMPT,
        "answer": "answer",
        "status": smoke_status,
        "reason": "why",
        "seconds": 0.9,
    }
    assert report.ready_to_chat is (end is not S.FAILED)
    if end is S.FAILED:
        assert report.error is not None
        assert (report.error.code, report.error.state) == ("smoke_test_failed", "smoke_test")
        assert report.error.hint
        assert report.message == "smoke test failed: why"
    else:
        assert report.error is None


def test_ready_report_has_every_field_the_steps_gave() -> None:
    resolution = {"input_id": "smollm2", "engine": "llamacpp", "resolved_model": "SmolLM2"}
    extras: dict[PrepareState, dict[str, Any]] = {
        S.RESOLVING: {"resolution": resolution},
        S.ENGINE_INSTALL: {"install_result": {"installed": False, "reason": "present"}},
        S.DOWNLOADING: {"download_result": {"path": "/m/smollm2.gguf", "bytes": 98_000_000}},
        S.MODEL_LOADING: {"current": "llamacpp:SmolLM2", "warmup_s": 0.2},
    }
    clock = Clock()
    machine = new_machine(clock)
    machine.start()
    for step in STEPS[:-1]:
        machine.handle(StepDone(step, f"{step.value} done", extra=extras.get(step)))
    action = machine.handle(smoke("ok"))
    assert isinstance(action, Finish)
    report = action.report
    assert (report.job_id, report.engine, report.model) == ("job-1", "llamacpp", "smollm2")
    assert report.resolution == resolution
    assert report.current == "llamacpp:SmolLM2"
    assert report.install_result == {"installed": False, "reason": "present"}
    assert report.download_result == {"path": "/m/smollm2.gguf", "bytes": 98_000_000}
    assert report.downloaded and report.loaded and report.ready_to_chat
    assert report.message == "smollm2 is ready to chat on llamacpp"
    assert report.error is None
    # start() read the clock once, then each event once: 1000 + 8 events.
    assert (report.started_at, report.finished_at, report.duration_s) == (1000.0, 1008.0, 8.0)


def test_a_skipped_download_may_still_report_the_weights_present() -> None:
    machine = drive_to(S.DOWNLOADING)
    machine.handle(
        StepDone(S.DOWNLOADING, "already in the HF cache", skipped=True, extra={"downloaded": True})
    )
    for step in STEPS[STEPS.index(S.SERVER_STARTING) : -1]:
        machine.handle(StepDone(step, "done"))
    action = machine.handle(smoke("ok"))
    assert isinstance(action, Finish) and action.report.downloaded is True


def test_extra_can_say_a_step_did_not_achieve_its_flag() -> None:
    machine = drive_to(S.MODEL_LOADING)
    machine.handle(StepDone(S.MODEL_LOADING, "loads on first request", extra={"loaded": False}))
    action = machine.handle(smoke("ok"))
    assert isinstance(action, Finish) and action.report.loaded is False


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"downloaded": "yes"}, "downloaded"),
        ({"loaded": None}, "loaded"),
        ({"current": 3}, "current"),
        ({"resolution": ["a"]}, "resolution"),
        ({"install_result": "ok"}, "install_result"),
        ({"download_result": 1}, "download_result"),
    ],
)
def test_a_report_extra_of_the_wrong_type_is_refused_when_the_event_is_built(
    extra: dict[str, Any], key: str
) -> None:
    with pytest.raises(TypeError, match=key):
        StepDone(S.RESOLVING, "done", extra=extra)


def test_step_extra_is_copied_so_the_runner_cannot_rewrite_history() -> None:
    machine = started()
    extra: dict[str, Any] = {"resolution": {"engine": "llamacpp"}, "note": "first"}
    machine.handle(StepDone(S.RESOLVING, "resolved", extra=extra))
    extra["note"] = "rewritten"
    assert machine.stage_logs[0].extra == {"resolution": {"engine": "llamacpp"}, "note": "first"}


# --- failures, cancels, interruptions ---------------------------------------------------

STEP_ERRORS: dict[PrepareState, LtcaiError] = {
    S.RESOLVING: InvalidModelId("model id contains '..'", rule="path_traversal"),
    S.ENGINE_CHECK: EngineUnavailable(
        "llama_cpp is not importable", hint="ltcai engines install llamacpp"
    ),
    S.ENGINE_INSTALL: EngineError("pip install failed"),
    S.DOWNLOADING: DownloadError("sha256 mismatch", hint="retry"),
    S.SERVER_STARTING: ServerStartError("server exited with 1"),
    S.MODEL_SERVING: ServerStartError("model not listed by /v1/models"),
    S.MODEL_LOADING: EngineError("out of memory", code="load_failed"),
    S.SMOKE_TEST: ChatError("connection reset"),
}


@pytest.mark.parametrize("state", STEPS, ids=lambda s: s.value)
def test_failure_at_any_step_ends_failed_with_that_state_and_code(state: PrepareState) -> None:
    error = STEP_ERRORS[state]
    machine = drive_to(state)
    before = len(machine.stage_logs)
    action = machine.handle(StepFailed.from_error(state, error))
    assert isinstance(action, Finish) and action.state is S.FAILED
    report = action.report
    assert report.status == "failed" and report.state == "failed"
    assert report.error is not None
    assert report.error.to_dict() == {
        "code": error.code,
        "message": error.message,
        "state": state.value,
        "hint": error.hint,
    }
    assert not report.ready_to_chat
    assert report.compatibility_status == "unknown"
    assert report.message == f"failed during {state.value}: {error.message}"
    failed_step, end = report.stage_logs[before:]
    assert (failed_step.state, failed_step.message) == (state.value, error.message)
    assert failed_step.extra == {"error": report.error.to_dict()}
    assert (end.state, end.message) == ("failed", report.message)
    assert machine.history == (*STEPS[: STEPS.index(state) + 1], S.FAILED)


def test_step_failed_keeps_a_custom_code() -> None:
    machine = drive_to(S.MODEL_LOADING)
    action = machine.handle(StepFailed.from_error(S.MODEL_LOADING, STEP_ERRORS[S.MODEL_LOADING]))
    assert isinstance(action, Finish) and action.report.error is not None
    assert action.report.error.code == "load_failed"


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.value)
def test_cancel_at_any_state(state: PrepareState) -> None:
    machine = drive_to(state)
    before = machine.snapshot()
    action = machine.handle(Cancel("user pressed ^C"))
    assert isinstance(action, Finish)
    if state.is_terminal:
        # Cancelling a finished job is a no-op: same report, no transition to publish.
        assert action.state is state and action.transition is None
        assert action.report is machine.report
        assert machine.snapshot() == before
        assert machine.handle(Cancel()) == action
    else:
        assert action.state is S.CANCELLED and machine.state is S.CANCELLED
        report = action.report
        assert report.status == "cancelled" and not report.ready_to_chat
        assert report.error is not None
        assert (report.error.code, report.error.state) == ("cancelled", state.value)
        assert report.message == f"cancelled during {state.value}: user pressed ^C"
        assert report.stage_logs[-1].state == "cancelled"
        assert action.transition is not None and action.transition.source is state
        # A second cancel (two clients at once) is the same no-op.
        again = machine.handle(Cancel())
        assert again.transition is None and again.report is report


@pytest.mark.parametrize("state", NON_TERMINAL, ids=lambda s: s.value)
def test_restoring_a_running_job_as_interrupted(state: PrepareState) -> None:
    snapshot = json.loads(json.dumps(drive_to(state).snapshot()))
    machine = restore(snapshot, interrupted=True, clock=Clock(5000.0))
    assert machine.state is S.INTERRUPTED
    report = machine.report
    assert report is not None
    assert report.status == "interrupted" and not report.ready_to_chat
    assert report.error is not None
    assert (report.error.code, report.error.state) == ("interrupted", state.value)
    assert report.error.hint
    assert report.finished_at == 5000.0
    assert machine.history[-2:] == (state, S.INTERRUPTED)
    assert report.stage_logs[-1].state == "interrupted"


@pytest.mark.parametrize("state", TERMINAL, ids=lambda s: s.value)
def test_restoring_an_ended_job_as_interrupted_leaves_it_alone(state: PrepareState) -> None:
    original = drive_to(state)
    machine = restore(original.snapshot(), interrupted=True)
    assert machine.state is state
    assert machine.report == original.report


def test_restoring_a_job_that_never_started_as_interrupted() -> None:
    machine = restore(new_machine().snapshot(), interrupted=True, clock=Clock())
    assert machine.state is S.INTERRUPTED
    assert machine.history == (S.RESOLVING, S.INTERRUPTED)


def test_interrupted_event_on_a_live_machine_gives_the_finish_action() -> None:
    machine = restore(drive_to(S.DOWNLOADING).snapshot())
    action = machine.handle(Interrupted())
    assert isinstance(action, Finish) and action.state is S.INTERRUPTED
    assert action.transition is not None
    assert (action.transition.source, action.transition.target) == (S.DOWNLOADING, S.INTERRUPTED)


# --- every illegal edge -------------------------------------------------------------------


def test_illegal_pair_count() -> None:
    # 13 states squared, less 7 steps x 4 exits and smoke_test's 5.
    assert len(ILLEGAL_PAIRS) == 13 * 13 - (7 * 4 + 5)


@pytest.mark.parametrize(("source", "target"), ILLEGAL_PAIRS, ids=lambda s: s.value)
def test_every_edge_missing_from_the_table_raises(
    source: PrepareState, target: PrepareState
) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_transition(source, target, story="; job j")
    message = str(info.value)
    assert f"{source.value} -> {target.value}" in message
    assert message.endswith("; job j")
    assert info.value.code == "illegal_transition"


@pytest.mark.parametrize(("source", "target"), LEGAL_PAIRS, ids=lambda s: s.value)
def test_every_edge_in_the_table_is_allowed(source: PrepareState, target: PrepareState) -> None:
    check_transition(source, target)


@pytest.mark.parametrize("current", NON_TERMINAL, ids=lambda s: s.value)
def test_an_event_for_another_state_raises_naming_both(current: PrepareState) -> None:
    for other in ALL_STATES:
        if other is current:
            continue
        for event in (StepDone(other, "done"), StepFailed(other, "boom", "boom")):
            machine = drive_to(current)
            before = machine.snapshot()
            with pytest.raises(IllegalTransition) as info:
                machine.handle(event)
            message = str(info.value)
            assert f"is for {other.value} but the job is in {current.value}" in message
            assert "history: resolving" in message and "job-1" in message
            assert machine.snapshot() == before


@pytest.mark.parametrize(
    "current", [s for s in NON_TERMINAL if s is not S.SMOKE_TEST], ids=lambda s: s.value
)
def test_smoke_result_outside_the_smoke_test_raises(current: PrepareState) -> None:
    for status in ("ok", "degraded", "failed"):
        machine = drive_to(current)
        with pytest.raises(
            IllegalTransition, match=f"is for smoke_test but the job is in {current.value}"
        ):
            machine.handle(smoke(status))
        assert machine.state is current


def test_smoke_test_must_end_with_a_smoke_result() -> None:
    machine = drive_to(S.SMOKE_TEST)
    with pytest.raises(IllegalTransition, match="smoke_test ends with SmokeDone"):
        machine.handle(StepDone(S.SMOKE_TEST, "done"))
    assert machine.state is S.SMOKE_TEST


@pytest.mark.parametrize("end", TERMINAL, ids=lambda s: s.value)
def test_after_the_end_every_event_but_cancel_raises(end: PrepareState) -> None:
    events: list[Any] = [Interrupted(), smoke("ok"), StepFailed(end, "x", "x"), StepDone(end, "x")]
    events += [StepDone(s, "x") for s in STEPS] + [StepFailed(s, "x", "x") for s in STEPS]
    for event in events:
        machine = drive_to(end)
        before = machine.snapshot()
        with pytest.raises(IllegalTransition) as info:
            machine.handle(event)
        assert end.value in str(info.value)
        assert machine.snapshot() == before


def test_after_the_end_the_message_names_the_refused_edge() -> None:
    machine = drive_to(S.READY)
    with pytest.raises(IllegalTransition, match="no transition ready -> failed"):
        machine.handle(StepFailed(S.READY, "x", "x"))
    with pytest.raises(IllegalTransition, match="no transition ready -> interrupted"):
        machine.handle(Interrupted())


def test_events_before_start_raise() -> None:
    machine = new_machine()
    for event in (StepDone(S.RESOLVING, "x"), Cancel(), Interrupted()):
        with pytest.raises(IllegalTransition, match="before start"):
            machine.handle(event)
    assert machine.history == (S.RESOLVING,)


def test_start_twice_raises() -> None:
    machine = started()
    with pytest.raises(IllegalTransition, match="twice"):
        machine.start()


def test_start_on_a_restored_machine_raises() -> None:
    machine = restore(drive_to(S.DOWNLOADING).snapshot())
    with pytest.raises(IllegalTransition, match="twice"):
        machine.start()


def test_a_non_event_is_a_type_error() -> None:
    machine = started()
    with pytest.raises(TypeError):
        machine.handle("resolving done")  # type: ignore[arg-type]
    assert machine.state is S.RESOLVING


def test_events_check_their_fields() -> None:
    with pytest.raises(TypeError):
        StepDone("resolving", "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        StepFailed("resolving", "x", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status"):
        smoke("fine")


# --- stage logs and transitions ------------------------------------------------------------


def test_stage_logs_tell_the_story_in_order() -> None:
    clock = Clock()
    machine = new_machine(clock)
    machine.start()
    machine.handle(
        StepDone(S.RESOLVING, "smollm2 -> llamacpp:SmolLM2", extra={"resolution": {"m": "SmolLM2"}})
    )
    machine.handle(StepDone(S.ENGINE_CHECK, "llama_cpp 0.3.36"))
    machine.handle(StepDone(S.ENGINE_INSTALL, "already installed", skipped=True))
    machine.handle(StepDone(S.DOWNLOADING, "", skipped=True))
    machine.handle(
        StepFailed(S.SERVER_STARTING, "server_start_failed", "port in use", "free port 8080")
    )
    assert [log.to_dict() for log in machine.stage_logs] == [
        {
            "state": "resolving",
            "message": "smollm2 -> llamacpp:SmolLM2",
            "time": 1001.0,
            "extra": {"resolution": {"m": "SmolLM2"}},
        },
        {"state": "engine_check", "message": "llama_cpp 0.3.36", "time": 1002.0, "extra": None},
        {
            "state": "engine_install",
            "message": "skipped: already installed",
            "time": 1003.0,
            "extra": None,
        },
        {"state": "downloading", "message": "skipped", "time": 1004.0, "extra": None},
        {
            "state": "server_starting",
            "message": "port in use",
            "time": 1005.0,
            "extra": {
                "error": {
                    "code": "server_start_failed",
                    "message": "port in use",
                    "state": "server_starting",
                    "hint": "free port 8080",
                }
            },
        },
        {
            "state": "failed",
            "message": "failed during server_starting: port in use",
            "time": 1005.0,
            "extra": None,
        },
    ]
    report = machine.report
    assert report is not None
    assert report.resolution == {"m": "SmolLM2"}
    assert not report.downloaded and not report.loaded


def test_each_action_carries_the_transition_that_produced_it() -> None:
    clock = Clock()
    machine = new_machine(clock)
    transitions: list[Transition] = []
    action: Any = machine.start()
    transitions.append(action.transition)
    while isinstance(action, RunStep):
        action = machine.handle(right_event(action.state))
        transitions.append(action.transition)
    assert [t.target for t in transitions] == list(machine.history)
    assert [t.source for t in transitions] == [None, *machine.history[:-1]]
    assert transitions[0].to_dict() == {
        "job_id": "job-1",
        "event": None,
        "from": None,
        "state": "resolving",
        "message": "preparing smollm2 on llamacpp",
        "time": 1000.0,
    }
    assert transitions[-1].to_dict() == {
        "job_id": "job-1",
        "event": "SmokeDone",
        "from": "smoke_test",
        "state": "ready",
        "message": "smollm2 is ready to chat on llamacpp",
        "time": 1008.0,
    }
    assert transitions[1].message == "resolving done" == machine.stage_logs[0].message
    assert machine.message == transitions[-1].message
    assert all(json.dumps(t.to_dict()) for t in transitions)


def test_report_is_none_until_the_end() -> None:
    machine = started()
    for step in STEPS:
        assert machine.state is step and machine.report is None
        machine.handle(right_event(step))
    assert machine.report is not None


# --- snapshots ------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.value)
def test_snapshot_round_trips_through_json_at_every_state(state: PrepareState) -> None:
    original = drive_to(state)
    snapshot = json.loads(json.dumps(original.snapshot()))
    machine = restore(snapshot)
    assert machine.snapshot() == original.snapshot()
    assert machine.state is state and machine.history == original.history
    assert machine.stage_logs == original.stage_logs
    assert machine.report == original.report


def test_a_restored_running_job_can_continue() -> None:
    clock = Clock()
    machine = restore(drive_to(S.DOWNLOADING, clock).snapshot(), clock=clock)
    action: Any = machine.handle(StepDone(S.DOWNLOADING, "done"))
    while isinstance(action, RunStep):
        action = machine.handle(right_event(action.state))
    assert action.state is S.READY and action.report.downloaded


def test_snapshot_key_set_is_stable() -> None:
    assert list(drive_to(S.READY).snapshot()) == list(pm._SNAPSHOT_KEYS)


def test_snapshot_is_a_copy() -> None:
    machine = drive_to(S.ENGINE_CHECK)
    machine_before = machine.snapshot()
    snapshot = machine.snapshot()
    snapshot["history"].append("ready")
    snapshot["stage_logs"][0]["message"] = "changed"
    assert machine.snapshot() == machine_before


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"version": 99}, "version 99"),
        (
            {"history": ["resolving", "downloading"], "state": "downloading"},
            "illegal step resolving -> downloading",
        ),
        ({"history": ["engine_check"], "state": "engine_check"}, "history must run from resolving"),
        ({"state": "ready"}, "history must run from resolving to ready"),
        ({"state": "nonsense"}, "nonsense"),
    ],
)
def test_restore_refuses_a_snapshot_it_cannot_trust(change: dict[str, Any], match: str) -> None:
    snapshot = {**drive_to(S.ENGINE_CHECK).snapshot(), **change}
    with pytest.raises(ValueError, match=match):
        restore(snapshot)


def test_restore_refuses_a_snapshot_with_a_missing_key() -> None:
    snapshot = drive_to(S.ENGINE_CHECK).snapshot()
    del snapshot["stage_logs"]
    with pytest.raises(ValueError, match="missing stage_logs"):
        restore(snapshot)


def test_restore_refuses_an_ended_snapshot_without_times() -> None:
    snapshot = {**drive_to(S.READY).snapshot(), "finished_at": None}
    with pytest.raises(ValueError, match="finished_at"):
        restore(snapshot)


# --- random event sequences ---------------------------------------------------------------

any_event = st.one_of(
    st.builds(StepDone, st.sampled_from(ALL_STATES), st.text(max_size=5), st.booleans()),
    st.builds(
        StepFailed,
        st.sampled_from(ALL_STATES),
        st.sampled_from(["download_failed", "x"]),
        st.text(max_size=5),
    ),
    st.builds(smoke, st.sampled_from(["ok", "degraded", "failed"])),
    st.builds(Cancel),
    st.builds(Interrupted),
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_events_never_leave_the_table(data: st.DataObject) -> None:
    machine = started()
    for _ in range(data.draw(st.integers(0, 25), label="length")):
        # Half the time the event the current state expects, or the walk never gets far.
        fitting = data.draw(st.booleans(), label="fitting")
        if fitting and not machine.state.is_terminal:
            event: Any = right_event(machine.state)
        else:
            event = data.draw(any_event, label="event")
        source, before = machine.state, machine.snapshot()
        try:
            action = machine.handle(event)
        except IllegalTransition:
            assert machine.snapshot() == before
            continue
        assert machine.state in TRANSITIONS
        if source.is_terminal:
            assert isinstance(event, Cancel) and action.transition is None
            assert machine.snapshot() == before
        else:
            assert machine.state in TRANSITIONS[source]
            assert action.transition is not None
            assert (action.transition.source, action.transition.target) == (source, machine.state)
            assert machine.history[-2:] == (source, machine.state)
        assert isinstance(action, Finish) is machine.state.is_terminal
        if isinstance(action, Finish):
            assert action.report.ready_to_chat is machine.state.ready_to_chat
            assert isinstance(
                PrepareReport.from_dict(json.loads(json.dumps(action.report.to_dict()))),
                PrepareReport,
            )
    for source, target in itertools.pairwise(machine.history):
        assert target in TRANSITIONS[source]


# --- one judge of readiness ----------------------------------------------------------


def test_the_end_states_and_their_readiness_are_one_table() -> None:
    from ltcai.daemon.prepare_states import READINESS, SMOKE_OUTCOME

    assert set(READINESS) == set(TERMINAL)
    assert set(SMOKE_OUTCOME.values()) <= set(TERMINAL)
    assert {s for s in ALL_STATES if s.ready_to_chat} == {S.READY, S.DEGRADED}
    assert all(s.readiness is None for s in NON_TERMINAL)


@pytest.mark.parametrize(("smoke_status", "end", "status"), SMOKE_CASES)
def test_finish_carries_the_machines_readiness(smoke_status: str, end: PrepareState, status: str) -> None:
    from ltcai.daemon.readiness import Readiness

    action = drive_to(S.SMOKE_TEST).handle(smoke(smoke_status))
    assert isinstance(action, Finish)
    assert action.readiness is action.report.status is end.readiness
    assert isinstance(action.readiness, Readiness) and action.readiness == status
    assert action.readiness.chat_ready is end.ready_to_chat
