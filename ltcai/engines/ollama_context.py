"""The context an Ollama model runs with: what ltcai asks for, and what Ollama says it uses.

Ollama keeps its own default context (2048–4096 tokens) unless told otherwise, and
silently drops the start of a longer conversation (ollama#4447, #6286). The Ollama engine
asks for ``n_ctx`` tokens (``[engines.ollama] n_ctx``, default :data:`DEFAULT_N_CTX`),
capped at what the model was trained for: ``/api/show`` gives that in ``model_info`` as
``<architecture>.context_length`` (docs/api.md, "Show Model Information"). What Ollama
really runs a model with is ``context_length`` in its ``/api/ps`` entry (newer versions).
"""

from __future__ import annotations

from typing import Any

import httpx

from ..errors import EngineError
from .base import EngineContext

__all__ = ["DEFAULT_N_CTX", "context_for", "context_in_use", "find_running", "n_ctx"]

# The context ltcai asks Ollama for when [engines.ollama] n_ctx is not set: twice Ollama's
# own default, room for a few tool definitions and a real conversation, and still a KV
# cache of ~1 GiB for an 8B model (a model trained for less gets its own).
DEFAULT_N_CTX = 8192


def n_ctx(options: dict[str, Any]) -> int:
    """``[engines.ollama] n_ctx``, checked."""
    value = options.get("n_ctx", DEFAULT_N_CTX)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise EngineError(
            f"[engines.ollama] n_ctx must be a positive number of tokens, got {value!r}",
            hint=f"e.g. n_ctx = {DEFAULT_N_CTX}",
            code="invalid_config",
        )
    return value


async def context_for(ctx: EngineContext, url: str, model: str, timeout: httpx.Timeout) -> int:
    """The context to load ``model`` with: ``n_ctx``, capped at its trained context."""
    wanted = n_ctx(ctx.options)
    try:
        response = await ctx.http.post(url + "/api/show", json={"model": model}, timeout=timeout)
        info = (response.json().get("model_info") or {}) if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError, AttributeError):
        info = {}  # the load that follows says what is wrong with the server
    trained = info.get(f"{info.get('general.architecture')}.context_length") if isinstance(info, dict) else None
    return min(wanted, trained) if isinstance(trained, int) and trained > 0 else wanted


def find_running(models: list[dict[str, Any]], wanted: str) -> dict[str, Any] | None:
    """The /api/ps entry for ``wanted``: Ollama adds ``:latest`` to an untagged name."""
    keys = {wanted.lower()}
    if ":" not in wanted.rsplit("/", 1)[-1]:
        keys.add(wanted.lower() + ":latest")
    for model in models:
        names = {str(model.get("name") or "").lower(), str(model.get("model") or "").lower()}
        if names & keys:
            return model
    return None


def context_in_use(running: list[dict[str, Any]], model: str) -> int | None:
    """The context Ollama runs ``model`` with, from ``/api/ps``; None when it does not say."""
    entry = find_running(running, model)
    value = entry.get("context_length") if entry is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
