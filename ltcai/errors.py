"""Every error ltcai reports to a user, drawn as one hierarchy.

    LtcaiError                      code, message, hint; never shows a traceback
    ├── InvalidRequest              the caller sent something we cannot act on (4xx)
    │   ├── InvalidModelId          an id broke a validation rule (named in the message)
    │   ├── FieldError              a request field missing, malformed, unknown or not taken
    │   └── UnknownEngine           an engine name nobody registered
    ├── NotFound                    a job, model or profile that does not exist (404)
    ├── Conflict                    the request clashes with current state (409)
    ├── IllegalTransition           the prepare state machine was asked to do the impossible
    ├── EngineError                 an engine step failed (check/install/download/serve/load/chat)
    │   ├── EngineUnavailable       the engine is not installed or not reachable
    │   ├── DownloadError           fetching or verifying weights failed
    │   ├── ServerStartError        the engine server did not come up
    │   └── ChatError               the engine failed to answer
    └── DaemonNotRunning            the CLI found no daemon on the socket

Each error has a stable machine-readable ``code``, a ``message`` a user can act on and an
optional ``hint`` (what to do next). ``to_dict`` is the JSON body of API errors.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ChatError",
    "Conflict",
    "DaemonNotRunning",
    "DownloadError",
    "EngineError",
    "EngineUnavailable",
    "FieldError",
    "IllegalTransition",
    "InvalidModelId",
    "InvalidRequest",
    "LtcaiError",
    "NotFound",
    "ServerStartError",
    "UnknownEngine",
]


class LtcaiError(Exception):
    """Base of every error a user may see."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code  # type: ignore[misc]  # instance override of the class default

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "hint": self.hint}

    def __str__(self) -> str:
        return self.message


class InvalidRequest(LtcaiError):
    code = "invalid_request"
    http_status = 400


class InvalidModelId(InvalidRequest):
    """A model id broke a validation rule; ``rule`` names it (e.g. ``path_traversal``)."""

    code = "invalid_model_id"

    def __init__(self, message: str, *, rule: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.rule = rule

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "rule": self.rule}


class FieldError(InvalidRequest):
    """A request field that is missing, malformed, unknown, or not taken by the engine;
    ``param`` names it as OpenAI's error object does (``messages[1].tool_call_id``)."""

    code = "invalid_field"

    def __init__(self, message: str, *, param: str, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, code=code, hint=hint)
        self.param = param

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "param": self.param}


class UnknownEngine(InvalidRequest):
    code = "unknown_engine"


class NotFound(LtcaiError):
    code = "not_found"
    http_status = 404


class Conflict(LtcaiError):
    code = "conflict"
    http_status = 409


class IllegalTransition(LtcaiError):
    code = "illegal_transition"
    http_status = 500


class EngineError(LtcaiError):
    code = "engine_error"
    http_status = 502


class EngineUnavailable(EngineError):
    code = "engine_unavailable"
    http_status = 503


class DownloadError(EngineError):
    code = "download_failed"


class ServerStartError(EngineError):
    code = "server_start_failed"


class ChatError(EngineError):
    code = "chat_failed"


class DaemonNotRunning(LtcaiError):
    code = "daemon_not_running"
    http_status = 503
