"""The chat fast path and its recovery path (SPEC.md §7), and the smoke test that uses them.

Fast path: cached profile → generation params (a request's non-null values win) →
engine → post-processing → answer. Recovery: when the raw answer classifies as failed
(SPEC.md §4 rules 1–7, without the 2+2 check) and nothing has reached the client yet,
retry once with stricter parameters; a leaked marker becomes a learned stop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from ..compat import (
    BAD_MARKERS,
    SMOKE_PROMPT,
    AnswerStream,
    Profile,
    SmokeVerdict,
    classify_answer,
    clean_answer,
    learn_from_smoke,
)
from ..engines import openai_client
from ..engines.base import ChatChunk, ChatRequest, ServedModel
from ..errors import ChatError, Conflict
from .engine_request import engine_params
from .models import LoadedModel
from .services import Services
from .tool_emulation import emulated_call, template_has_tools, tool_calls_in
from .validation import ChatCall

__all__ = [
    "ChatAnswer",
    "SmokeOutcome",
    "all_stops",
    "chat_once",
    "chat_stream",
    "completion_stream",
    "emulates_tools",
    "list_served_models",
    "postprocess_text",
    "shape_messages",
    "smoke_test",
]

log = structlog.get_logger(__name__)

_RECOVERY_TEMPERATURE = 0.05


@dataclass(frozen=True)
class ChatAnswer:
    content: str
    reasoning: str | None
    finish_reason: str | None
    usage: dict[str, int] | None
    recovered: bool = False
    tool_calls: list[dict[str, Any]] | None = None  # as the engine sent them
    logprobs: dict[str, Any] | None = None


@dataclass(frozen=True)
class SmokeOutcome:
    verdict: SmokeVerdict
    answer: str
    raw: str
    profile: Profile


def _leaked_marker(raw: str) -> str | None:
    for marker in BAD_MARKERS:
        if marker in raw:
            return marker
    return None


def shape_messages(profile: Profile, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold system messages into the first user turn for models without a system role.

    System content is a string (the validator joins text parts); a user turn with image
    parts gets the system text as a leading text part.
    """
    if profile.supports_system or not any(m.get("role") == "system" for m in messages):
        return messages
    system = "\n\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    for message in rest:
        if message.get("role") == "user":
            content = message.get("content", "")
            if isinstance(content, list):
                message["content"] = [{"type": "text", "text": system + "\n\n"}, *content]
            else:
                message["content"] = f"{system}\n\n{content}"
            break
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


def postprocess_text(
    services: Services, profile: Profile, raw: str, stops: list[str] | None = None
) -> tuple[str, str | None]:
    """The answer and its reasoning (harmony analysis, ``<think>`` blocks), cut at every stop
    in ``stops`` (all of a request's, sent to the engine or not; default the profile's)."""
    parts = clean_answer(raw, profile, stops=stops, registry=services.plugins.postprocessors())
    return parts.answer, parts.reasoning


async def list_served_models(http: httpx.AsyncClient, served: ServedModel) -> list[str]:
    try:
        response = await http.get(served.base_url + "/models", headers=served.headers, timeout=10)
        response.raise_for_status()
        return [str(m.get("id")) for m in response.json().get("data", [])]
    except (httpx.HTTPError, ValueError) as exc:
        raise ChatError(
            f"{served.engine} server at {served.base_url} does not list its models: {exc}",
            code="engine_unreachable",
        ) from exc


SMOKE_SEED = 42


async def smoke_test(services: Services, served: ServedModel, profile: Profile, *, max_tokens: int) -> SmokeOutcome:
    """Send the smoke prompt, classify the raw answer, record the verdict on the profile."""
    rules = services.engine(served.engine).request_rules
    # A fixed seed where the engine takes one: the same model on the same engine gets the
    # same verdict at every prepare. Unseeded, llama-server samples anew each time, and
    # SmolLM2 at its profile's temperature falls into a loop ("2 + 2 = 4. 2 + 2 = 4. …")
    # on a few percent of prepares: a verdict that depends on luck is no verdict. (Not to
    # hosted models: they get nothing the user did not set.)
    seeded = rules.profile_sampling and (rules.fields is None or "seed" in rules.fields)
    fields = {"seed": SMOKE_SEED} if seeded else {}
    params, _held = engine_params(rules, profile, {"max_tokens": max_tokens}, fields)
    request = ChatRequest(shape_messages(profile, [{"role": "user", "content": SMOKE_PROMPT}]), params)
    answer = await openai_client.chat_completion(services.chat_http, served, request)
    raw = _message_of(answer)[1].get("content") or ""
    answer, _reasoning = postprocess_text(services, profile, raw)
    # The raw text is judged: leakage that post-processing would hide is still a defect
    # of the set-up, and the leaked marker is what the profile learns as a stop.
    verdict = classify_answer(raw)
    learned = learn_from_smoke(
        profile,
        verdict.status,
        verdict.reason,
        _leaked_marker(raw),
        datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return SmokeOutcome(verdict=verdict, answer=answer, raw=raw, profile=learned)


def _require_ready(loaded: LoadedModel | None, model: str) -> LoadedModel:
    if loaded is None:
        raise Conflict(
            f"{model} is not prepared",
            hint=f"run `ltcai prepare {model}` first",
            code="model_not_ready",
        )
    if not loaded.ready:
        raise Conflict(
            f"{model} is not ready: its engine server stopped",
            hint=f"run `ltcai prepare {model}` to start it again",
            code="model_not_ready",
        )
    return loaded


async def _learn_stop(services: Services, loaded: LoadedModel, marker: str) -> None:
    profile = learn_from_smoke(
        loaded.profile, loaded.profile.quality_status if loaded.profile.quality_status != "unknown" else "ok",
        None, marker, loaded.profile.validated_at,
    )
    loaded.profile = await services.profiles.put(profile)


def _request(
    services: Services, loaded: LoadedModel, call: ChatCall, overrides: dict[str, Any]
) -> tuple[ChatRequest, list[str]]:
    """The engine's request and every stop ltcai cuts the output at: those the engine was
    sent (it may ignore them) and those it could not take."""
    rules = services.engine(loaded.served.engine).request_rules
    params, held_stops = engine_params(rules, loaded.profile, overrides, call.fields)
    return ChatRequest(shape_messages(loaded.profile, call.messages), params), all_stops(params, held_stops)


def all_stops(params: dict[str, Any], held_stops: list[str]) -> list[str]:
    """Every stop ltcai enforces on the output: the ones sent to the engine and the held ones."""
    return [*params.get("stop", ()), *held_stops]


def _message_of(answer: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    choice = (answer.get("choices") or [{}])[0]
    return choice, choice.get("message") or {}


def emulates_tools(services: Services, loaded: LoadedModel, call: ChatCall) -> bool:
    """Tools asked of a model whose template has none, on an engine that renders only the
    template's: ltcai states and constrains them itself (``tool_emulation``)."""
    rules = services.engine(loaded.served.engine).request_rules
    return call.wants_tools and rules.template_tools and not template_has_tools(loaded.profile.chat_template)


async def chat_once(services: Services, loaded: LoadedModel | None, call: ChatCall) -> ChatAnswer:
    """One answer. Tool calls come back as ``tool_calls``: the engine's, or ones the model
    wrote as text (JSON, fenced, ``<tool_call>``), which are never shown as content."""
    loaded = _require_ready(loaded, call.model)
    answer = await _answer(services, loaded, emulated_call(call) if emulates_tools(services, loaded, call) else call)
    if call.wants_tools and not answer.tool_calls:
        written = tool_calls_in(answer.content, call.fields["tools"])
        if written:
            answer = replace(answer, content="", tool_calls=written, finish_reason="tool_calls")
    return answer


async def _answer(services: Services, loaded: LoadedModel, call: ChatCall) -> ChatAnswer:
    request, stops = _request(services, loaded, call, call.overrides)
    answer = await openai_client.chat_completion(services.chat_http, loaded.served, request)
    choice, message = _message_of(answer)
    raw = message.get("content") or ""
    recovered = False
    # A tool call is an answer, whatever the (usually empty) content says.
    if not message.get("tool_calls") and not classify_answer(raw, check_expected_result=False).usable:
        log.info("answer failed classification; retrying once", reason=classify_answer(raw).reason)
        params = request.params
        stricter = dict(params, temperature=min(params.get("temperature") or 0.0, _RECOVERY_TEMPERATURE))
        marker = _leaked_marker(raw)
        if marker:
            stricter["stop"] = [*params.get("stop", []), marker]
            stops = [*stops, marker]
            await _learn_stop(services, loaded, marker)
        answer = await openai_client.chat_completion(services.chat_http, loaded.served, ChatRequest(request.messages, stricter))
        choice, message = _message_of(answer)
        raw = message.get("content") or ""
        recovered = True
    content, reasoning = postprocess_text(services, loaded.profile, raw, stops)
    return ChatAnswer(
        content,
        message.get("reasoning_content") or reasoning,
        choice.get("finish_reason"),
        answer.get("usage"),
        recovered,
        tool_calls=message.get("tool_calls") or None,
        logprobs=choice.get("logprobs"),
    )


@dataclass
class _Streamed:
    """What a stream left behind, for the recovery decision and the usage line."""

    raw: list[str] = field(default_factory=list)
    sent: bool = False
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    engine_chunks: int = 0


async def _processed(
    services: Services, profile: Profile, chunks: AsyncIterator[ChatChunk], stops: list[str], seen: _Streamed
) -> AsyncIterator[dict[str, Any]]:
    """The engine's chunks as deltas: content post-processed and cut at ``stops`` (held back
    only as long as a marker or a stop split across chunks could still need; reasoning
    blocks become reasoning deltas), the rest passed through in order."""
    processor = AnswerStream(profile, stops=stops, registry=services.plugins.postprocessors())
    async for chunk in chunks:
        seen.usage = chunk.usage or seen.usage
        seen.finish_reason = chunk.finish_reason or seen.finish_reason
        if chunk.content or chunk.tool_calls or chunk.reasoning:
            seen.engine_chunks += 1
        seen.raw.append(chunk.content)
        if chunk.reasoning:
            seen.sent = True
            yield {"reasoning": chunk.reasoning}
        for delta in _deltas(processor.feed(chunk.content)):
            seen.sent = True
            yield delta
        if chunk.tool_calls:
            seen.sent = True
            yield {"tool_calls": chunk.tool_calls}
        if chunk.logprobs:
            yield {"logprobs": chunk.logprobs}
    for delta in _deltas(processor.finish()):
        seen.sent = True
        yield delta


async def chat_stream(services: Services, loaded: LoadedModel | None, call: ChatCall) -> AsyncIterator[dict[str, Any]]:
    """Yield ``{"content": …}`` / ``{"reasoning": …}`` / ``{"tool_calls": […]}`` /
    ``{"logprobs": …}`` deltas, then ``{"finish_reason": …}``, then ``{"usage": …}`` when
    ``call.include_usage``.

    Tool-call deltas pass through whole and in order, untouched by post-processing.
    Recovery happens only when nothing was sent (a tool call counts as sent).
    """
    loaded = _require_ready(loaded, call.model)
    if emulates_tools(services, loaded, call):  # the call is known only once the answer is whole
        answer = await chat_once(services, loaded, call)
        for delta in _answer_deltas(answer):
            yield delta
        yield {"finish_reason": answer.finish_reason or "stop"}
        if call.include_usage:
            yield {"usage": answer.usage or _counted_usage(1)}
        return
    request, stops = _request(services, loaded, call, call.overrides)
    engine = openai_client.stream_chat_completion(services.chat_http, loaded.served, request, include_usage=call.include_usage)
    seen = _Streamed()
    async for delta in _processed(services, loaded.profile, engine, stops, seen):
        yield delta
    if not seen.sent and not classify_answer("".join(seen.raw), check_expected_result=False).usable:
        retry = replace(call, overrides=dict(call.overrides, temperature=_RECOVERY_TEMPERATURE))
        answer = await chat_once(services, loaded, retry)
        for delta in _answer_deltas(answer):
            yield delta
        seen.finish_reason, seen.usage = answer.finish_reason, answer.usage or seen.usage
    yield {"finish_reason": seen.finish_reason or "stop"}
    if call.include_usage:
        yield {"usage": seen.usage or _counted_usage(seen.engine_chunks)}


async def completion_stream(
    services: Services, loaded: LoadedModel, call: ChatCall, prompt: str
) -> AsyncIterator[dict[str, Any]]:
    """A legacy completion streamed: the same deltas as :func:`chat_stream` (no recovery:
    a raw prompt has no turn a retry could fix)."""
    request, stops = _request(services, loaded, call, call.overrides)
    engine = openai_client.stream_text_completion(
        services.chat_http, loaded.served, request, prompt, include_usage=call.include_usage
    )
    seen = _Streamed()
    async for delta in _processed(services, loaded.profile, engine, stops, seen):
        yield delta
    yield {"finish_reason": seen.finish_reason or "stop"}
    if call.include_usage:
        yield {"usage": seen.usage or _counted_usage(seen.engine_chunks)}


def _answer_deltas(answer: ChatAnswer) -> list[dict[str, Any]]:
    """A whole answer as the deltas a stream would have carried."""
    deltas: list[dict[str, Any]] = []
    if answer.reasoning:
        deltas.append({"reasoning": answer.reasoning})
    if answer.content:
        deltas.append({"content": answer.content})
    if answer.tool_calls:
        deltas.append({"tool_calls": [dict(c, index=i) for i, c in enumerate(answer.tool_calls)]})
    return deltas


def _counted_usage(engine_chunks: int) -> dict[str, Any]:
    """Usage for an engine that streams none: llama.cpp, MLX and vLLM send one token per
    chunk, so the chunks are the completion's tokens; the prompt's are not known."""
    return {"prompt_tokens": 0, "completion_tokens": engine_chunks, "total_tokens": engine_chunks, "estimated": True}


def _deltas(output: Any) -> list[dict[str, str]]:
    """Normalise an AnswerStream delta (content and reasoning) to deltas."""
    if isinstance(output, str):
        return [{"content": output}] if output else []
    deltas = []
    reasoning = getattr(output, "reasoning", "")
    content = getattr(output, "content", "")
    if reasoning:
        deltas.append({"reasoning": reasoning})
    if content:
        deltas.append({"content": content})
    return deltas

