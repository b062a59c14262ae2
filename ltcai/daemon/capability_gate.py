"""What the measured capabilities (``probes``) mean for clients: a request that needs one
the probe found ``failed`` is refused with the reason, and the model listings show them.

A refusal is a 400 before anything reaches the engine: a model whose tool probe failed
would answer a tools request with prose or broken JSON, which a client cannot tell from a
real answer. ``untested`` and ``degraded`` are let through: only a measured failure refuses.

A capability never measured is probed on first use (issue 14 item 5, "lazily"): the first
request that needs it starts its probe in the background and goes on at once; the verdict
lands on the profile, so a later request is refused if the probe found it failed. The
default prepare stays one completion.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from weakref import WeakKeyDictionary

import structlog

from ..compat import Profile, capabilities_to_dict, untested_capabilities
from ..errors import ErrorCode, FieldError
from . import probes
from .models import LoadedModel, ModelRegistry
from .services import Services
from .validation import ChatCall, check_model_sees

__all__ = [
    "PROBE_HEADER",
    "check_call",
    "measured_map",
    "needed_capabilities",
    "ollama_capabilities",
    "probe_on_first_use",
]

log = structlog.get_logger(__name__)

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


def check_call(call: ChatCall, loaded: LoadedModel, services: Services | None = None) -> None:
    """Refuse what the ready model cannot do: images it cannot see, a capability its probe
    found failed (for ``model_access.ready_in_use``'s ``check``). With ``services``, a
    needed capability never measured is probed in the background (:func:`probe_on_first_use`)."""
    check_model_sees(call, call.model, vision=loaded.profile.vision)
    for key in needed_capabilities(call):
        verdict = loaded.profile.capabilities[key]
        if verdict.measured_at is None and services is not None:
            probe_on_first_use(services, loaded, key)
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


# Sent with a probe's requests: an engine's log (or a test's fake engine) can tell them
# from the client's. A short value: openai_client redacts header values of 8+ characters
# from error texts.
PROBE_HEADER = "X-Ltcai-Probe"

# Per registry (one per daemon): the (engine, model, capability) probes running now.
_probing: WeakKeyDictionary[ModelRegistry, set[tuple[str, str, str]]] = WeakKeyDictionary()


def probe_on_first_use(services: Services, loaded: LoadedModel, key: str) -> bool:
    """Start ``key``'s probe on ``loaded`` in the background, unless one is running; the
    caller does not wait. False if none was started."""
    running = _probing.setdefault(services.models, set())
    mark = (*loaded.key, key)
    if mark in running:
        return False
    running.add(mark)
    if not services.models.start_soon(_probe_in_background, services, loaded, key, running, mark):
        running.discard(mark)
        return False
    log.info("probing a capability on first use", capability=key, model=loaded.resolution.resolved_model)
    return True


async def _probe_in_background(
    services: Services, loaded: LoadedModel, key: str, running: set[tuple[str, str, str]], mark: tuple[str, str, str]
) -> None:
    try:
        # On a copy: a model unloaded (or crashed) mid-probe fails it, and that says
        # nothing about the model, so the live one and the book only get a verdict from a
        # model still served when the probe ends.
        trial = replace(loaded, served=replace(loaded.served, headers={**loaded.served.headers, PROBE_HEADER: "1"}))
        await probes.probe_capabilities(services, trial, (key,))
        if services.models.get(*loaded.key) is not loaded or not loaded.ready:
            log.info("capability probe dropped: the model went away meanwhile", capability=key)
            return
        verdict = trial.profile.capabilities[key]
        loaded.profile = loaded.profile.with_capability(key, verdict.status, verdict.reason, verdict.measured_at)
        await services.profiles.put(loaded.profile)
    except Exception:  # a background task must never take the daemon down with it
        log.exception("capability probe on first use crashed", capability=key)
    finally:
        running.discard(mark)
