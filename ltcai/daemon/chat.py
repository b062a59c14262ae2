"""The chat fast path and its recovery path (SPEC.md §7), and the smoke test that uses them.

Fast path: cached profile → generation params (a request's non-null values win) →
engine → post-processing → answer. Recovery: when the raw answer classifies as failed
(SPEC.md §4 rules 1–7, without the 2+2 check) and nothing has reached the client yet,
retry once with stricter parameters; a leaked marker becomes a learned stop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from ..compat import (
    BAD_MARKERS,
    SMOKE_PROMPT,
    Profile,
    HarmonyStreamPostprocessor,
    SmokeVerdict,
    StreamPostprocessor,
    apply_postprocess,
    classify_answer,
    generation_params,
    learn_from_smoke,
    postprocess_harmony,
)
from ..engines import openai_client
from ..engines.base import ChatRequest, ServedModel
from ..errors import ChatError, Conflict
from .models import LoadedModel
from .services import Services

__all__ = [
    "ChatAnswer",
    "SmokeOutcome",
    "chat_once",
    "chat_stream",
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


@dataclass(frozen=True)
class SmokeOutcome:
    verdict: SmokeVerdict
    answer: str
    raw: str
    profile: Profile


def _is_harmony(profile: Profile) -> bool:
    return profile.template == "gpt_oss"


def _leaked_marker(raw: str) -> str | None:
    for marker in BAD_MARKERS:
        if marker in raw:
            return marker
    return None


def shape_messages(profile: Profile, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold system messages into the first user turn for models without a system role."""
    if profile.supports_system or not any(m.get("role") == "system" for m in messages):
        return messages
    system = "\n\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    for message in rest:
        if message.get("role") == "user":
            message["content"] = f"{system}\n\n{message.get('content', '')}"
            break
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


def postprocess_text(services: Services, profile: Profile, raw: str) -> tuple[str, str | None]:
    registry = services.plugins.postprocessors()
    if _is_harmony(profile):
        parts = postprocess_harmony(raw, profile.postprocess, registry=registry)
        return parts.answer, parts.reasoning
    return apply_postprocess(raw, profile.postprocess, registry=registry), None


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


async def _complete_raw(services: Services, served: ServedModel, request: ChatRequest) -> tuple[str, dict[str, Any]]:
    answer = await openai_client.chat_completion(services.chat_http, served, request)
    choices = answer.get("choices") or [{}]
    content = (choices[0].get("message") or {}).get("content") or ""
    return content, answer


async def smoke_test(services: Services, served: ServedModel, profile: Profile, *, max_tokens: int) -> SmokeOutcome:
    """Send the smoke prompt, classify the raw answer, record the verdict on the profile."""
    params = generation_params(profile, {"max_tokens": max_tokens})
    request = ChatRequest(shape_messages(profile, [{"role": "user", "content": SMOKE_PROMPT}]), params)
    raw, _ = await _complete_raw(services, served, request)
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


async def chat_once(
    services: Services, loaded: LoadedModel | None, model: str, messages: list[dict[str, Any]], overrides: dict[str, Any]
) -> ChatAnswer:
    loaded = _require_ready(loaded, model)
    profile = loaded.profile
    params = generation_params(profile, overrides)
    request = ChatRequest(shape_messages(profile, messages), params)
    raw, answer = await _complete_raw(services, loaded.served, request)
    verdict = classify_answer(raw, check_expected_result=False)
    recovered = False
    if not verdict.usable:
        log.info("answer failed classification; retrying once", reason=verdict.reason)
        marker = _leaked_marker(raw)
        stricter = dict(params, temperature=min(params.get("temperature") or 0.0, _RECOVERY_TEMPERATURE))
        if marker:
            stricter["stop"] = [*params.get("stop", []), marker]
            await _learn_stop(services, loaded, marker)
        raw, answer = await _complete_raw(services, loaded.served, ChatRequest(request.messages, stricter))
        recovered = True
    content, reasoning = postprocess_text(services, loaded.profile, raw)
    choice = (answer.get("choices") or [{}])[0]
    return ChatAnswer(content, reasoning, choice.get("finish_reason"), answer.get("usage"), recovered)


async def chat_stream(
    services: Services, loaded: LoadedModel | None, model: str, messages: list[dict[str, Any]], overrides: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """Yield ``{"content": …}`` / ``{"reasoning": …}`` deltas, then ``{"finish_reason": …}``.

    Chunks go out as the engine sends them, held back only as long as a marker split
    across chunks could still need. Recovery happens only when nothing was sent.
    """
    loaded = _require_ready(loaded, model)
    profile = loaded.profile
    params = generation_params(profile, overrides)
    request = ChatRequest(shape_messages(profile, messages), params)
    registry = services.plugins.postprocessors()
    processor: StreamPostprocessor | HarmonyStreamPostprocessor = (
        HarmonyStreamPostprocessor(profile.postprocess, registry)
        if _is_harmony(profile)
        else StreamPostprocessor(profile.postprocess, registry)
    )
    raw_parts: list[str] = []
    sent_anything = False
    finish_reason = None
    async for chunk in openai_client.stream_chat_completion(services.chat_http, loaded.served, request):
        raw_parts.append(chunk.content)
        finish_reason = chunk.finish_reason or finish_reason
        for delta in _deltas(processor.feed(chunk.content)):
            sent_anything = True
            yield delta
    for delta in _deltas(processor.finish()):
        sent_anything = True
        yield delta
    raw = "".join(raw_parts)
    if not sent_anything and not classify_answer(raw, check_expected_result=False).usable:
        answer = await chat_once(services, loaded, model, messages, dict(overrides, temperature=_RECOVERY_TEMPERATURE))
        if answer.reasoning:
            yield {"reasoning": answer.reasoning}
        if answer.content:
            yield {"content": answer.content}
        finish_reason = answer.finish_reason
    yield {"finish_reason": finish_reason or "stop"}


def _deltas(output: Any) -> list[dict[str, str]]:
    """Normalise a StreamPostprocessor result (text, or content+reasoning) to deltas."""
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

