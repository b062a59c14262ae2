"""What flows in and out of the prepare machine: events (what the runner observed) and
actions (what the runner must do next), each carrying the ``Transition`` it caused.

Plain frozen data checked on construction, so a malformed event fails where the runner
builds it rather than half-way through the machine's update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from ltcai.errors import LtcaiError

from .prepare_states import SMOKE_OUTCOME, PrepareState, next_step
from .readiness import Readiness
from .report import PrepareReport, SmokeStatus

__all__ = [
    "REPORT_EXTRAS",
    "Action",
    "Cancel",
    "Event",
    "Finish",
    "Interrupted",
    "RunStep",
    "SmokeDone",
    "StepDone",
    "StepFailed",
    "Transition",
    "concerned_state",
    "describe",
    "intended_target",
]

# Step extras that feed the report, with the type each must have. Anything else in an
# extra only goes to the stage log.
REPORT_EXTRAS: Final[Mapping[str, tuple[type, bool]]] = MappingProxyType(
    {  # key: (type, may be None)
        "resolution": (dict, True),
        "current": (str, True),
        "downloaded": (bool, False),
        "loaded": (bool, False),
        "install_result": (dict, True),
        "download_result": (dict, True),
    }
)


# --- events: what the runner observed ------------------------------------------------


def _check_extra(extra: Mapping[str, Any]) -> None:
    for key, (kind, nullable) in REPORT_EXTRAS.items():
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
    """The smoke chat ran and its answer was classified (SPEC §4), or an earlier verdict
    stands for it (``reused``); ends the job.

    ``status`` is the classifier's word (compat's ``SmokeVerdict.status``); the machine
    alone turns it into an end state (``prepare_states.SMOKE_OUTCOME``).
    """

    status: SmokeStatus
    reason: str
    answer: str
    prompt: str
    seconds: float
    # The capability verdicts measured with it (``probes``), for the report's stage log.
    capabilities: dict[str, Any] | None = None
    # Set when the chat was not repeated: an earlier verdict stands (``smoke_reuse``);
    # says which and why, and the stage log shows the step as skipped.
    reused: str | None = None

    def __post_init__(self) -> None:
        if self.status not in SMOKE_OUTCOME:
            raise ValueError(
                f"SmokeDone.status must be one of {sorted(SMOKE_OUTCOME)}, not {self.status!r}"
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


def describe(event: Event | None) -> str:
    """An event in a few words, short enough for a log line (a StepDone's extra may hold
    a whole download report)."""
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


def concerned_state(event: Event, current: PrepareState) -> PrepareState:
    """The state an event claims to be about; Cancel and Interrupted concern whatever runs."""
    match event:
        case StepDone(state=state) | StepFailed(state=state):
            return state
        case SmokeDone():
            return PrepareState.SMOKE_TEST
    return current


def intended_target(event: Event) -> PrepareState | None:
    """Where the event leads, whatever the current state; None for a StepDone of a state
    that has no single next step (SMOKE_TEST, the terminal states)."""
    match event:
        case StepDone(state=state):
            return next_step(state)
        case SmokeDone(status=status):
            return SMOKE_OUTCOME[status]
        case StepFailed():
            return PrepareState.FAILED
        case Cancel():
            return PrepareState.CANCELLED
        case Interrupted():
            return PrepareState.INTERRUPTED
    raise TypeError(f"not a prepare event: {event!r}")


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
    """The job has ended in ``state``; ``transition`` is None for a repeated Cancel.

    ``readiness`` is the machine's final decision: the runner registers a served model
    exactly when it is chat-ready, with this as its status.
    """

    state: PrepareState
    report: PrepareReport
    transition: Transition | None

    @property
    def readiness(self) -> Readiness:
        return self.report.status


Action = RunStep | Finish
