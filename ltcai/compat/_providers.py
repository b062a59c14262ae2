"""Engine and provider names, their aliases, the one rule for a provider prefix, and the
profile key built from them.

Every module that needs to know whether ``ollama:`` in ``ollama:llama3.2:1b`` is a
provider (and ``llama3.2:`` in ``llama3.2:1b`` is not) asks this module.
"""

from __future__ import annotations

__all__ = [
    "ENGINE_ALIASES",
    "KNOWN_PROVIDERS",
    "LOCAL_ENGINES",
    "REMOTE_PROVIDERS",
    "canonical_engine",
    "normalize_engine",
    "profile_key",
    "split_provider_prefix",
]

# Engines that run on this workstation.
LOCAL_ENGINES: tuple[str, ...] = ("mlx", "ollama", "vllm", "lmstudio", "llamacpp")
# Hosted OpenAI-compatible providers (smoke test and chat only).
REMOTE_PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "openrouter", "groq", "together")
KNOWN_PROVIDERS: tuple[str, ...] = LOCAL_ENGINES + REMOTE_PROVIDERS

# Other spellings users (and the 0.3.x release, which named mlx ``local_mlx``) write.
ENGINE_ALIASES: dict[str, str] = {
    "local_mlx": "mlx",
    "local-mlx": "mlx",
    "llama.cpp": "llamacpp",
    "llama-cpp": "llamacpp",
    "lm-studio": "lmstudio",
    "lmstudio:openai-compatible": "lmstudio",
}

# Longest first, so ``lmstudio:openai-compatible:`` wins over ``lmstudio:``.
_PREFIXES: tuple[tuple[str, str], ...] = tuple(
    sorted(
        [(name + ":", name) for name in KNOWN_PROVIDERS]
        + [(alias + ":", engine) for alias, engine in ENGINE_ALIASES.items()],
        key=lambda pair: len(pair[0]),
        reverse=True,
    )
)


def normalize_engine(name: str | None) -> str | None:
    """The canonical engine name for ``name`` (any case, aliases allowed), or None if unknown."""
    if not name:
        return None
    key = name.strip().lower()
    if key in KNOWN_PROVIDERS:
        return key
    return ENGINE_ALIASES.get(key)


def split_provider_prefix(model_id: str) -> tuple[str | None, str]:
    """Split a leading *known* provider prefix off ``model_id``.

    ``ollama:gpt-oss:20b`` -> ``("ollama", "gpt-oss:20b")``; ``llama3.2:1b`` ->
    ``(None, "llama3.2:1b")`` because ``llama3.2`` names no provider (an Ollama tag).
    """
    lowered = model_id.lower()
    for prefix, engine in _PREFIXES:
        if lowered.startswith(prefix):
            return engine, model_id[len(prefix) :]
    return None, model_id


def canonical_engine(engine: str | None) -> str | None:
    """Built-ins and aliases fold to one spelling; a plugin's engine keeps its own, lower-cased."""
    if engine is None or not engine.strip():
        return None
    return normalize_engine(engine) or engine.strip().lower()


def profile_key(model_id: str, engine: str | None = None) -> str:
    """``engine:model_id``, or just ``model_id`` with no engine (the 0.3.x profile cache key)."""
    canonical = canonical_engine(engine)
    return f"{canonical}:{model_id}" if canonical else model_id
