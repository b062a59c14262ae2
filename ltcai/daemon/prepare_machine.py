"""The prepare job as a state machine with no I/O: everything that affects it lives here.

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
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any, Final

from ltcai.daemon.report import (
    PrepareReport,
    ReportStatus,
    SmokeStatus,
    SmokeTest,
    StageLog,
    StructuredError,
)
from ltcai.errors import IllegalTransition, LtcaiError

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


class PrepareState(Enum):
    RESOLVING = "resolving"  # turning the requested id into one identity (SPEC §5)
    ENGINE_CHECK = "engine_check"  # is the engine installed and reachable?
    ENGINE_INSTALL = "engine_install"  # installing the engine, or skipped: already there
    DOWNLOADING = "downloading"  # fetching weights, or skipped: cached / remote engine
    SERVER_STARTING = "server_starting"  # spawning the engine server until it is bound
    MODEL_SERVING = "model_serving"  # the server answers and offers this model
    MODEL_LOADING = "model_loading"  # the model is loaded and warmed up
    SMOKE_TEST = "smoke_test"  # one real chat, its answer classified (SPEC §4)
    READY = "ready"  # smoke test ok: chat-ready; terminal
    DEGRADED = "degraded"  # smoke test degraded: chat-ready with known flaws; terminal
    FAILED = "failed"  # a step or the smoke test failed; terminal
    CANCELLED = "cancelled"  # the user cancelled; terminal
    INTERRUPTED = "interrupted"  # the daemon stopped while the job ran (set on restore); terminal

    @property
    def is_terminal(self) -> bool:
        return not TRANSITIONS[self]

    @property
    def ready_to_chat(self) -> bool:
        # Download success is not chat-ready: only a smoke test that passed, or passed with flaws.
        return self in _CHAT_READY


_S = PrepareState
_ABORTS: Final = frozenset({_S.FAILED, _S.CANCELLED, _S.INTERRUPTED})

TRANSITIONS: Final[Mapping[PrepareState, frozenset[PrepareState]]] = MappingProxyType(
    {
        _S.RESOLVING: frozenset({_S.ENGINE_CHECK}) | _ABORTS,
        _S.ENGINE_CHECK: frozenset({_S.ENGINE_INSTALL}) | _ABORTS,
        _S.ENGINE_INSTALL: frozenset({_S.DOWNLOADING}) | _ABORTS,
        _S.DOWNLOADING: frozenset({_S.SERVER_STARTING}) | _ABORTS,
        _S.SERVER_STARTING: frozenset({_S.MODEL_SERVING}) | _ABORTS,
        _S.MODEL_SERVING: frozenset({_S.MODEL_LOADING}) | _ABORTS,
        _S.MODEL_LOADING: frozenset({_S.SMOKE_TEST}) | _ABORTS,
        _S.SMOKE_TEST: frozenset({_S.READY, _S.DEGRADED}) | _ABORTS,  # FAILED is among the aborts
        _S.READY: frozenset(),
        _S.DEGRADED: frozenset(),
        _S.FAILED: frozenset(),
        _S.CANCELLED: frozenset(),
        _S.INTERRUPTED: frozenset(),
    }
)

_CHAT_READY: Final = frozenset({_S.READY, _S.DEGRADED})
_STATUS: Final[Mapping[PrepareState, ReportStatus]] = MappingProxyType(
    {
        _S.READY: "ok",
        _S.DEGRADED: "degraded",
        _S.FAILED: "failed",
        _S.CANCELLED: "cancelled",
        _S.INTERRUPTED: "interrupted",
    }
)
_SMOKE_OUTCOME: Final[Mapping[str, PrepareState]] = MappingProxyType(
    {"ok": _S.READY, "degraded": _S.DEGRADED, "failed": _S.FAILED}
)


def _next_step(state: PrepareState) -> PrepareState | None:
    # Read off the table so the order of the chain is written down exactly once.
    onward = TRANSITIONS[state] - _ABORTS
    return next(iter(onward)) if len(onward) == 1 else None


def _chain() -> tuple[PrepareState, ...]:
    steps = [_S.RESOLVING]
    while (following := _next_step(steps[-1])) is not None:
        steps.append(following)
    return tuple(steps)


STEPS: Final[tuple[PrepareState, ...]] = _chain()  # RESOLVING … SMOKE_TEST, in order

SNAPSHOT_VERSION: Final = 1

# Step extras that feed the report, with the type each must have. Anything else in an
# extra only goes to the stage log.
_REPORT_EXTRAS: Final[Mapping[str, tuple[type, bool]]] = MappingProxyType(
    {  # key: (type, may be None)
        "resolution": (dict, True),
        "current": (str, True),
        "downloaded": (bool, False),
        "loaded": (bool, False),
        "install_result": (dict, True),
        "download_result": (dict, True),
    }
)

_SMOKE_FAILED_HINT: Final = (
    "the model loads but does not chat cleanly; "
    "see smoke_test.answer, or try another engine or quantisation"
)
_INTERRUPTED_HINT: Final = "run prepare again"


# --- events: what the runner observed ------------------------------------------------


def _check_extra(extra: Mapping[str, Any]) -> None:
    for key, (kind, nullable) in _REPORT_EXTRAS.items():
        if key not in extra:
            continue
        value = extra[key]
        if (value is None and not nullable) or (value is not None and not isinstance(value, kind)):
            expected = f"{kind.__name__} or None" if nullable else kind.__name__
            raise TypeError(f"step extra {key!r} must be {expected}, not {value!r}")


@dataclass(frozen=True)
class StepDone:
    """The runner finished the work of ``state`` (or found nothing to do: ``skipped``).

    ``extra`` is JSON-able and goes to the stage log; its keys ``resolution``, ``current``,
    ``downloaded``, ``loaded``, ``install_result``, ``download_result`` also set the
    report's fields. Without them, a DOWNLOADING not skipped means ``downloaded`` and a
    MODEL_LOADING not skipped means ``loaded``; a skipped step says so in ``extra``
    (e.g. ``{"downloaded": True}`` when the weights were already cached).
    """

    state: PrepareState
    message: str
    skipped: bool = False
    extra: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.state, PrepareState):
            raise TypeError(f"StepDone.state must be a PrepareState, not {self.state!r}")
        if self.extra is not None:
            _check_extra(self.extra)
            # Copied so the runner reusing its dict cannot rewrite history afterwards.
            object.__setattr__(self, "extra", dict(self.extra))


@dataclass(frozen=True)
class SmokeDone:
    """The smoke chat ran and its answer was classified (SPEC §4); ends the job."""

    status: SmokeStatus
    reason: str
    answer: str
    prompt: str
    seconds: float

    def __post_init__(self) -> None:
        if self.status not in _SMOKE_OUTCOME:
            raise ValueError(
                f"SmokeDone.status must be one of {sorted(_SMOKE_OUTCOME)}, not {self.status!r}"
            )


@dataclass(frozen=True)
class StepFailed:
    """The work of ``state`` failed; the job ends FAILED with this as its error."""

    state: PrepareState
    code: str
    message: str
    hint: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.state, PrepareState):
            raise TypeError(f"StepFailed.state must be a PrepareState, not {self.state!r}")

    @classmethod
    def from_error(cls, state: PrepareState, error: LtcaiError) -> StepFailed:
        return cls(state=state, code=error.code, message=error.message, hint=error.hint)


@dataclass(frozen=True)
class Cancel:
    """The user cancelled; the runner has already stopped the running step."""

    reason: str = "cancelled by the user"


@dataclass(frozen=True)
class Interrupted:
    """The daemon stopped while the job ran; sent by ``restore``, not by a live runner."""

    reason: str = "the daemon stopped while the job ran"


Event = StepDone | SmokeDone | StepFailed | Cancel | Interrupted


def _describe(event: Event | None) -> str:
    # Short enough for a log line: a StepDone's extra may hold a whole download report.
    match event:
        case StepDone(state=state, skipped=skipped):
            return f"StepDone({state.value}{', skipped' if skipped else ''})"
        case SmokeDone(status=status):
            return f"SmokeDone({status})"
        case StepFailed(state=state, code=code):
            return f"StepFailed({state.value}, {code})"
        case None:
            return "start()"
        case _:
            return type(event).__name__


# --- actions: what the runner must do -------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """One state change, for the runner to log and publish to the job's subscribers."""

    job_id: str
    source: PrepareState | None  # None for the job's first state
    target: PrepareState
    event: Event | None  # None for start()
    message: str
    time: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "event": None if self.event is None else type(self.event).__name__,
            "from": None if self.source is None else self.source.value,
            "state": self.target.value,
            "message": self.message,
            "time": self.time,
        }


@dataclass(frozen=True)
class RunStep:
    """Do the I/O of ``state``, then send StepDone/StepFailed (SmokeDone for SMOKE_TEST)."""

    state: PrepareState
    transition: Transition


@dataclass(frozen=True)
class Finish:
    """The job has ended in ``state``; ``transition`` is None for a repeated Cancel."""

    state: PrepareState
    report: PrepareReport
    transition: Transition | None


Action = RunStep | Finish


# --- the table's enforcement ----------------------------------------------------------


def check_transition(source: PrepareState, target: PrepareState, *, story: str = "") -> None:
    """Raise ``IllegalTransition`` unless the table allows ``source -> target``.

    The machine routes every state change through here, so the table is the only
    authority; ``story`` (job, event, history) makes the error debuggable from a log.
    """
    if target not in TRANSITIONS[source]:
        allowed = (
            ", ".join(sorted(s.value for s in TRANSITIONS[source])) or "nothing: it is terminal"
        )
        raise IllegalTransition(
            f"illegal transition {source.value} -> {target.value} (allowed: {allowed}){story}",
            hint="this is a bug in ltcai; please report it with the job's stage logs",
        )


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
            raise IllegalTransition(f"{_describe(event)} before start(){self._story(event)}")
        if self._state.is_terminal:
            if isinstance(event, Cancel) and self._report is not None:
                return Finish(self._state, self._report, None)
            target = _intended_target(event)
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
        return f"; {job} in {self._state.value}, event {_describe(event)}, history: {path}"

    def _target(self, event: Event) -> PrepareState:
        concerned = _concerned_state(event, self._state)
        if concerned is not self._state:
            mismatch = f"is for {concerned.value} but the job is in {self._state.value}"
            raise IllegalTransition(f"{_describe(event)} {mismatch}{self._story(event)}")
        target = _intended_target(event)
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
                return self._abort(target, event, event.reason, "cancelled", None, now)
            case Interrupted():
                hint = _INTERRUPTED_HINT
                return self._abort(target, event, event.reason, "interrupted", hint, now)
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
        for key in _REPORT_EXTRAS:
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
        self._log(
            _S.SMOKE_TEST,
            f"smoke test {event.status}: {event.reason}",
            now,
            {"smoke_test": self._smoke.to_dict()},
        )
        if target is _S.READY:
            message = f"{self.model} is ready to chat on {self.engine}"
        elif target is _S.DEGRADED:
            message = f"{self.model} chats on {self.engine}, with problems: {event.reason}"
        else:
            message = f"smoke test failed: {event.reason}"
            self._error = StructuredError(
                "smoke_test_failed", message, _S.SMOKE_TEST.value, _SMOKE_FAILED_HINT
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
        return PrepareReport(
            job_id=self.job_id,
            engine=self.engine,
            model=self.model,
            status=_STATUS[self._state],
            state=self._state.value,
            resolution=self._fields["resolution"],
            current=self._fields["current"],
            message=self._message,
            downloaded=self._fields["downloaded"],
            loaded=self._fields["loaded"],
            ready_to_chat=self._state.ready_to_chat,
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


def _concerned_state(event: Event, current: PrepareState) -> PrepareState:
    # The state an event claims to be about; Cancel and Interrupted concern whatever is running.
    match event:
        case StepDone(state=state) | StepFailed(state=state):
            return state
        case SmokeDone():
            return _S.SMOKE_TEST
    return current


_SNAPSHOT_KEYS: Final[tuple[str, ...]] = (
    "version",
    "job_id",
    "engine",
    "model",
    "state",
    "started",
    "history",
    "message",
    *_REPORT_EXTRAS,
    "smoke_test",
    "error",
    "stage_logs",
    "started_at",
    "finished_at",
)


def _intended_target(event: Event) -> PrepareState | None:
    # Where the event leads, whatever the current state; None for a StepDone of a state
    # that has no single next step (SMOKE_TEST, the terminal states).
    match event:
        case StepDone(state=state):
            return _next_step(state)
        case SmokeDone(status=status):
            return _SMOKE_OUTCOME[status]
        case StepFailed():
            return _S.FAILED
        case Cancel():
            return _S.CANCELLED
        case Interrupted():
            return _S.INTERRUPTED
    raise TypeError(f"not a prepare event: {event!r}")


def _parse_history(values: Sequence[str], state: PrepareState) -> list[PrepareState]:
    history = [PrepareState(value) for value in values]
    if not history or history[0] is not _S.RESOLVING or history[-1] is not state:
        raise ValueError(
            f"snapshot history must run from resolving to {state.value}: {list(values)}"
        )
    for source, target in itertools.pairwise(history):
        if target not in TRANSITIONS[source]:
            raise ValueError(
                f"snapshot history has an illegal step {source.value} -> {target.value}"
            )
    return history


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
    machine._history = _parse_history(snapshot["history"], state)
    machine._started = bool(snapshot["started"])
    machine._message = snapshot["message"]
    machine._fields = {key: copy.deepcopy(snapshot[key]) for key in _REPORT_EXTRAS}
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
