"""The prepare job as a state machine with no I/O.

Its states and the one table of allowed transitions live in ``prepare_states``; the
events it takes and the actions it returns in ``prepare_events`` (re-exported here, the
machine's public surface); this module holds the machine that applies them, and the
snapshot/restore that persists it.

Pure so the rules (which state follows which, what a failure records, what counts as
chat-ready) can be tested exhaustively and deterministically, leaving the async runner
nothing but I/O. The shape follows h11's ``_state.py`` and dask's worker state machine:
the machine takes an *event* (what the runner observed) and returns an *action* (what the
runner must do next). The runner's whole loop::

    machine = PrepareMachine(job_id, engine, model)
    action = machine.start()                       # RunStep(RESOLVING)
    while isinstance(action, RunStep):
        publish(action.transition)
        event = await run_step(action.state)       # StepDone / SmokeDone / StepFailed
        action = machine.handle(event)
    publish(action.transition)                     # Finish: action.report is final

Each action carries the ``Transition`` that produced it instead of the machine calling a
callback: nothing foreign runs inside ``handle`` half-way through an update, and tests see
every transition without wiring anything.

The chain is strictly linear: a step with nothing to do is still visited and answered
with ``StepDone(state, message, skipped=True)``, so the log tells the whole story.
``handle`` is atomic: when it raises, the machine is exactly as it was.

A ``Cancel`` after the job has ended is a no-op returning the existing ``Finish`` with
``transition=None``: two clients may cancel at once, and cancelling a finished job is not a
bug. Every other event after the end raises ``IllegalTransition``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from ltcai.errors import ErrorCode, IllegalTransition

from .prepare_events import (
    REPORT_EXTRAS,
    Action,
    Cancel,
    Event,
    Finish,
    Interrupted,
    RunStep,
    SmokeDone,
    StepDone,
    StepFailed,
    Transition,
    concerned_state,
    describe,
    intended_target,
)
from .prepare_states import (
    STEPS,
    TRANSITIONS,
    PrepareState,
    check_transition,
    parse_history,
)
from .report import PrepareReport, SmokeTest, StageLog, StructuredError

__all__ = [
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

_S = PrepareState

SNAPSHOT_VERSION: Final = 1

_SMOKE_FAILED_HINT: Final = (
    "the model loads but does not chat cleanly; "
    "see smoke_test.answer, or try another engine or quantisation"
)
_INTERRUPTED_HINT: Final = "run prepare again"


def _capabilities_extra(event: SmokeDone) -> dict[str, Any]:
    """The verdicts measured with the smoke test, kept in its stage log (the report's key
    set is fixed; a stage log's extra is where a step's details go)."""
    return {} if event.capabilities is None else {"capabilities": event.capabilities}


class PrepareMachine:
    """One prepare job's state, stage logs and report fields; see the module docstring."""

    def __init__(
        self, job_id: str, engine: str, model: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.job_id = job_id
        self.engine = engine
        self.model = model
        self._clock = clock
        self._started = False
        self._state = _S.RESOLVING
        self._history: list[PrepareState] = [_S.RESOLVING]
        self._logs: list[StageLog] = []
        self._message = ""
        self._fields: dict[str, Any] = {
            "resolution": None,
            "current": None,
            "downloaded": False,
            "loaded": False,
            "install_result": None,
            "download_result": None,
        }
        self._smoke: SmokeTest | None = None
        self._error: StructuredError | None = None
        self._started_at: float | None = None
        self._finished_at: float | None = None
        self._report: PrepareReport | None = None

    # -- read-only views --

    @property
    def state(self) -> PrepareState:
        return self._state

    @property
    def started(self) -> bool:
        return self._started

    @property
    def history(self) -> tuple[PrepareState, ...]:
        return tuple(self._history)

    @property
    def stage_logs(self) -> tuple[StageLog, ...]:
        return tuple(self._logs)

    @property
    def message(self) -> str:
        return self._message

    @property
    def report(self) -> PrepareReport | None:
        """The final report; None until the job has ended."""
        return self._report

    # -- driving --

    def start(self) -> RunStep:
        if self._started:
            raise IllegalTransition(f"start() called twice{self._story(None)}")
        self._started = True
        now = self._clock()
        self._started_at = now
        self._message = f"preparing {self.model} on {self.engine}"
        transition = Transition(self.job_id, None, _S.RESOLVING, None, self._message, now)
        return RunStep(_S.RESOLVING, transition)

    def handle(self, event: Event) -> Action:
        """Apply ``event``; raise ``IllegalTransition`` (changing nothing) if it does not fit."""
        if not self._started:
            raise IllegalTransition(f"{describe(event)} before start(){self._story(event)}")
        if self._state.is_terminal:
            if isinstance(event, Cancel) and self._report is not None:
                return Finish(self._state, self._report, None)
            target = intended_target(event)
            edge = self._state.value + (f" -> {target.value}" if target is not None else "")
            raise IllegalTransition(
                f"the job already ended: no transition {edge}{self._story(event)}"
            )
        target = self._target(event)
        check_transition(self._state, target, story=self._story(event))
        return self._apply(event, target, self._clock())

    # -- internals --

    def _story(self, event: Event | None) -> str:
        path = " -> ".join(s.value for s in self._history)
        job = f"job {self.job_id} ({self.engine} {self.model})"
        return f"; {job} in {self._state.value}, event {describe(event)}, history: {path}"

    def _target(self, event: Event) -> PrepareState:
        concerned = concerned_state(event, self._state)
        if concerned is not self._state:
            mismatch = f"is for {concerned.value} but the job is in {self._state.value}"
            raise IllegalTransition(f"{describe(event)} {mismatch}{self._story(event)}")
        target = intended_target(event)
        if target is None:
            # Only SMOKE_TEST gets here: its outcome picks among several states.
            raise IllegalTransition(
                f"{concerned.value} ends with SmokeDone, not StepDone{self._story(event)}"
            )
        return target

    def _apply(self, event: Event, target: PrepareState, now: float) -> Action:
        match event:
            case StepDone():
                return self._step_done(event, target, now)
            case SmokeDone():
                return self._smoke_done(event, target, now)
            case StepFailed():
                self._error = StructuredError(
                    event.code, event.message, event.state.value, event.hint
                )
                self._log(event.state, event.message, now, {"error": self._error.to_dict()})
                return self._finish(
                    target, event, f"failed during {event.state.value}: {event.message}", now
                )
            case Cancel():
                return self._abort(target, event, event.reason, ErrorCode.CANCELLED, None, now)
            case Interrupted():
                hint = _INTERRUPTED_HINT
                return self._abort(target, event, event.reason, ErrorCode.INTERRUPTED, hint, now)
        # Unreachable: _target has already refused anything that is not an event.
        raise TypeError(f"not a prepare event: {event!r}")  # pragma: no cover

    def _abort(
        self,
        target: PrepareState,
        event: Event,
        reason: str,
        code: str,
        hint: str | None,
        now: float,
    ) -> Finish:
        # The error records where the job stopped, which the terminal state alone cannot say.
        message = f"{target.value} during {self._state.value}: {reason}"
        self._error = StructuredError(code, message, self._state.value, hint)
        return self._finish(target, event, message, now)

    def _step_done(self, event: StepDone, target: PrepareState, now: float) -> RunStep:
        extra = dict(event.extra) if event.extra is not None else None
        if not event.skipped and event.state is _S.DOWNLOADING:
            self._fields["downloaded"] = True
        if not event.skipped and event.state is _S.MODEL_LOADING:
            self._fields["loaded"] = True
        for key in REPORT_EXTRAS:
            if extra is not None and key in extra:
                self._fields[key] = extra[key]
        message = event.message
        if event.skipped:
            message = f"skipped: {message}" if message else "skipped"
        self._log(event.state, message, now, extra)
        return RunStep(target, self._enter(target, event, message, now))

    def _smoke_done(self, event: SmokeDone, target: PrepareState, now: float) -> Finish:
        self._smoke = SmokeTest(
            event.prompt, event.answer, event.status, event.reason, event.seconds
        )
        extra = {"smoke_test": self._smoke.to_dict(), **_capabilities_extra(event)}
        message = f"smoke test {event.status}: {event.reason}"
        if event.reused is not None:  # the earlier verdict decides, as if measured now
            message, extra["skipped"] = f"skipped: {event.reused}", True
        self._log(_S.SMOKE_TEST, message, now, extra)
        if target is _S.READY:
            message = f"{self.model} is ready to chat on {self.engine}"
        elif target is _S.DEGRADED:
            message = f"{self.model} chats on {self.engine}, with problems: {event.reason}"
        else:
            message = f"smoke test failed: {event.reason}"
            self._error = StructuredError(
                ErrorCode.SMOKE_TEST_FAILED, message, _S.SMOKE_TEST.value, _SMOKE_FAILED_HINT
            )
        return self._finish(target, event, message, now)

    def _log(
        self, state: PrepareState, message: str, now: float, extra: dict[str, Any] | None
    ) -> None:
        self._logs.append(StageLog(state.value, message, now, extra))

    def _enter(
        self, target: PrepareState, event: Event | None, message: str, now: float
    ) -> Transition:
        transition = Transition(self.job_id, self._state, target, event, message, now)
        self._state = target
        self._history.append(target)
        self._message = message
        return transition

    def _finish(self, target: PrepareState, event: Event, message: str, now: float) -> Finish:
        self._finished_at = now
        self._log(target, message, now, None)
        transition = self._enter(target, event, message, now)
        self._report = self._build_report()
        return Finish(target, self._report, transition)

    def _build_report(self) -> PrepareReport:
        assert (
            self._started_at is not None and self._finished_at is not None
        )  # only ever called on the end
        readiness = self._state.readiness
        assert readiness is not None  # every terminal state has one (prepare_states.READINESS)
        return PrepareReport(
            job_id=self.job_id,
            engine=self.engine,
            model=self.model,
            status=readiness,
            state=self._state.value,
            resolution=self._fields["resolution"],
            current=self._fields["current"],
            message=self._message,
            downloaded=self._fields["downloaded"],
            loaded=self._fields["loaded"],
            ready_to_chat=readiness.chat_ready,
            compatibility_status=self._smoke.status if self._smoke is not None else "unknown",
            smoke_test=self._smoke,
            stage_logs=tuple(self._logs),
            error=self._error,
            install_result=self._fields["install_result"],
            download_result=self._fields["download_result"],
            started_at=self._started_at,
            finished_at=self._finished_at,
            duration_s=self._finished_at - self._started_at,
        )

    # -- persistence --

    def snapshot(self) -> dict[str, Any]:
        """Everything ``restore`` needs, as JSON-able data with a stable key set."""
        data = {
            "version": SNAPSHOT_VERSION,
            "job_id": self.job_id,
            "engine": self.engine,
            "model": self.model,
            "state": self._state.value,
            "started": self._started,
            "history": [s.value for s in self._history],
            "message": self._message,
            **self._fields,
            "smoke_test": None if self._smoke is None else self._smoke.to_dict(),
            "error": None if self._error is None else self._error.to_dict(),
            "stage_logs": [log.to_dict() for log in self._logs],
            "started_at": self._started_at,
            "finished_at": self._finished_at,
        }
        # A deep copy, so whoever serialises it cannot reach into the machine's history.
        return copy.deepcopy(data)


_SNAPSHOT_KEYS: Final[tuple[str, ...]] = (
    "version",
    "job_id",
    "engine",
    "model",
    "state",
    "started",
    "history",
    "message",
    *REPORT_EXTRAS,
    "smoke_test",
    "error",
    "stage_logs",
    "started_at",
    "finished_at",
)


def restore(
    snapshot: Mapping[str, Any],
    *,
    interrupted: bool = False,
    clock: Callable[[], float] = time.time,
) -> PrepareMachine:
    """Rebuild a machine from ``PrepareMachine.snapshot()``; raise ``ValueError`` if unreadable.

    With ``interrupted=True`` (what the daemon passes at start-up, since nothing runs a job
    the previous daemon left behind) a job that had not ended is moved to INTERRUPTED;
    ended jobs stay as they were. To get that ``Finish`` action, restore without the flag
    and ``handle(Interrupted())`` instead.
    """
    if snapshot.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"cannot read a prepare snapshot of version {snapshot.get('version')!r}")
    missing = [key for key in _SNAPSHOT_KEYS if key not in snapshot]
    if missing:
        raise ValueError(f"prepare snapshot is missing {', '.join(missing)}")
    machine = PrepareMachine(snapshot["job_id"], snapshot["engine"], snapshot["model"], clock=clock)
    state = PrepareState(snapshot["state"])
    machine._state = state
    machine._history = parse_history(snapshot["history"], state)
    machine._started = bool(snapshot["started"])
    machine._message = snapshot["message"]
    machine._fields = {key: copy.deepcopy(snapshot[key]) for key in REPORT_EXTRAS}
    machine._smoke = (
        None if snapshot["smoke_test"] is None else SmokeTest.from_dict(snapshot["smoke_test"])
    )
    machine._error = (
        None if snapshot["error"] is None else StructuredError.from_dict(snapshot["error"])
    )
    machine._logs = [StageLog.from_dict(copy.deepcopy(log)) for log in snapshot["stage_logs"]]
    machine._started_at = snapshot["started_at"]
    machine._finished_at = snapshot["finished_at"]
    if state.is_terminal:
        if machine._started_at is None or machine._finished_at is None:
            raise ValueError(
                f"an ended prepare snapshot needs started_at and finished_at: {snapshot['job_id']}"
            )
        machine._report = machine._build_report()
    elif interrupted:
        if not machine._started:
            machine.start()  # it never got going; still a job the daemon dropped
        machine.handle(Interrupted())
    return machine
