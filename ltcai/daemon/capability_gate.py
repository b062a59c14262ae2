"""What the measured capabilities (``probes``) mean for clients: a request that needs one
the probe found ``failed`` is refused with the reason, and the model listings show them.

A refusal is a 400 before anything reaches the engine: a model whose tool probe failed
would answer a tools request with prose or broken JSON, which a client cannot tell from a
real answer. ``untested`` and ``degraded`` are let through: only a measured failure refuses.
"""

from __future__ import annotations

from typing import Any

from ..compat import Profile, capabilities_to_dict, untested_capabilities
from ..errors import ErrorCode, FieldError
from .models import LoadedModel
from .validation import ChatCall, check_model_sees

__all__ = ["check_call", "measured_map", "needed_capabilities", "ollama_capabilities"]

# Which request field needs which capability, and the words a refusal uses for it.
_PARAM = {"tools": "tools", "json_schema": "response_format", "vision": "messages"}
_WHAT = {"tools": "tool calls", "json_schema": "a JSON schema response_format", "vision": "images"}
# Ollama's capability words for ours (its /api/show "capabilities" list).
_OLLAMA_WORDS = {"chat": "completion", "tools": "tools", "embeddings": "embedding", "vision": "vision"}


def needed_capabilities(call: ChatCall) -> list[str]:
    needed = []
    if call.wants_tools:
        needed.append("tools")
    response_format = call.fields.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        needed.append("json_schema")
    if call.has_images:
        needed.append("vision")
    return needed


def check_call(call: ChatCall, loaded: LoadedModel) -> None:
    """Refuse what the ready model cannot do: images it cannot see, a capability its probe
    found failed (for ``model_access.ready_in_use``'s ``check``)."""
    check_model_sees(call, call.model, vision=loaded.profile.vision)
    for key in needed_capabilities(call):
        verdict = loaded.profile.capabilities[key]
        if verdict.status == "failed":
            when = (verdict.measured_at or "")[:10] or "an earlier prepare"
            raise FieldError(
                f"{call.model} cannot be trusted with {_WHAT[key]}: its {key} probe failed on {when}: {verdict.reason}",
                param=_PARAM[key],
                code=ErrorCode.CAPABILITY_FAILED,
                hint=(
                    f"leave {_PARAM[key]!r} out, or prepare again with `ltcai prepare {call.model} --probe` "
                    "after changing its engine, quantisation or chat template"
                ),
            )


def measured_map(profile: Profile | None) -> dict[str, dict[str, Any]]:
    """A profile's verdicts as clients see them; every one untested while no profile is cached."""
    return capabilities_to_dict(profile.capabilities if profile is not None else untested_capabilities())


def ollama_capabilities(declared: tuple[str, ...] | list[str], profile: Profile | None) -> list[str]:
    """Ollama's list: what the engine declares, less what a probe found failed, plus what a
    probe found working that the engine did not declare."""
    found = list(declared)
    if profile is None:
        return found
    for key, word in _OLLAMA_WORDS.items():
        verdict = profile.capabilities[key]
        if verdict.status == "failed" and word in found:
            found.remove(word)
        elif verdict.usable and word not in found:
            found.append(word)
    return found
