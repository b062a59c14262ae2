"""The OpenAI-compatible surface: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

Any OpenAI client (the ``openai`` SDK, editors, ``llm``, curl) gets the compat fast path:
profile parameters, post-processing that strips leaked markers (also when a marker is
split across streamed chunks), and the recovery retry. A model that is not ready is
prepared first (just in time); nothing is streamed until it is ready, and a failed
prepare is an error naming the reason. Errors use OpenAI's shape, plus our ``hint``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..compat import Resolution, generation_params
from ..core import resolve_with_settings
from ..engines import openai_client
from ..engines.base import ChatRequest
from ..errors import Conflict, InvalidRequest, LtcaiError
from . import chat
from .body import generation_overrides, optional_bool, read_json_object, required_str
from .models import LoadedModel
from .prepare_runner import run_prepare
from .services import Services

__all__ = ["openai_routes"]


async def _ready_model(services: Services, model: str) -> tuple[Resolution, LoadedModel]:
    """The served model for ``model``, preparing it first if it is not ready."""
    resolution = resolve_with_settings(services.settings, services.plugins, model, None)
    loaded = services.models.get(resolution.engine, resolution.resolved_model)
    if loaded is not None and loaded.ready:
        return resolution, loaded
    job, _created = services.jobs.start(resolution, lambda j: run_prepare(services, j))
    await job.done.wait()
    report = job.machine.report
    loaded = services.models.get(resolution.engine, resolution.resolved_model)
    if report is None or not report.ready_to_chat or loaded is None:
        reason = report.message if report else "the prepare job did not finish"
        raise Conflict(
            f"{model} could not be made ready: {reason}",
            hint=f"see `ltcai jobs {job.id}` for the full report",
            code="model_not_ready",
        )
    return resolution, loaded


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", code="invalid_field")
    shaped = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user", "assistant"):
            raise InvalidRequest("each message needs a role of system, developer, user or assistant", code="invalid_field")
        content = message.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise InvalidRequest("message content must be a string or text parts", code="invalid_field")
        role = "system" if message["role"] == "developer" else message["role"]
        shaped.append({"role": role, "content": content})
    return shaped


def _sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return b"data: " + payload.encode() + b"\n\n"


def openai_routes(services: Services) -> list[Route]:
    limit = services.settings.max_body_bytes

    async def list_models(request: Request) -> Response:
        data = [
            {
                "id": m.resolution.input_id,
                "object": "model",
                "created": int(m.loaded_at),
                "owned_by": m.resolution.engine,
                "ltcai": {"resolved_model": m.resolution.resolved_model, "status": m.status},
            }
            for m in services.models.all()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(request: Request) -> Response:
        body = await read_json_object(request, limit)
        model = required_str(body, "model")
        messages = _messages(body)
        overrides = generation_overrides(body)
        stream = optional_bool(body, "stream", default=False)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) if isinstance(body.get("stream_options"), dict) else False
        _resolution, loaded = await _ready_model(services, model)
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        if not stream:
            answer = await chat.chat_once(services, loaded, model, messages, overrides)
            message: dict[str, Any] = {"role": "assistant", "content": answer.content}
            if answer.reasoning:
                message["reasoning_content"] = answer.reasoning
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": answer.finish_reason or "stop"}],
                    "usage": answer.usage,
                }
            )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        async def events() -> AsyncIterator[bytes]:
            yield _sse(chunk({"role": "assistant", "content": ""}))
            try:
                async for delta in chat.chat_stream(services, loaded, model, messages, overrides):
                    if "content" in delta:
                        yield _sse(chunk({"content": delta["content"]}))
                    elif "reasoning" in delta:
                        yield _sse(chunk({"reasoning_content": delta["reasoning"]}))
                    elif "finish_reason" in delta:
                        yield _sse(chunk({}, delta["finish_reason"]))
            except LtcaiError as exc:
                yield _sse({"error": {"message": exc.message, "type": "server_error", "code": exc.code, "hint": exc.hint}})
            if include_usage:
                yield _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": None})
            yield _sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    async def completions(request: Request) -> Response:
        body = await read_json_object(request, limit)
        model = required_str(body, "model")
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise InvalidRequest("'prompt' must be a string", code="invalid_field")
        if optional_bool(body, "stream", default=False):
            raise InvalidRequest(
                "streaming is not supported on /v1/completions", hint="use /v1/chat/completions to stream", code="unsupported"
            )
        _resolution, loaded = await _ready_model(services, model)
        params = generation_params(loaded.profile, generation_overrides(body))
        answer = await openai_client.text_completion(services.chat_http, loaded.served, ChatRequest([], params), prompt)
        text, _reasoning = chat.postprocess_text(services, loaded.profile, answer["text"])
        return JSONResponse(
            {
                "id": "cmpl-" + uuid.uuid4().hex[:24],
                "object": "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": answer.get("finish_reason") or "stop", "logprobs": None}],
                "usage": answer.get("usage"),
            }
        )

    return [
        Route("/v1/models", list_models),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ]
