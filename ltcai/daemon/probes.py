"""The capability probes (issue 14 item 5): what a model measurably does on its engine.

Run by a prepare right after its smoke test (the ``chat`` capability), inside SMOKE_TEST:
the machine announces READY only once everything the job measured is on the profile, and
the model joins the registry (where clients find it) with those verdicts already there.
A probe never changes the chat verdict: a model whose tools fail still chats.

Every probe goes through the path a client's request takes (``chat.chat_once`` /
``chat.chat_stream``: profile parameters, post-processing, ltcai's tool-call fallback),
so a verdict is about what a client would get, not about the raw engine.

``context`` needs no generation and runs on every prepare (one GET, ~10 ms); the probes
that generate (``GENERATING``) run when asked (``ltcai prepare --probe``, ``"probe": true``
on ``POST /prepare``), keeping the default prepare to one completion. A capability never
probed stays ``untested`` and is not refused.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import structlog

from ..compat import SMOKE_PROMPT, Profile
from ..engines import ollama_context, openai_client
from ..errors import LtcaiError
from . import chat
from .models import LoadedModel
from .services import Services
from .validation import ChatCall

__all__ = ["ANSWER_SCHEMA", "GENERATING", "WEATHER_TOOL", "probe_capabilities"]

log = structlog.get_logger(__name__)

GENERATING: tuple[str, ...] = ("stream", "tools", "json_schema", "embeddings", "vision")
PROBE_TIMEOUT_S = 60.0  # one probe; a model slower than this is not usable for it either
_MAX_TOKENS = 64
# Greedy, so the whole and the streamed answer of the stream probe are the same answer.
_GREEDY = {"temperature": 0.0, "max_tokens": _MAX_TOKENS}

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city's name"}},
            "required": ["city"],
        },
    },
}
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}},
    "required": ["answer"],
}


@dataclass(frozen=True)
class Finding:
    status: str  # a Capability status: ok / degraded / failed / untested
    reason: str


Probe = Callable[[Services, LoadedModel], Awaitable[Finding]]
Progress = Callable[[str], None]


async def probe_capabilities(
    services: Services, loaded: LoadedModel, keys: Iterable[str], progress: Progress | None = None
) -> Profile:
    """Run the probes named by ``keys`` on ``loaded`` and record each verdict on its profile
    (``loaded.profile`` follows along, so a stop learned on the way is kept); the profile
    with the verdicts is returned, not yet saved."""
    for key in keys:
        if progress is not None:
            progress(f"probing {key}")
        finding = await _measured(_PROBES[key], services, loaded)
        when = datetime.now(UTC).isoformat(timespec="seconds")
        loaded.profile = loaded.profile.with_capability(key, finding.status, finding.reason, when)
        log.info("capability probed", capability=key, status=finding.status, reason=finding.reason)
        if progress is not None:
            progress(f"{key}: {finding.status} ({finding.reason})")
    return loaded.profile


async def _measured(probe: Probe, services: Services, loaded: LoadedModel) -> Finding:
    """One probe's finding; what goes wrong (an error, silence) is the finding, not a crash."""
    try:
        with anyio.fail_after(PROBE_TIMEOUT_S):
            return await probe(services, loaded)
    except TimeoutError:
        return Finding("failed", f"no answer within {PROBE_TIMEOUT_S:g} s")
    except LtcaiError as exc:  # the engine refused or broke: that is the finding
        return Finding("failed", _clip(exc.message, 300))
    except Exception as exc:  # a bug in a probe says nothing about the model: logged, not a verdict
        log.exception("capability probe crashed")
        return Finding("untested", f"the probe hit a bug ({type(exc).__name__}); the daemon log has the traceback")


def _call(loaded: LoadedModel, content: Any, *, fields: dict[str, Any] | None = None, stream: bool = False) -> ChatCall:
    return ChatCall(
        model=loaded.served.model,
        messages=[{"role": "user", "content": content}],
        overrides=dict(_GREEDY),
        fields=fields or {},
        stream=stream,
    )


# -- the probes ---------------------------------------------------------------------------


async def _stream(services: Services, loaded: LoadedModel) -> Finding:
    """The smoke prompt answered whole and streamed: the same text after post-processing."""
    whole = (await chat.chat_once(services, loaded, _call(loaded, SMOKE_PROMPT))).content
    parts = []
    async for delta in chat.chat_stream(services, loaded, _call(loaded, SMOKE_PROMPT, stream=True)):
        parts.append(delta.get("content", ""))
    streamed = "".join(parts)
    if streamed == whole:
        return Finding("ok", f"streamed answer equals the whole one ({len(whole)} characters)")
    if streamed.strip() == whole.strip():
        return Finding("degraded", "streamed and whole answers differ in surrounding whitespace")
    return Finding("failed", f"streamed answer {_clip(streamed)!r} differs from the whole one {_clip(whole)!r}")


async def _tools(services: Services, loaded: LoadedModel) -> Finding:
    """``get_weather`` with tool_choice required: one call of it, arguments valid JSON."""
    if not _engine_takes(services, loaded, "tools"):
        return Finding("untested", f"the {loaded.served.engine} engine does not take tools")
    call = _call(loaded, "What is the weather in Paris?", fields={"tools": [WEATHER_TOOL], "tool_choice": "required"})
    answer = await chat.chat_once(services, loaded, call)
    if not answer.tool_calls:
        return Finding("failed", f"no tool call; the model answered {_clip(answer.content)!r}")
    function = answer.tool_calls[0].get("function") or {}
    if function.get("name") != "get_weather":
        return Finding("failed", f"called {function.get('name')!r}, not get_weather")
    try:
        arguments = json.loads(function.get("arguments") or "")
    except (TypeError, ValueError):
        return Finding("failed", f"the call's arguments are not JSON: {_clip(str(function.get('arguments')))!r}")
    if not isinstance(arguments, dict) or not isinstance(arguments.get("city"), str):
        return Finding("failed", f"the call's arguments do not fit the tool's schema: {_clip(json.dumps(arguments))}")
    how = "ltcai's prompt fallback" if chat.emulates_tools(services, loaded, call) else "the engine"
    return Finding("ok", f"called get_weather({json.dumps(arguments, ensure_ascii=False)}) through {how}")


async def _json_schema(services: Services, loaded: LoadedModel) -> Finding:
    """response_format json_schema: the answer parses and fits :data:`ANSWER_SCHEMA`."""
    if not _engine_takes(services, loaded, "response_format"):
        return Finding("untested", f"the {loaded.served.engine} engine does not take response_format")
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}}
    prompt = 'What is 2+2? Answer in JSON like {"answer": 0}.'
    answer = await chat.chat_once(services, loaded, _call(loaded, prompt, fields={"response_format": response_format}))
    try:
        value = json.loads(answer.content)
    except ValueError:
        return Finding("failed", f"the answer is not JSON: {_clip(answer.content)!r}")
    if not isinstance(value, dict) or "answer" not in value:
        return Finding("failed", f"the answer lacks the required 'answer': {_clip(answer.content)}")
    if not isinstance(value["answer"], int) or isinstance(value["answer"], bool):
        return Finding("failed", f"'answer' is not an integer: {_clip(answer.content)}")
    return Finding("ok", f"valid against the schema: {_clip(answer.content)}")


async def _embeddings(services: Services, loaded: LoadedModel) -> Finding:
    if not services.engine(loaded.served.engine).request_rules.embeddings:
        return Finding("untested", f"the {loaded.served.engine} engine has no embeddings API")
    answer = await openai_client.embeddings(services.chat_http, loaded.served, ["hello"], {})
    vector = answer["vectors"][0] if answer["vectors"] else []
    if not vector or not all(isinstance(x, (int, float)) for x in vector):
        return Finding("failed", "the engine answered without a vector")
    return Finding("ok", f"a {len(vector)}-dimensional vector")


async def _vision(services: Services, loaded: LoadedModel) -> Finding:
    """A plain red picture: does the model say red? Only for a model that claims vision."""
    if not loaded.profile.vision:
        return Finding("untested", "the model does not claim vision")
    content = [
        {"type": "text", "text": "What colour is this picture? Answer in one word."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + _red_png()}},
    ]
    answer = (await chat.chat_once(services, loaded, _call(loaded, content))).content
    if "red" in answer.lower():
        return Finding("ok", f"saw the red picture: {_clip(answer)!r}")
    if answer.strip():
        return Finding("degraded", f"answered, but not 'red': {_clip(answer)!r}")
    return Finding("failed", "no answer about the picture")


async def _context(services: Services, loaded: LoadedModel) -> Finding:
    """The context one request can use, as the engine reports it: llama-server's ``/props``
    (``n_ctx`` per slot), else the size the adapter started the server with."""
    served = loaded.served
    estimate = services.lifecycle.estimate(loaded)
    # Shrunk to fit the memory budget (Lifecycle.make_room): say so beside the size.
    why = f": {estimate.context_note}" if estimate is not None and estimate.context_note else ""
    root = served.base_url.removesuffix("/").removesuffix("/v1")
    try:
        response = await services.http.get(root + "/props", headers=served.headers, timeout=5)
        if response.status_code == 200:
            settings = response.json().get("default_generation_settings") or {}
            n_ctx = settings.get("n_ctx")
            if isinstance(n_ctx, int) and n_ctx > 0:
                return Finding("ok", f"{n_ctx} tokens per slot (the server's /props n_ctx){why}")
    except (httpx.HTTPError, ValueError, AttributeError):
        pass  # not llama-server: the adapter may know
    if served.engine == "ollama":
        return await _ollama_context(services, loaded, root)
    if served.context:
        return Finding("ok", f"{served.context} tokens per slot (as {served.engine} was started){why}")
    return Finding("untested", f"the {served.engine} engine does not report its context size")


async def _ollama_context(services: Services, loaded: LoadedModel, root: str) -> Finding:
    """What Ollama really runs the model with (``/api/ps``), against what ltcai asked for."""
    served = loaded.served
    asked = f"{served.context} asked" if served.context else "none asked"
    try:
        response = await services.http.get(root + "/api/ps", headers=served.headers, timeout=5)
        used = ollama_context.context_in_use(response.json().get("models") or [], served.model)
    except (httpx.HTTPError, ValueError, AttributeError):
        used = None
    if used is None:
        if served.context:
            return Finding("ok", f"{served.context} tokens (asked of Ollama; its /api/ps does not say what it uses)")
        return Finding("untested", "Ollama's /api/ps does not say what context it uses")
    if served.context and used < served.context:
        return Finding(
            "degraded",
            f"Ollama runs it with {used} tokens ({asked}; /api/ps): a longer conversation loses its start;"
            f" start `ollama serve` with OLLAMA_CONTEXT_LENGTH={served.context}, or let ltcai start it",
        )
    return Finding("ok", f"{used} tokens ({asked}; Ollama's /api/ps)")


_PROBES: dict[str, Probe] = {
    "stream": _stream,
    "tools": _tools,
    "json_schema": _json_schema,
    "embeddings": _embeddings,
    "vision": _vision,
    "context": _context,
}


def _engine_takes(services: Services, loaded: LoadedModel, field_name: str) -> bool:
    takes = services.engine(loaded.served.engine).request_rules.fields
    return takes is None or field_name in takes


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _red_png(size: int = 16) -> str:
    """A ``size``×``size`` plain red PNG, base64: made here, so no image file ships."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * size for _ in range(size))
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(png).decode()
