"""Every error ltcai reports to a user, drawn as one hierarchy.

    LtcaiError                      code, message, hint; never shows a traceback
    ├── InvalidRequest              the caller sent something we cannot act on (4xx)
    │   ├── InvalidModelId          an id broke a validation rule (named in the message)
    │   ├── FieldError              a request field missing, malformed, unknown or not taken
    │   └── UnknownEngine           an engine name nobody registered
    ├── NotFound                    a job, model or profile that does not exist (404)
    ├── Conflict                    the request clashes with current state (409)
    ├── IllegalTransition           the prepare state machine was asked to do the impossible
    ├── PluginError                 a plugin cannot be loaded (the daemon refuses to start)
    ├── EngineError                 an engine step failed (check/install/download/serve/load/chat)
    │   ├── EngineUnavailable       the engine is not installed or not reachable
    │   ├── DownloadError           fetching or verifying weights failed
    │   ├── ServerStartError        the engine server did not come up
    │   └── ChatError               the engine failed to answer
    └── DaemonNotRunning            the CLI found no daemon on the socket

Each error has a stable machine-readable ``code``, a ``message`` a user can act on and an
optional ``hint`` (what to do next). ``to_dict`` is the JSON body of API errors.

Every code is declared once, in ``ErrorCode``; a test reads ltcai's source and fails on a
code that is raised but not declared, or declared but never used. Near-duplicates were
merged into the spelling docs and tests used (0.4): ``unreachable`` → ``engine_unreachable``,
``model_file_not_found`` → ``file_not_found``, ``not_supported`` → ``unsupported``,
``unauthorized`` → ``auth_failed``, ``engine_missing`` → ``engine_unavailable``,
``protocol_error`` → ``engine_bad_answer``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

__all__ = [
    "ChatError",
    "Conflict",
    "DaemonNotRunning",
    "DownloadError",
    "EngineError",
    "ErrorCode",
    "EngineUnavailable",
    "FieldError",
    "IllegalTransition",
    "InvalidModelId",
    "InvalidRequest",
    "LtcaiError",
    "NotFound",
    "PluginError",
    "ServerStartError",
    "UnknownEngine",
]


class ErrorCode(StrEnum):
    """Every ``code`` an error (or an API error body) may carry; the values are the wire form."""

    # -- the request
    ERROR = "error"  # LtcaiError's default; every raise site should name a better one
    INVALID_REQUEST = "invalid_request"
    INVALID_JSON = "invalid_json"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"  # a field of the wrong type or shape
    UNKNOWN_FIELD = "unknown_field"  # a field no API of ltcai knows
    UNSUPPORTED_FIELD = "unsupported_field"  # a known field the chosen engine does not take
    CAPABILITY_FAILED = "capability_failed"  # the model's probe for what the request needs failed
    CONTEXT_EXCEEDED = "context_exceeded"  # the prompt is longer than the model's context per request
    MODEL_CANNOT_SEE = "model_cannot_see"  # image parts for a model without vision
    MODEL_CANNOT_EMBED = "model_cannot_embed"  # embeddings asked of a model or engine that has none
    BODY_TOO_LARGE = "body_too_large"
    BAD_HTTP_REQUEST = "bad_http_request"
    INVALID_API_KEY = "invalid_api_key"
    NOT_FOUND = "not_found"  # no such endpoint, or the base of the *_not_found codes
    METHOD_NOT_ALLOWED = "method_not_allowed"
    HTTP_ERROR = "http_error"
    UNSUPPORTED = "unsupported"  # a feature or form this route or source does not offer
    INVALID_MODEL_ID = "invalid_model_id"
    INVALID_REFERENCE = "invalid_reference"
    INVALID_PROFILE_OVERRIDE = "invalid_profile_override"
    UNKNOWN_ENGINE = "unknown_engine"
    # -- the daemon's own state
    CONFLICT = "conflict"
    JOB_NOT_FOUND = "job_not_found"
    MODEL_NOT_LOADED = "model_not_loaded"
    MODEL_NOT_READY = "model_not_ready"
    TOO_BUSY = "too_busy"  # the model's slots and queue are full (429, Retry-After)
    CLIENT_GONE = "client_gone"  # the client hung up while its request waited (499)
    PROFILE_NOT_FOUND = "profile_not_found"
    ILLEGAL_TRANSITION = "illegal_transition"
    INTERNAL_ERROR = "internal_error"
    INVALID_CONFIG = "invalid_config"
    PLUGIN_ERROR = "plugin_error"
    DAEMON_NOT_RUNNING = "daemon_not_running"
    DAEMON_ALREADY_RUNNING = "daemon_already_running"
    REMOTE_BIND_REFUSED = "remote_bind_refused"
    # -- a prepare job's end (StructuredError codes)
    STALLED = "stalled"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    SMOKE_TEST_FAILED = "smoke_test_failed"
    PREPARE_FAILED = "prepare_failed"
    # -- engines
    ENGINE_ERROR = "engine_error"
    ENGINE_UNAVAILABLE = "engine_unavailable"
    ENGINE_UNREACHABLE = "engine_unreachable"
    ENGINE_BAD_ANSWER = "engine_bad_answer"  # the engine answered something that is not its protocol
    ENGINE_INSTALL_FAILED = "engine_install_failed"
    ENDPOINT_ERROR = "endpoint_error"  # a remote endpoint answered with an HTTP error
    AUTH_FAILED = "auth_failed"
    SERVER_START_FAILED = "server_start_failed"
    NOT_ENOUGH_MEMORY = "not_enough_memory"
    LMS_TIMEOUT = "lms_timeout"
    MODEL_LOAD_FAILED = "model_load_failed"
    UNLOAD_FAILED = "unload_failed"
    CHAT_FAILED = "chat_failed"
    # -- model files and downloads
    DOWNLOAD_FAILED = "download_failed"
    DOWNLOAD_IN_PROGRESS = "download_in_progress"
    NETWORK_ERROR = "network_error"
    OFFLINE = "offline"
    REPO_NOT_FOUND = "repo_not_found"
    MODEL_NOT_FOUND = "model_not_found"
    FILE_NOT_FOUND = "file_not_found"
    AMBIGUOUS_FILE = "ambiguous_file"
    INVALID_FILE_NAME = "invalid_file_name"
    INVALID_MODEL_FILE = "invalid_model_file"
    SIZE_MISMATCH = "size_mismatch"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    DISK_FULL = "disk_full"
    IO_ERROR = "io_error"
    ALREADY_EXISTS = "already_exists"
    IMPORT_FAILED = "import_failed"
    UNSUPPORTED_MODEL = "unsupported_model"
    UNSUPPORTED_QUANTIZATION = "unsupported_quantization"
    MODEL_PACKAGE_MISSING = "model_package_missing"
    MODEL_PACKAGE_BROKEN = "model_package_broken"
    # -- the command line
    NO_LOG = "no_log"
    STOP_TIMEOUT = "stop_timeout"  # `ltcai stop`: the daemon still stops after the wait
    SERVICE_INSTALL_FAILED = "service_install_failed"
    SERVICE_COMMAND_FAILED = "service_command_failed"
    SERVICE_MANAGER_UNAVAILABLE = "service_manager_unavailable"


class LtcaiError(Exception):
    """Base of every error a user may see."""

    code: ClassVar[str] = ErrorCode.ERROR
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code  # type: ignore[misc]  # instance override of the class default

    def to_dict(self) -> dict[str, Any]:
        return {"code": str(self.code), "message": self.message, "hint": self.hint}

    def __str__(self) -> str:
        return self.message


class InvalidRequest(LtcaiError):
    code = ErrorCode.INVALID_REQUEST
    http_status = 400


class InvalidModelId(InvalidRequest):
    """A model id broke a validation rule; ``rule`` names it (e.g. ``path_traversal``)."""

    code = ErrorCode.INVALID_MODEL_ID

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
    code = ErrorCode.UNKNOWN_ENGINE


class NotFound(LtcaiError):
    code = ErrorCode.NOT_FOUND
    http_status = 404


class Conflict(LtcaiError):
    code = ErrorCode.CONFLICT
    http_status = 409


class IllegalTransition(LtcaiError):
    code = ErrorCode.ILLEGAL_TRANSITION
    http_status = 500


class PluginError(LtcaiError):
    """A plugin cannot be loaded: it fails to import, or two plugins register one engine.

    Raised while the daemon starts (``ltcai serve`` refuses to start, naming the plugins),
    never in answer to a request: it is the installation's fault, not the client's.
    """

    code = ErrorCode.PLUGIN_ERROR
    http_status = 500


class EngineError(LtcaiError):
    code = ErrorCode.ENGINE_ERROR
    http_status = 502


class EngineUnavailable(EngineError):
    code = ErrorCode.ENGINE_UNAVAILABLE
    http_status = 503


class DownloadError(EngineError):
    code = ErrorCode.DOWNLOAD_FAILED


class ServerStartError(EngineError):
    code = ErrorCode.SERVER_START_FAILED


class ChatError(EngineError):
    code = ErrorCode.CHAT_FAILED


class DaemonNotRunning(LtcaiError):
    code = ErrorCode.DAEMON_NOT_RUNNING
    http_status = 503
