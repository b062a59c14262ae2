"""Errors as each client's API shapes them: ltcai's + OpenAI's object, or Ollama's ``{"error": …}``.

Every route answers an :class:`LtcaiError` with its status and code; a bug is logged
with its traceback and reaches the client only as ``internal_error``. A route family
picks the body's shape (:data:`ErrorShape`); ltcai's ``code`` and ``hint`` are in both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..errors import LtcaiError

__all__ = ["ErrorShape", "error_body", "error_response", "exception_handlers", "ndjson_stream", "ollama_error_body"]

NDJSON = "application/x-ndjson"

log = structlog.get_logger(__name__)

# (code, message, hint, status, **extra) -> the JSON body
ErrorShape = Callable[..., dict[str, Any]]

_OPENAI_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}


def error_body(code: str, message: str, hint: str | None, status: int, **extra: Any) -> dict[str, Any]:
    """The control API's and /v1's shape: ours (code, message, hint) and OpenAI's (type, param)."""
    kind = _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"code": code, "message": message, "hint": hint, "type": kind, "param": None, **extra}}


def ollama_error_body(code: str, message: str, hint: str | None, status: int = 0, **extra: Any) -> dict[str, Any]:
    """Ollama's shape (docs/api.md): the message as ``error``; ltcai's code and hint beside it."""
    return {"error": message, "code": code, "hint": hint, **extra}


def error_response(error: LtcaiError, shape: ErrorShape = error_body) -> JSONResponse:
    extra = {k: v for k, v in error.to_dict().items() if k not in ("code", "message", "hint")}
    body = shape(code=error.code, message=error.message, hint=error.hint, status=error.http_status, **extra)
    retry_after = getattr(error, "retry_after_s", None)  # TooBusy (429): when to come back
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(body, status_code=error.http_status, headers=headers)


def exception_handlers(shape: ErrorShape = error_body, help_hint: str = "see `ltcai --help`") -> dict[Any, Any]:
    async def on_ltcai_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LtcaiError)
        return error_response(exc, shape)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {404: f"no such endpoint: {request.method} {request.url.path}"}.get(exc.status_code, exc.detail)
        body = shape(code=code, message=message, hint=help_hint, status=exc.status_code)
        return JSONResponse(body, status_code=exc.status_code)

    async def on_bug(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error in the API", path=request.url.path)
        body = shape(
            code="internal_error",
            message="the daemon hit a bug handling this request",
            hint="the daemon log has the details",
            status=500,
        )
        return JSONResponse(body, status_code=500)

    return {LtcaiError: on_ltcai_error, HTTPException: on_http_error, Exception: on_bug}


def ndjson_stream(
    events: AsyncIterator[dict[str, Any]], error_line: Callable[[LtcaiError], dict[str, Any]]
) -> StreamingResponse:
    """One JSON object a line. Once streaming, the headers are gone: an error travels as
    the stream's last line, shaped by ``error_line``."""

    async def lines() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                # One line per token on a chat stream: orjson's speed; int keys as json.dumps has them.
                yield orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS) + b"\n"
        except LtcaiError as exc:
            yield orjson.dumps(error_line(exc), option=orjson.OPT_NON_STR_KEYS) + b"\n"

    return StreamingResponse(lines(), media_type=NDJSON)
