"""The OpenAI-compatible client every engine server is spoken to through: the data path.

llama.cpp's, MLX's, vLLM's, LM Studio's and Ollama's servers all answer
``POST /v1/chat/completions``; one client for all of them keeps request shaping and
error mapping in one place. Chunks are yielded as they arrive (no coalescing).

Chat traffic goes through aiohttp, not the daemon's httpx client: measured against a
loopback upstream (bench/bench_proxy.py), a keep-alive request costs httpx ~1.4 ms of
CPU and aiohttp ~0.5 ms on these 2 cores, and that is most of what ltcai adds to a
chat. httpx stays for the control plane (readiness polls, engine APIs, downloads).
aiohttp is imported in a worker thread on first use (or by ``warm_up`` after the
daemon is ready), so it costs the daemon's start-up nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from .._lazy import import_off_loop
from ..errors import ChatError, ErrorCode, InvalidRequest
from .base import ChatChunk, ChatRequest, ServedModel

if TYPE_CHECKING:
    import aiohttp

__all__ = ["ChatHTTP", "chat_completion", "embeddings", "stream_chat_completion", "stream_text_completion", "text_completion"]

# An idle connection is dropped before uvicorn (llama_cpp.server, mlx_lm, vLLM) closes
# it after 5 s, so a request never goes out on a connection the server is closing.
_KEEPALIVE_S = 4.0
_CONNECT_TIMEOUT_S = 5.0
_READ_TIMEOUT_S = 600.0  # between two reads: a long generation streams, a dead one stops


class ChatHTTP:
    """The pooled keep-alive connections to engine servers; one per daemon, closed at exit."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None
        self._aiohttp: Any = None

    async def warm_up(self) -> None:
        """Import aiohttp off the event loop, so the first chat does not wait for it."""
        if self._aiohttp is None:
            self._aiohttp = await import_off_loop("aiohttp")

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            await self.warm_up()
        if self._session is None:  # still: another caller may have made it while we waited
            aio = self._aiohttp
            self._session = aio.ClientSession(
                connector=aio.TCPConnector(limit=0, keepalive_timeout=_KEEPALIVE_S),
                timeout=aio.ClientTimeout(total=None, connect=_CONNECT_TIMEOUT_S, sock_read=_READ_TIMEOUT_S),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    def _timeout(self, seconds: float | None) -> Any:
        if seconds is None:
            return None  # the session's
        return self._aiohttp.ClientTimeout(total=seconds, connect=_CONNECT_TIMEOUT_S)

    def fresh_session(self) -> aiohttp.ClientSession:
        """A session whose every request opens a new connection: for the one retry of a
        request that met a connection the server had closed (see ``_post``)."""
        if self._fresh is None:
            aio = self._aiohttp
            self._fresh = aio.ClientSession(
                connector=aio.TCPConnector(force_close=True),
                timeout=aio.ClientTimeout(total=None, connect=_CONNECT_TIMEOUT_S, sock_read=_READ_TIMEOUT_S),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._fresh

    def transport_errors(self) -> tuple[type[BaseException], ...]:
        return (self._aiohttp.ClientError, asyncio.TimeoutError)

    def stale_connection_errors(self) -> tuple[type[BaseException], ...]:
        """How a request fails on a connection the server closed: no answer, a reset."""
        return (self._aiohttp.ServerDisconnectedError, self._aiohttp.ClientOSError)

    async def aclose(self) -> None:
        for name in ("_session", "_fresh"):
            session = getattr(self, name)
            if session is not None:
                setattr(self, name, None)
                await session.close()

    async def __aenter__(self) -> ChatHTTP:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _payload(served: ServedModel, request: ChatRequest, *, stream: bool, include_usage: bool = False) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": served.model, "messages": request.messages, "stream": stream}
    if include_usage:
        payload["stream_options"] = {"include_usage": True}
    payload.update({k: v for k, v in request.params.items() if v is not None})
    if not payload.get("stop"):
        payload.pop("stop", None)
    return payload


# How the llama.cpp servers refuse a prompt longer than the context (never truncating it):
# llama-server answers 400 {"error": {"type": "exceed_context_size_error", "n_prompt_tokens",
# "n_ctx", "message": "request (N tokens) exceeds the available context size (M tokens)"}};
# llama-cpp-python's server 400 "This model's maximum context length is M tokens. However,
# you requested T tokens (N in the messages, C in the completion)…" (on /completions:
# "…M tokens, however you requested T tokens (N in your prompt; …"), from its own
# "Requested tokens (N) exceed context window of M".
_CONTEXT_MESSAGES = (
    (re.compile(r"request \((\d+) tokens\) exceeds the available context size \((\d+) tokens\)"), 1, 2),
    (re.compile(r"maximum context length is (\d+) tokens[.,] [Hh]owever,? you requested \d+ tokens \((\d+) in "), 2, 1),
    (re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)"), 1, 2),
)


def _context_exceeded(served: ServedModel, body: str) -> InvalidRequest | None:
    """The engine's refusal of a prompt that does not fit, as a 400 with both numbers; None
    for any other error."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    prompt = n_ctx = None
    if isinstance(error, dict) and error.get("type") == "exceed_context_size_error":
        prompt, n_ctx = error.get("n_prompt_tokens"), error.get("n_ctx")
    if not (isinstance(prompt, int) and isinstance(n_ctx, int)):
        for pattern, prompt_group, ctx_group in _CONTEXT_MESSAGES:
            match = pattern.search(body)
            if match:
                prompt, n_ctx = int(match[prompt_group]), int(match[ctx_group])
                break
        else:
            return None
    return InvalidRequest(
        f"the prompt is {prompt} tokens; {served.model} has a {n_ctx}-token context per request",
        hint=f"shorten the conversation, or raise n_ctx in [engines.{served.engine}] of the config"
        " (a larger context needs more memory)",
        code=ErrorCode.CONTEXT_EXCEEDED,
    )


def _status_error(served: ServedModel, status: int, body: str) -> ChatError | InvalidRequest:
    if status in (400, 413, 500) and (exceeded := _context_exceeded(served, body)) is not None:
        return exceeded
    if status in (401, 403):
        # No body: remote providers echo (part of) a rejected API key in it.
        return ChatError(
            f"{served.engine} rejected the credentials (HTTP {status})",
            hint=f"check the API key configured for {served.engine}",
            code="auth_failed",
        )
    body = body[:300]
    for value in served.headers.values():  # never echo a credential back
        secret = value.removeprefix("Bearer ")
        if len(secret) >= 8:
            body = body.replace(secret, "<redacted>")
    return ChatError(
        f"{served.engine} answered HTTP {status}: {body}",
        hint="see the engine log with `ltcai logs --engine " + served.engine + "`",
    )


def _transport_error(served: ServedModel, exc: BaseException) -> ChatError:
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ChatError(
        f"{served.engine} server at {served.base_url} is not answering ({detail})",
        hint="the engine may have stopped; run `ltcai prepare` for the model again",
        code="engine_unreachable",
    )


@contextlib.asynccontextmanager
async def _post(
    http: ChatHTTP, served: ServedModel, path: str, payload: dict[str, Any], timeout: float | None
) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST ``payload``; the response, once its headers are in.

    A pooled keep-alive connection the server closed just as the request went out
    (llama-server drops some under load; any server may at its idle timeout) fails
    before a byte of the answer arrives: such a request is sent once more, on a new
    connection. Nothing of the answer has reached anyone yet, so nothing is repeated.
    """
    data = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **served.headers}
    url = served.base_url + path
    session = await http.session()
    try:
        response = await session.post(url, data=data, headers=headers, timeout=http._timeout(timeout))
    except http.stale_connection_errors():
        # Not through the pool again: its other idle connections may be just as stale.
        response = await http.fresh_session().post(url, data=data, headers=headers, timeout=http._timeout(timeout))
    try:
        yield response
    finally:
        response.release()


async def _post_json(
    http: ChatHTTP, served: ServedModel, path: str, payload: dict[str, Any], timeout: float | None
) -> dict[str, Any]:
    try:
        async with _post(http, served, path, payload, timeout) as response:
            body = await response.read()
            status = response.status
    except http.transport_errors() as exc:
        raise _transport_error(served, exc) from exc
    if status >= 400:
        raise _status_error(served, status, body.decode(errors="replace"))
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ChatError(
            f"{served.engine} answered something that is not JSON: {body[:200]!r}",
            hint="see the engine log with `ltcai logs --engine " + served.engine + "`",
            code="engine_bad_answer",
        ) from exc


async def chat_completion(
    http: ChatHTTP, served: ServedModel, request: ChatRequest, *, timeout: float | None = None
) -> dict[str, Any]:
    """One non-streaming completion; returns the engine's JSON answer."""
    return await _post_json(http, served, "/chat/completions", _payload(served, request, stream=False), timeout)


async def stream_chat_completion(
    http: ChatHTTP,
    served: ServedModel,
    request: ChatRequest,
    *,
    timeout: float | None = None,
    include_usage: bool = False,
) -> AsyncIterator[ChatChunk]:
    """Stream deltas as the engine sends them (Server-Sent Events): content, tool-call
    deltas, reasoning, logprobs; with ``include_usage`` the engine's usage comes last."""
    async for chunk in _stream_events(http, served, "/chat/completions",
                                      _payload(served, request, stream=True, include_usage=include_usage), timeout):
        yield chunk


async def _stream_events(
    http: ChatHTTP, served: ServedModel, path: str, payload: dict[str, Any], timeout: float | None
) -> AsyncIterator[ChatChunk]:
    try:
        async with _post(http, served, path, payload, timeout) as response:
            if response.status >= 400:
                body = await response.read()
                raise _status_error(served, response.status, body.decode(errors="replace"))
            pending = b""
            # Whatever one network read brings is split into events and yielded at once.
            async for data in response.content.iter_any():
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        return
                    for chunk in _chunks_of(served, payload):
                        yield chunk
    except http.transport_errors() as exc:
        raise _transport_error(served, exc) from exc


def _chunks_of(served: ServedModel, payload: bytes) -> list[ChatChunk]:
    try:
        event = orjson.loads(payload)  # one event per token: ~5× faster than json.loads
    except ValueError as exc:
        raise ChatError(
            f"{served.engine} streamed an event that is not JSON: {payload[:200]!r}",
            code="engine_bad_answer",
        ) from exc
    if isinstance(event, dict) and event.get("error"):
        exceeded = _context_exceeded(served, payload.decode(errors="replace"))
        if exceeded is not None:
            raise exceeded
        error = event["error"]
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise ChatError(f"{served.engine} failed mid-answer: {message}")
    chunks = []
    for choice in event.get("choices") or ():
        delta = choice.get("delta")
        if delta is None:  # a /completions event
            delta = {"content": choice.get("text")}
        chunk = ChatChunk(
            content=delta.get("content") or "",
            finish_reason=choice.get("finish_reason"),
            tool_calls=delta.get("tool_calls") or None,
            reasoning=delta.get("reasoning_content") or "",
            logprobs=choice.get("logprobs") or None,
        )
        if chunk.content or chunk.finish_reason or chunk.tool_calls or chunk.reasoning or chunk.logprobs:
            chunks.append(chunk)
    if event.get("usage"):
        chunks.append(ChatChunk(content="", usage=event["usage"]))
    return chunks


async def text_completion(
    http: ChatHTTP, served: ServedModel, request: ChatRequest, prompt: str, *, timeout: float | None = None
) -> dict[str, Any]:
    """A legacy ``/completions`` call; returns ``{"text", "finish_reason", "usage"}``."""
    payload = {k: v for k, v in _payload(served, request, stream=False).items() if k != "messages"}
    payload["prompt"] = prompt
    answer = await _post_json(http, served, "/completions", payload, timeout)
    choice = (answer.get("choices") or [{}])[0]
    return {"text": choice.get("text") or "", "finish_reason": choice.get("finish_reason"), "usage": answer.get("usage")}


async def stream_text_completion(
    http: ChatHTTP, served: ServedModel, request: ChatRequest, prompt: str, *, include_usage: bool = False
) -> AsyncIterator[ChatChunk]:
    """A streamed legacy ``/completions`` call: the text of each event as a chunk's content."""
    payload = {k: v for k, v in _payload(served, request, stream=True, include_usage=include_usage).items() if k != "messages"}
    payload["prompt"] = prompt
    async for chunk in _stream_events(http, served, "/completions", payload, None):
        yield chunk


# What a server answers to an embeddings request for a model that cannot embed (llama-server
# without --embeddings: 501; vLLM serving a generative model: 400/404; others 404/405).
_CANNOT_EMBED = (400, 404, 405, 501)


async def embeddings(http: ChatHTTP, served: ServedModel, inputs: list[Any], fields: dict[str, Any]) -> dict[str, Any]:
    """``POST /embeddings`` for float vectors; a model that cannot embed is a 400 naming it."""
    payload = {"model": served.model, "input": inputs, "encoding_format": "float", **fields}
    try:
        async with _post(http, served, "/embeddings", payload, None) as response:
            body = await response.read()
            status = response.status
    except http.transport_errors() as exc:
        raise _transport_error(served, exc) from exc
    if status in _CANNOT_EMBED:
        detail = body.decode(errors="replace")[:300]
        raise InvalidRequest(
            f"{served.model} on {served.engine} cannot embed: {detail}",
            hint="choose an embedding model, or an engine started with embeddings on",
            code="model_cannot_embed",
        )
    if status >= 400:
        raise _status_error(served, status, body.decode(errors="replace"))
    try:
        answer = json.loads(body)
        vectors = [item["embedding"] for item in sorted(answer["data"], key=lambda d: d["index"])]
    except (ValueError, KeyError, TypeError) as exc:
        raise ChatError(
            f"{served.engine} answered embeddings in a shape ltcai does not know: {body[:200]!r}",
            code="engine_bad_answer",
        ) from exc
    return {"vectors": vectors, "usage": answer.get("usage")}
