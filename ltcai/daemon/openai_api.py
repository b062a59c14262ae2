"""The OpenAI-compatible surface: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

Any OpenAI client (the ``openai`` SDK, editors, ``llm``, curl) gets the compat fast path:
profile parameters, post-processing that strips leaked markers (also when a marker is
split across streamed chunks), and the recovery retry. A model that is not ready is
prepared first (just in time), and the job's id comes back in the ``X-Ltcai-Prepare-Job``
header; a stream (chat or completion) answers at once and keeps the connection alive with SSE comments
(``: preparing …``) until the model is ready, and a failed prepare is an error naming the
reason (an error event on a stream). Errors use OpenAI's shape, plus our ``hint``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..compat import Profile
from ..engines import openai_client
from ..engines.base import ChatRequest
from ..errors import LtcaiError
from . import chat
from .capability_gate import check_call, measured_map
from .body import read_json_object
from .embeddings import counted_usage, encode_base64
from .engine_request import engine_params
from .in_flight import PREPARE_JOB_HEADER, ending_use, prepare_comments, take_keep_alive
from .lifecycle import Use
from .model_access import engine_of, preparing_in_use, ready_in_use
from .model_catalog import CatalogEntry, usable_models
from .models import LoadedModel
from .services import Services
from .validation import (
    check_engine_embeds,
    check_engine_takes,
    parse_chat,
    parse_completion,
    parse_embeddings,
)

__all__ = ["openai_routes"]


def _sse(data: dict[str, Any] | str) -> bytes:
    # orjson: one event per token, and json.dumps was a tenth of the daemon's CPU per token.
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    return b"data: " + payload + b"\n\n"


def _error_event(exc: LtcaiError) -> dict[str, Any]:
    """An error after the stream began: its last data event, in OpenAI's error shape."""
    return {"error": {"message": exc.message, "type": "server_error", "code": exc.code, "hint": exc.hint}}


def _cached_profile(services: Services, entry: CatalogEntry) -> Profile | None:
    return services.profiles.get(entry.extra.get("resolved_model", entry.id), entry.engine)


async def _started(deltas: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """``deltas`` with its first item already awaited. An error before the answer's first
    delta (a prompt longer than the context, an engine that is down) is raised here, while
    the route can still answer with a real HTTP status, as OpenAI's API does, rather than a
    200 whose stream carries the error. Costs no time: the first delta is awaited anyway."""
    try:
        first = await anext(deltas)
    except StopAsyncIteration:
        first = None

    async def rest() -> AsyncIterator[dict[str, Any]]:
        async with contextlib.aclosing(deltas):  # type: ignore[type-var]
            if first is not None:
                yield first
                async for delta in deltas:
                    yield delta

    return rest()


async def _stream_after_prepare(
    services: Services,
    request: Request,
    model: str,
    keep_alive: float | None,
    answer: Callable[[LoadedModel, Use], AsyncIterator[bytes]],
    check: Callable[[LoadedModel], None] | None = None,
) -> Response:
    """Just in time, streamed: answer at once (the job id in a header), keep the connection
    alive with SSE comments while the model is prepared, then stream ``answer``; a failed
    prepare is the stream's error event."""
    waiting = await preparing_in_use(services, request, model, keep_alive)

    async def after_prepare() -> AsyncIterator[bytes]:
        async for comment in prepare_comments(waiting.job):
            yield comment
        try:
            loaded = await waiting.ready(check)
        except LtcaiError as exc:
            yield _sse(_error_event(exc))
            yield _sse("[DONE]")
            return
        async for event in answer(loaded, waiting.use):
            yield event

    response = StreamingResponse(after_prepare(), media_type="text/event-stream", headers={PREPARE_JOB_HEADER: waiting.job.id})
    return ending_use(response, waiting.use)


def openai_routes(services: Services) -> list[Route]:
    limit = services.settings.max_body_bytes

    async def list_models(request: Request) -> Response:
        data = [
            {
                "id": entry.id,
                "object": "model",
                "created": int(entry.modified),
                "owned_by": entry.engine,
                "capabilities": measured_map(_cached_profile(services, entry)),  # as measured
                "ltcai": {
                    "engine": entry.engine,
                    "loaded": entry.loaded,
                    "status": entry.status,
                    "source": entry.source,
                    "path": entry.path,
                    "size": entry.size,
                    "capabilities": list(entry.capabilities),
                    **entry.extra,
                },
            }
            for entry in await usable_models(services)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(request: Request) -> Response:
        body, keep_alive = take_keep_alive(await read_json_object(request, limit))
        call = parse_chat(body)
        engine, found = engine_of(services, call.model)
        # Refused before a just-in-time prepare: no model is loaded for a request that cannot run.
        check_engine_takes(call, engine, services.engine(engine).request_rules.fields)

        def check(loaded: LoadedModel) -> None:
            check_call(call, loaded, services)

        ready_now = found is not None and found.ready
        model = call.model
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **extra}],
            }

        def answer_deltas(loaded: LoadedModel, use: Use) -> AsyncIterator[dict[str, Any]]:
            return use.watch(chat.chat_stream(services, loaded, call))

        async def answer_events(deltas: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
            yield _sse(chunk({"role": "assistant", "content": ""}))
            try:
                async for delta in deltas:
                    if "content" in delta:
                        yield _sse(chunk({"content": delta["content"]}))
                    elif "reasoning" in delta:
                        yield _sse(chunk({"reasoning_content": delta["reasoning"]}))
                    elif "tool_calls" in delta:
                        yield _sse(chunk({"tool_calls": delta["tool_calls"]}))
                    elif "logprobs" in delta:
                        yield _sse(chunk({}, logprobs=delta["logprobs"]))
                    elif "finish_reason" in delta:
                        yield _sse(chunk({}, delta["finish_reason"]))
                    elif "usage" in delta:
                        yield _sse({**chunk({}), "choices": [], "usage": delta["usage"]})
            except LtcaiError as exc:
                yield _sse(_error_event(exc))
            yield _sse("[DONE]")

        if call.stream and not ready_now:
            return await _stream_after_prepare(
                services, request, model, keep_alive, lambda loaded, use: answer_events(answer_deltas(loaded, use)), check
            )

        loaded, use = await ready_in_use(services, request, model, keep_alive, check)
        # A model prepared for this request: the job that did it, for `ltcai jobs ID`.
        headers = None if ready_now else {PREPARE_JOB_HEADER: loaded.job_id}
        if call.stream:
            with use.ending_on_error():
                deltas = await _started(answer_deltas(loaded, use))
            return ending_use(StreamingResponse(answer_events(deltas), media_type="text/event-stream", headers=headers), use)
        try:
            answer = await chat.chat_once(services, loaded, call)
            use.usage(answer.usage)
        finally:
            use.end()
        message: dict[str, Any] = {"role": "assistant", "content": answer.content}
        if answer.tool_calls:
            message["tool_calls"] = answer.tool_calls
            message["content"] = answer.content or None
        if answer.reasoning:
            message["reasoning_content"] = answer.reasoning
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": answer.finish_reason or "stop"}
        if "logprobs" in call.fields:
            choice["logprobs"] = answer.logprobs
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": answer.usage,
            },
            headers=headers,
        )

    async def completions(request: Request) -> Response:
        body, keep_alive = take_keep_alive(await read_json_object(request, limit))
        call, prompt = parse_completion(body)
        engine, found = engine_of(services, call.model)
        check_engine_takes(call, engine, services.engine(engine).request_rules.fields)
        completion_id = "cmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())

        def event(text: str, finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            return {"id": completion_id, "object": "text_completion", "created": created, "model": call.model,
                    "choices": [choice]}  # fmt: skip

        def text_deltas(loaded: LoadedModel, use: Use) -> AsyncIterator[dict[str, Any]]:
            return use.watch(chat.completion_stream(services, loaded, call, prompt))

        async def events(deltas: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
            try:
                async for delta in deltas:
                    if "content" in delta:
                        yield _sse(event(delta["content"]))
                    elif "finish_reason" in delta:
                        yield _sse(event("", delta["finish_reason"]))
                    elif "usage" in delta:
                        yield _sse({**event(""), "choices": [], "usage": delta["usage"]})
            except LtcaiError as exc:
                yield _sse(_error_event(exc))
            yield _sse("[DONE]")

        ready_now = found is not None and found.ready
        if call.stream and not ready_now:
            return await _stream_after_prepare(
                services, request, call.model, keep_alive, lambda loaded, use: events(text_deltas(loaded, use))
            )
        loaded, use = await ready_in_use(services, request, call.model, keep_alive)
        headers = None if ready_now else {PREPARE_JOB_HEADER: loaded.job_id}
        if call.stream:
            with use.ending_on_error():
                deltas = await _started(text_deltas(loaded, use))
            return ending_use(StreamingResponse(events(deltas), media_type="text/event-stream", headers=headers), use)
        try:
            params, held_stops = engine_params(
                services.engine(engine).request_rules, loaded.profile, call.overrides, call.fields
            )
            answer = await openai_client.text_completion(services.chat_http, loaded.served, ChatRequest([], params), prompt)
            use.usage(answer.get("usage"))
        finally:
            use.end()
        stops = chat.all_stops(params, held_stops)
        text, _reasoning = chat.postprocess_text(services, loaded.profile, answer["text"], stops)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": call.model,
                "choices": [{"index": 0, "text": text, "finish_reason": answer.get("finish_reason") or "stop", "logprobs": None}],
                "usage": answer.get("usage"),
            },
            headers=headers,
        )

    async def embed(request: Request) -> Response:
        body, keep_alive = take_keep_alive(await read_json_object(request, limit))
        call = parse_embeddings(body)
        engine, _loaded = engine_of(services, call.model)
        check_engine_embeds(call, engine, services.engine(engine).request_rules)
        loaded, use = await ready_in_use(services, request, call.model, keep_alive)
        try:
            answer = await openai_client.embeddings(services.chat_http, loaded.served, call.inputs, call.fields)
            use.usage(answer["usage"])
        finally:
            use.end()
        data = [
            {"object": "embedding", "index": i, "embedding": encode_base64(v) if call.base64 else v}
            for i, v in enumerate(answer["vectors"])
        ]
        return JSONResponse(
            {"object": "list", "data": data, "model": call.model, "usage": answer["usage"] or counted_usage(call.inputs)}
        )

    return [
        Route("/v1/models", list_models),
        Route("/v1/embeddings", embed, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ]
