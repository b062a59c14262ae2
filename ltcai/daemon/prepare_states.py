"""The prepare job's states and the one table of allowed transitions (DESIGN "State machine").

Everything that says which state may follow which lives in this module: the table, the
order of the chain read off it, how each end state reads as ``Readiness``, and which end
state a smoke verdict leads to. ``check_transition`` is the table's only enforcement; the
machine (``prepare_machine``) routes every state change through it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from enum import Enum
from types import MappingProxyType
from typing import Final

from ltcai.errors import IllegalTransition

from .readiness import Readiness

__all__ = [
    "ABORTS",
    "READINESS",
    "SMOKE_OUTCOME",
    "STEPS",
    "TRANSITIONS",
    "PrepareState",
    "check_transition",
    "next_step",
    "parse_history",
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
    def readiness(self) -> Readiness | None:
        """What this end state decides about the model; None while the job runs."""
        return READINESS.get(self)

    @property
    def ready_to_chat(self) -> bool:
        readiness = self.readiness
        return readiness is not None and readiness.chat_ready


_S = PrepareState
ABORTS: Final = frozenset({_S.FAILED, _S.CANCELLED, _S.INTERRUPTED})

TRANSITIONS: Final[Mapping[PrepareState, frozenset[PrepareState]]] = MappingProxyType(
    {
        _S.RESOLVING: frozenset({_S.ENGINE_CHECK}) | ABORTS,
        _S.ENGINE_CHECK: frozenset({_S.ENGINE_INSTALL}) | ABORTS,
        _S.ENGINE_INSTALL: frozenset({_S.DOWNLOADING}) | ABORTS,
        _S.DOWNLOADING: frozenset({_S.SERVER_STARTING}) | ABORTS,
        _S.SERVER_STARTING: frozenset({_S.MODEL_SERVING}) | ABORTS,
        _S.MODEL_SERVING: frozenset({_S.MODEL_LOADING}) | ABORTS,
        _S.MODEL_LOADING: frozenset({_S.SMOKE_TEST}) | ABORTS,
        _S.SMOKE_TEST: frozenset({_S.READY, _S.DEGRADED}) | ABORTS,  # FAILED is among the aborts
        _S.READY: frozenset(),
        _S.DEGRADED: frozenset(),
        _S.FAILED: frozenset(),
        _S.CANCELLED: frozenset(),
        _S.INTERRUPTED: frozenset(),
    }
)

# The decision each end state stands for: the registry and the report only carry it.
READINESS: Final[Mapping[PrepareState, Readiness]] = MappingProxyType(
    {
        _S.READY: Readiness.READY,
        _S.DEGRADED: Readiness.DEGRADED,
        _S.FAILED: Readiness.FAILED,
        _S.CANCELLED: Readiness.CANCELLED,
        _S.INTERRUPTED: Readiness.INTERRUPTED,
    }
)

# The one place the smoke classifier's vocabulary (compat's ``SmokeVerdict.status``)
# becomes a state of this machine.
SMOKE_OUTCOME: Final[Mapping[str, PrepareState]] = MappingProxyType(
    {"ok": _S.READY, "degraded": _S.DEGRADED, "failed": _S.FAILED}
)


def next_step(state: PrepareState) -> PrepareState | None:
    """The one state that follows ``state`` when its work succeeds; None where the outcome
    picks among several (SMOKE_TEST) or the state is terminal."""
    # Read off the table so the order of the chain is written down exactly once.
    onward = TRANSITIONS[state] - ABORTS
    return next(iter(onward)) if len(onward) == 1 else None


def _chain() -> tuple[PrepareState, ...]:
    steps = [_S.RESOLVING]
    while (following := next_step(steps[-1])) is not None:
        steps.append(following)
    return tuple(steps)


STEPS: Final[tuple[PrepareState, ...]] = _chain()  # RESOLVING … SMOKE_TEST, in order


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


def parse_history(values: Sequence[str], state: PrepareState) -> list[PrepareState]:
    """A stored history as states; ``ValueError`` unless the table allows every step of it."""
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
