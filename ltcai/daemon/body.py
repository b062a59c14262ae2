"""Reading and checking JSON request bodies: size-limited, typed, with clear 4xx errors."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from ..errors import InvalidRequest

__all__ = [
    "BodyTooLarge",
    "generation_overrides",
    "optional_bool",
    "optional_number",
    "optional_str",
    "optional_str_list",
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


def _type_error(name: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(f"{name!r} must be {expected}, not {json.dumps(value)[:60]}", code="invalid_field")


def required_str(body: dict[str, Any], name: str) -> str:
    if name not in body:
        raise InvalidRequest(f"{name!r} is required", code="missing_field")
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


def optional_number(body: dict[str, Any], name: str, *, integer: bool = False) -> float | int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise _type_error(name, "an integer" if integer else "a number", value)
    return value


def optional_str_list(body: dict[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _type_error(name, "a string or a list of strings", value)
    return value


def generation_overrides(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling fields a chat request may set, checked; absent ones are left out so
    the profile's values stand (SPEC.md §7: a request's non-null overrides win)."""
    max_tokens = optional_number(body, "max_completion_tokens", integer=True)  # OpenAI's newer name
    if max_tokens is None:
        max_tokens = optional_number(body, "max_tokens", integer=True)
    overrides = {
        "temperature": optional_number(body, "temperature"),
        "top_p": optional_number(body, "top_p"),
        "max_tokens": max_tokens,
        "stop": optional_str_list(body, "stop"),
        "seed": optional_number(body, "seed", integer=True),
    }
    return {k: v for k, v in overrides.items() if v is not None}
