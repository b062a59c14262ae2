"""Ollama's ``/api/chat`` and ``/api/generate`` (mounted by ``ollama_api``).

NDJSON streamed unless ``"stream": false``, through the same validator and fast path as
``/v1`` (profile parameters, post-processing of content, never of tool calls, the
recovery retry) and the same lifecycle (``keep_alive``, slots and queue). A model not
ready is prepared just in time, and the job's id comes back in the
``X-Ltcai-Prepare-Job`` header.

A streamed request that starts a prepare answers at once and says something at every
step of the prepare and every few seconds (a long download would look like a hang, and
clients time out). Not ``{"status": …}`` lines as ``/api/pull`` sends: the official
``ollama`` client reads every line of a chat stream as a ``ChatResponse``, whose
``message`` is required, so a status line breaks it (a pydantic ValidationError). What
every Ollama client takes is an empty chunk, ``"done": false`` with an empty
``message.content`` (``response`` for generate); the prepare's progress rides beside it
in ``ltcai`` (``prepare_job``, ``status``), which clients ignore.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import FieldError
from . import chat
from .body import read_json_object
from .capability_gate import check_call
from .http_errors import ndjson_stream, ollama_error_body
from .in_flight import PREPARE_JOB_HEADER, ending_use, prepare_progress, take_keep_alive
from .lifecycle import Use
from .model_access import engine_of, preparing_in_use, ready_in_use
from .models import LoadedModel
from .ollama_shapes import OllamaRequest, chat_request, done_fields, generate_request, message_out, now_rfc3339
from .services import Services
from .validation import ChatCall, check_engine_takes, parse_chat

__all__ = ["OllamaChat", "ndjson_lines"]

Lines = AsyncIterator[dict[str, Any]]
# A streamed answer from the ready model; the int: how long getting it ready took (ns).
Streamer = Callable[[LoadedModel, Use, int], Lines]
Whole = Callable[[LoadedModel, Use, int], Awaitable[Response]]
# What a chunk with nothing in it carries, by the answer's key.
_EMPTY: dict[str, dict[str, Any]] = {"message": {"message": {"role": "assistant", "content": ""}}, "response": {"response": ""}}


def ndjson_lines(events: Lines) -> Response:
    """Ollama's stream: an error after the first line is the last line, in Ollama's shape."""
    return ndjson_stream(events, lambda exc: ollama_error_body(exc.code, exc.message, exc.hint))


class OllamaChat:
    """The two routes, and unloading (``keep_alive: 0``; ``/api/delete`` uses it too)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.limit = services.settings.max_body_bytes

    async def chat_route(self, request: Request) -> Response:
        started = time.monotonic_ns()
        body, keep_alive = take_keep_alive(await read_json_object(request, self.limit))
        ollama = chat_request(body)
        if not ollama.body.get("messages"):  # Ollama's "load a model": no messages
            return await self._load_or_unload(request, ollama, keep_alive, started, "message")
        return await self._turn(request, parse_chat(ollama.body), ollama, keep_alive, started, "message")

    async def generate_route(self, request: Request) -> Response:
        started = time.monotonic_ns()
        body, keep_alive = take_keep_alive(await read_json_object(request, self.limit))
        ollama = generate_request(body)
        if not body.get("prompt") and not body.get("images"):
            return await self._load_or_unload(request, ollama, keep_alive, started, "response")
        if body.get("raw"):
            return await self._raw(request, ollama, keep_alive, body, started)
        return await self._turn(request, parse_chat(ollama.body), ollama, keep_alive, started, "response")

    async def unload(self, model: str) -> LoadedModel | None:
        _engine, loaded = engine_of(self.services, model)
        if loaded is None or not await self.services.lifecycle.unload(loaded, "requested"):
            return None
        return loaded

    async def _answer(
        self, http: Request, call: ChatCall, keep_alive: float | None, started: int, key: str, stream: Streamer, whole: Whole
    ) -> Response:
        """Get the model ready (just in time) with this request in flight on it, then answer:
        ``stream`` for a streamed request, else ``whole``."""
        services = self.services
        engine, found = engine_of(services, call.model)
        check_engine_takes(call, engine, services.engine(engine).request_rules.fields)

        def check(loaded: LoadedModel) -> None:
            check_call(call, loaded, services)

        ready_now = found is not None and found.ready
        if call.stream and not ready_now:
            waiting = await preparing_in_use(services, http, call.model, keep_alive)
            job = waiting.job

            async def lines() -> Lines:
                async for status in prepare_progress(job):
                    progress = {"prepare_job": job.id, "status": status}
                    yield {"model": call.model, "created_at": now_rfc3339(), **_EMPTY[key], "done": False, "ltcai": progress}
                loaded = await waiting.ready(check)
                async for line in stream(loaded, waiting.use, time.monotonic_ns() - started):
                    yield line

            response = ndjson_lines(lines())
            response.headers[PREPARE_JOB_HEADER] = job.id
            return ending_use(response, waiting.use)
        loaded, use = await ready_in_use(services, http, call.model, keep_alive, check)
        load_ns = time.monotonic_ns() - started
        response = ndjson_lines(stream(loaded, use, load_ns)) if call.stream else await whole(loaded, use, load_ns)
        if not ready_now:  # prepared for this request: the job that did it, for `ltcai jobs ID`
            response.headers[PREPARE_JOB_HEADER] = loaded.job_id
        return ending_use(response, use) if call.stream else response

    async def _turn(
        self, http: Request, call: ChatCall, request: OllamaRequest, keep_alive: float | None, started: int, key: str
    ) -> Response:
        """One chat turn as Ollama's chat (``key`` "message") or generate ("response") answer."""
        services = self.services

        def shaped(content: str, reasoning: str | None, tool_calls: list[dict[str, Any]] | None) -> dict[str, Any]:
            if key == "message":
                return {"message": message_out(content, reasoning, tool_calls, request.think)}
            out: dict[str, Any] = {"response": content}
            if request.think and reasoning:
                out["thinking"] = reasoning
            return out

        async def whole(loaded: LoadedModel, use: Use, load_ns: int) -> Response:
            try:
                result = await chat.chat_once(services, loaded, call)
                use.usage(result.usage)
            finally:
                use.end()
            body = {"model": call.model, "created_at": now_rfc3339(), **shaped(result.content, result.reasoning, result.tool_calls)}
            return JSONResponse({**body, **done_fields(result.finish_reason, result.usage, started, load_ns)})

        async def stream(loaded: LoadedModel, use: Use, load_ns: int) -> Lines:
            head = {"model": call.model, "created_at": now_rfc3339()}
            calls: dict[int, dict[str, Any]] = {}  # OpenAI's streamed deltas, assembled
            finish, usage = None, None
            async for delta in use.watch(chat.chat_stream(services, loaded, replace(call, include_usage=True))):
                if "content" in delta or ("reasoning" in delta and request.think):
                    yield {**head, **shaped(delta.get("content", ""), delta.get("reasoning"), None), "done": False}
                for part in delta.get("tool_calls") or ():
                    assembled = calls.setdefault(part.get("index", 0), {"function": {"name": "", "arguments": ""}})
                    function = part.get("function") or {}
                    assembled["function"]["name"] += function.get("name") or ""
                    assembled["function"]["arguments"] += function.get("arguments") or ""
                finish = delta.get("finish_reason", finish)
                usage = delta.get("usage", usage)
            if calls:  # Ollama sends each tool call whole, in one line
                yield {**head, **shaped("", None, [calls[i] for i in sorted(calls)]), "done": False}
            yield {**head, **shaped("", None, None), **done_fields(finish, usage, started, load_ns)}

        return await self._answer(http, call, keep_alive, started, key, stream, whole)

    async def _raw(
        self, http: Request, ollama: OllamaRequest, keep_alive: float | None, body: dict[str, Any], started: int
    ) -> Response:
        """``raw``: the prompt goes to the engine as it is, no chat template."""
        for name in ("format", "system", "images"):
            if body.get(name):
                raise FieldError(f"'{name}' cannot be used with \"raw\": true: the prompt is sent as it is",
                                 param=name, code="unsupported_field")  # fmt: skip
        prompt = body["prompt"]
        call = replace(parse_chat(ollama.body), messages=[])
        services = self.services

        async def events(loaded: LoadedModel, use: Use, load_ns: int) -> Lines:
            head = {"model": call.model, "created_at": now_rfc3339()}
            finish, usage, text = None, None, []
            async for delta in use.watch(chat.completion_stream(services, loaded, replace(call, include_usage=True), prompt)):
                if "content" in delta:
                    text.append(delta["content"])
                    if call.stream:
                        yield {**head, "response": delta["content"], "done": False}
                finish = delta.get("finish_reason", finish)
                usage = delta.get("usage", usage)
            whole = "" if call.stream else "".join(text)
            yield {**head, "response": whole, **done_fields(finish, usage, started, load_ns)}

        async def whole(loaded: LoadedModel, use: Use, load_ns: int) -> Response:
            try:
                last = [event async for event in events(loaded, use, load_ns)][-1]
            finally:
                use.end()
            return JSONResponse(last)

        return await self._answer(http, call, keep_alive, started, "response", events, whole)

    async def _load_or_unload(
        self, http: Request, ollama: OllamaRequest, keep_alive: float | None, started: int, key: str
    ) -> Response:
        """Ollama's empty request: load the model (kept ``keep_alive``), or with 0, unload it."""
        model = ollama.body.get("model")
        if not isinstance(model, str):
            raise FieldError("'model' is required", param="model", code="missing_field")
        head = {"model": model, "created_at": now_rfc3339(), **_EMPTY[key], "done": True}
        if keep_alive == 0:
            unloaded = await self.unload(model)
            return JSONResponse({**head, "done_reason": "unload" if unloaded else "not loaded"})
        _loaded, use = await ready_in_use(self.services, http, model, keep_alive)
        use.end()
        return JSONResponse({**head, "done_reason": "load", "load_duration": time.monotonic_ns() - started})
