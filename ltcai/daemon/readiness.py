"""How chat-ready a prepared model is: one vocabulary for the machine, the registry and the report.

The prepare state machine alone decides it (its end state, see ``prepare_states.READINESS``);
the model registry (``LoadedModel.status``) and the report (``PrepareReport.status``) carry
the decision and never re-derive it. The values are the report's wire strings, which
stored reports and clients already read; ``ltcai ps`` shows a served model as ``label``
("ready" rather than "ok").
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["Readiness"]


class Readiness(StrEnum):
    READY = "ok"  # the smoke test passed: chat-ready
    DEGRADED = "degraded"  # the smoke test passed with known flaws: chat-ready
    FAILED = "failed"  # a step or the smoke test failed
    CANCELLED = "cancelled"  # the user cancelled the prepare
    INTERRUPTED = "interrupted"  # the daemon stopped while the prepare ran
    STOPPED = "stopped"  # was chat-ready; its engine process has exited since (registry only)

    @property
    def chat_ready(self) -> bool:
        # Download success is not chat-ready: only a smoke test that passed, or passed with flaws.
        return self in _CHAT_READY

    @property
    def label(self) -> str:
        """The word for a served model (``ltcai ps``, ``/models``): "ready" for READY."""
        return "ready" if self is Readiness.READY else self.value


_CHAT_READY: Final = frozenset({Readiness.READY, Readiness.DEGRADED})
