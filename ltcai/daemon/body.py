"""Reading and checking JSON request bodies: size-limited, typed, with clear 4xx errors."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from ..errors import FieldError, InvalidRequest

__all__ = [
    "BodyTooLarge",
    "optional_bool",
    "optional_str",
    "read_json_object",
    "required_str",
]


class BodyTooLarge(InvalidRequest):
    code = "body_too_large"
    http_status = 413


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; never reads more than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidRequest("the request needs a JSON object body", code="invalid_json")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise InvalidRequest(f"the request body must be a JSON object, not {type(body).__name__}", code="invalid_json")
    return body


def _type_error(name: str, expected: str, value: Any) -> FieldError:
    return FieldError(f"{name!r} must be {expected}, not {json.dumps(value)[:60]}", param=name)


def required_str(body: dict[str, Any], name: str) -> str:
    if name not in body:
        raise FieldError(f"{name!r} is required", param=name, code="missing_field")
    value = body[name]
    if not isinstance(value, str):
        raise _type_error(name, "a string", value)
    return value


def optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _type_error(name, "a string", value)
    return value


def optional_bool(body: dict[str, Any], name: str, *, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _type_error(name, "true or false", value)
    return value
