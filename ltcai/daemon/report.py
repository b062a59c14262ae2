"""The final report of a prepare job (SPEC.md §6) and its stable JSON form.

The report is what a client keeps: the CLI prints it, the API returns it, the store
persists it. Its JSON key set is therefore an API: ``REPORT_KEYS`` fixes it and a test
pins it, so a new field is a deliberate change and never an accident of refactoring.

States are stored as their JSON strings (``"ready"``) rather than ``PrepareState``
members: the report is the wire form, and keeping this module free of the state machine
lets the machine build reports without an import cycle. ``status`` is the machine's
decision as a ``Readiness`` (a str Enum: ``"ok"``, ``"degraded"``… on the wire).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from ltcai.errors import LtcaiError

from .readiness import Readiness

__all__ = [
    "REPORT_KEYS",
    "PrepareReport",
    "SmokeStatus",
    "SmokeTest",
    "StageLog",
    "StructuredError",
]

# The smoke classifier's words (compat's ``SmokeVerdict.status``), kept as it said them.
SmokeStatus = Literal["ok", "degraded", "failed"]

_SMOKE_STATUSES: Final = frozenset(get_args(SmokeStatus))
# How a prepare can end; STOPPED describes a served model later on, never a prepare.
_REPORT_STATUSES: Final = frozenset(Readiness) - {Readiness.STOPPED}

REPORT_KEYS: Final[tuple[str, ...]] = (
    "job_id",
    "engine",
    "model",
    "status",
    "state",
    "resolution",
    "current",
    "message",
    "downloaded",
    "loaded",
    "ready_to_chat",
    "compatibility_status",
    "smoke_test",
    "stage_logs",
    "error",
    "install_result",
    "download_result",
    "started_at",
    "finished_at",
    "duration_s",
)


def _require(data: Mapping[str, Any], keys: tuple[str, ...], what: str) -> None:
    # Unknown keys are ignored (a newer daemon may add some); missing ones are not, because
    # defaulting them would silently turn a truncated file into a plausible-looking report.
    missing = [key for key in keys if key not in data]
    if missing:
        raise ValueError(f"{what} is missing {', '.join(missing)}")


@dataclass(frozen=True)
class StructuredError:
    """Why a job did not reach a chat-ready state, and where it stopped."""

    code: str
    message: str
    state: str
    hint: str | None = None

    @classmethod
    def from_error(cls, error: LtcaiError, state: str) -> StructuredError:
        return cls(code=error.code, message=error.message, state=state, hint=error.hint)

    def to_dict(self) -> dict[str, Any]:
        return {"code": str(self.code), "message": self.message, "state": self.state, "hint": self.hint}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StructuredError:
        _require(data, ("code", "message", "state", "hint"), "error")
        return cls(
            code=data["code"], message=data["message"], state=data["state"], hint=data["hint"]
        )


@dataclass(frozen=True)
class SmokeTest:
    """What the smoke chat (SPEC.md §4) asked, got back, and how the answer was judged."""

    prompt: str
    answer: str
    status: SmokeStatus
    reason: str
    seconds: float

    def __post_init__(self) -> None:
        if self.status not in _SMOKE_STATUSES:
            raise ValueError(
                f"smoke status must be one of {sorted(_SMOKE_STATUSES)}, not {self.status!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "answer": self.answer,
            "status": self.status,
            "reason": self.reason,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SmokeTest:
        _require(data, ("prompt", "answer", "status", "reason", "seconds"), "smoke_test")
        return cls(
            prompt=data["prompt"],
            answer=data["answer"],
            status=data["status"],
            reason=data["reason"],
            seconds=data["seconds"],
        )


@dataclass(frozen=True)
class StageLog:
    """One line of a job's story: a step's outcome, or the terminal state it ended in."""

    state: str
    message: str
    time: float
    extra: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "message": self.message,
            "time": self.time,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageLog:
        _require(data, ("state", "message", "time", "extra"), "stage log")
        extra = data["extra"]
        return cls(
            state=data["state"],
            message=data["message"],
            time=data["time"],
            extra=None if extra is None else dict(extra),
        )


@dataclass(frozen=True)
class PrepareReport:
    """The outcome of one prepare job; field order is the JSON key order (``REPORT_KEYS``).

    ``ready_to_chat`` is stored rather than derived so a client need not know which states
    count: download success is not chat-ready, only a passed or degraded smoke test is.
    """

    job_id: str
    engine: str
    model: str
    status: Readiness
    state: str
    resolution: dict[str, Any] | None
    current: str | None
    message: str
    downloaded: bool
    loaded: bool
    ready_to_chat: bool
    compatibility_status: str
    smoke_test: SmokeTest | None
    stage_logs: tuple[StageLog, ...]
    error: StructuredError | None
    install_result: dict[str, Any] | None
    download_result: dict[str, Any] | None
    started_at: float
    finished_at: float
    duration_s: float

    def __post_init__(self) -> None:
        try:
            status: Readiness | None = Readiness(self.status)
        except ValueError:
            status = None
        if status not in _REPORT_STATUSES:
            allowed = sorted(s.value for s in _REPORT_STATUSES)
            raise ValueError(f"report status must be one of {allowed}, not {self.status!r}")
        # A stored report's string becomes the Enum, so no reader compares two vocabularies.
        object.__setattr__(self, "status", status)
        # A list from a caller would make the frozen report mutable through the back door.
        object.__setattr__(self, "stage_logs", tuple(self.stage_logs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "engine": self.engine,
            "model": self.model,
            "status": self.status.value,
            "state": self.state,
            "resolution": self.resolution,
            "current": self.current,
            "message": self.message,
            "downloaded": self.downloaded,
            "loaded": self.loaded,
            "ready_to_chat": self.ready_to_chat,
            "compatibility_status": self.compatibility_status,
            "smoke_test": None if self.smoke_test is None else self.smoke_test.to_dict(),
            "stage_logs": [log.to_dict() for log in self.stage_logs],
            "error": None if self.error is None else self.error.to_dict(),
            "install_result": self.install_result,
            "download_result": self.download_result,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrepareReport:
        """Read a report written by ``to_dict``; raises ``ValueError`` if a key is missing."""
        _require(data, REPORT_KEYS, "prepare report")
        smoke, error = data["smoke_test"], data["error"]
        return cls(
            job_id=data["job_id"],
            engine=data["engine"],
            model=data["model"],
            status=data["status"],
            state=data["state"],
            resolution=data["resolution"],
            current=data["current"],
            message=data["message"],
            downloaded=data["downloaded"],
            loaded=data["loaded"],
            ready_to_chat=data["ready_to_chat"],
            compatibility_status=data["compatibility_status"],
            smoke_test=None if smoke is None else SmokeTest.from_dict(smoke),
            stage_logs=tuple(StageLog.from_dict(log) for log in data["stage_logs"]),
            error=None if error is None else StructuredError.from_dict(error),
            install_result=data["install_result"],
            download_result=data["download_result"],
            started_at=data["started_at"],
            finished_at=data["finished_at"],
            duration_s=data["duration_s"],
        )
