"""The OpenAI-compatible client every engine server is spoken to through.

llama.cpp's, MLX's, vLLM's, LM Studio's and Ollama's servers all answer
``POST /v1/chat/completions``; one client for all of them keeps request shaping and
error mapping in one place. Chunks are yielded as they arrive (no coalescing).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ..errors import ChatError
from .base import ChatChunk, ChatRequest, ServedModel

__all__ = ["chat_completion", "stream_chat_completion", "text_completion"]


def _payload(served: ServedModel, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": served.model, "messages": request.messages, "stream": stream}
    payload.update({k: v for k, v in request.params.items() if v is not None})
    if not payload.get("stop"):
        payload.pop("stop", None)
    return payload


def _engine_error(served: ServedModel, exc: Exception) -> ChatError:
    if isinstance(exc, httpx.HTTPStatusError):
        if exc.response.status_code in (401, 403):
            # No body: remote providers echo (part of) a rejected API key in it.
            return ChatError(
                f"{served.engine} rejected the credentials (HTTP {exc.response.status_code})",
                hint=f"check the API key configured for {served.engine}",
                code="auth_failed",
            )
        body = exc.response.text[:300]
        for value in served.headers.values():  # never echo a credential back
            secret = value.removeprefix("Bearer ")
            if len(secret) >= 8:
                body = body.replace(secret, "<redacted>")
        return ChatError(
            f"{served.engine} answered HTTP {exc.response.status_code}: {body}",
            hint="see the engine log with `ltcai logs --engine " + served.engine + "`",
        )
    return ChatError(
        f"{served.engine} server at {served.base_url} is not answering ({type(exc).__name__}: {exc})",
        hint="the engine may have stopped; run `ltcai prepare` for the model again",
        code="engine_unreachable",
    )


async def chat_completion(
    http: httpx.AsyncClient, served: ServedModel, request: ChatRequest, *, timeout: float | None = None
) -> dict[str, Any]:
    """One non-streaming completion; returns the engine's JSON answer."""
    try:
        response = await http.post(
            served.base_url + "/chat/completions",
            json=_payload(served, request, stream=False),
            headers=served.headers,
            timeout=timeout,
        )
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        raise _engine_error(served, exc) from exc


async def stream_chat_completion(
    http: httpx.AsyncClient, served: ServedModel, request: ChatRequest, *, timeout: float | None = None
) -> AsyncIterator[ChatChunk]:
    """Stream content deltas as the engine sends them (Server-Sent Events)."""
    try:
        async with http.stream(
            "POST",
            served.base_url + "/chat/completions",
            json=_payload(served, request, stream=True),
            headers=served.headers,
            timeout=timeout,
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                for choice in event.get("choices") or ():
                    delta = choice.get("delta") or {}
                    content = delta.get("content") or ""
                    finish = choice.get("finish_reason")
                    if content or finish:
                        yield ChatChunk(content=content, finish_reason=finish)
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        raise _engine_error(served, exc) from exc


async def text_completion(
    http: httpx.AsyncClient, served: ServedModel, request: ChatRequest, prompt: str, *, timeout: float | None = None
) -> dict[str, Any]:
    """A legacy ``/completions`` call; returns ``{"text", "finish_reason", "usage"}``."""
    payload = {k: v for k, v in _payload(served, request, stream=False).items() if k != "messages"}
    payload["prompt"] = prompt
    try:
        response = await http.post(served.base_url + "/completions", json=payload, headers=served.headers, timeout=timeout)
        response.raise_for_status()
        answer = response.json()
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        raise _engine_error(served, exc) from exc
    choice = (answer.get("choices") or [{}])[0]
    return {"text": choice.get("text") or "", "finish_reason": choice.get("finish_reason"), "usage": answer.get("usage")}
