"""Settings: the user's TOML file, then ``LTCAI_*`` environment variables on top.

The file is optional; every setting has a default that works on a fresh machine.
``config/ltcai.example.toml`` documents each key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import InvalidRequest
from .paths import Paths, default_paths
from .units import MemoryBudget, parse_keep_alive, parse_memory_budget

__all__ = ["Settings", "load_settings"]


@dataclass(frozen=True)
class Settings:
    paths: Paths
    # Engine used when neither the id nor the request names one (None: platform default).
    default_engine: str | None = None
    log_level: str = "info"
    # Seconds the daemon lets running streams finish after SIGTERM before it stops engines.
    shutdown_grace_s: float = 10.0
    # A prepare step that reports no progress for this long fails (stall, not total time).
    stall_timeout_s: float = 300.0
    # Largest accepted request body on the control API.
    max_body_bytes: int = 1 << 20
    # ``host:port`` to also serve the API on loopback TCP (behind a bearer token).
    http: str | None = None
    # Serve Ollama's /api on that TCP listener without the token, for Ollama clients that
    # cannot send a header. Loopback only; ``ltcai status`` warns while it is on.
    ollama_without_token: bool = False
    # Folders (besides ltcai's models dir and the HF cache) that local model paths may be in.
    model_dirs: tuple[str, ...] = ()
    # Plugins blocked by name (also LTCAI_DISABLE_PLUGINS, comma separated).
    disable_plugins: tuple[str, ...] = ()
    # {short name: {engine: real id}}: the user's own aliases, merged over the built-ins.
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    # {profile key or model id: {field: value}}: layer 4 of the compat profile.
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per-engine options, e.g. {"llamacpp": {"n_ctx": 2048, "python": "/path/python"}}.
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Seconds an idle model stays loaded (Ollama's keep_alive; inf: never unload, 0: after each request).
    keep_alive: float = 300.0
    # Most models with an engine process of ltcai's loaded at once (0: no limit).
    max_loaded_models: int = 0
    # What the served models may use together; LRU idle models are evicted to stay under it.
    memory_budget: MemoryBudget = MemoryBudget(share=0.8)
    # The same for GPU memory (NVIDIA, via nvidia-smi), where llama.cpp offloads layers to it;
    # the 10% left holds llama.cpp's compute buffers there (not in the estimate) and the display's.
    gpu_memory_budget: MemoryBudget = MemoryBudget(share=0.9)
    # Requests that may wait for a busy model's slot; past it, 429 with Retry-After.
    max_queue: int = 16
    # {model id, alias or "engine:model": {keep_alive, pin}}: per-model lifecycle settings.
    models: dict[str, dict[str, Any]] = field(default_factory=dict)


_ENV_SCALARS: dict[str, tuple[str, type]] = {
    "LTCAI_DEFAULT_ENGINE": ("default_engine", str),
    "LTCAI_LOG_LEVEL": ("log_level", str),
    "LTCAI_SHUTDOWN_GRACE_S": ("shutdown_grace_s", float),
    "LTCAI_STALL_TIMEOUT_S": ("stall_timeout_s", float),
    "LTCAI_HTTP": ("http", str),
    "LTCAI_MAX_LOADED_MODELS": ("max_loaded_models", int),
    "LTCAI_MAX_QUEUE": ("max_queue", int),
}
# Settings written in a unit of their own, parsed (and checked) by these.
_PARSED: dict[str, Any] = {
    "keep_alive": parse_keep_alive,
    "memory_budget": parse_memory_budget,
    "gpu_memory_budget": lambda value, origin: parse_memory_budget(value, origin, "gpu_memory_budget"),
}
_ENV_PARSED = {
    "LTCAI_KEEP_ALIVE": "keep_alive",
    "LTCAI_MEMORY_BUDGET": "memory_budget",
    "LTCAI_GPU_MEMORY_BUDGET": "gpu_memory_budget",
}
_MODEL_KEYS = {"keep_alive", "pin"}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(
            f"config file {path} is not valid TOML: {exc}",
            hint="fix the file or move it aside; see config/ltcai.example.toml",
            code="invalid_config",
        ) from exc


def _coerce(name: str, value: Any, kind: type, origin: str) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(
            f"{origin}: {name} must be a {kind.__name__}, got {value!r}", code="invalid_config"
        ) from exc


def load_settings(env: dict[str, str] | None = None, *, paths: Paths | None = None) -> Settings:
    """Settings from the config file and ``env`` (default: the process environment)."""
    env = dict(os.environ) if env is None else env
    paths = paths or default_paths(env)
    settings = Settings(paths=paths)
    known = {f.name: f for f in fields(Settings) if f.name != "paths"}

    raw = _read_toml(paths.config_file)
    updates: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise InvalidRequest(
                f"{paths.config_file}: unknown setting {key!r}",
                hint="known settings: " + ", ".join(sorted(known)),
                code="invalid_config",
            )
        if key in ("disable_plugins", "model_dirs"):
            value = tuple(value)
        elif key in _PARSED:
            value = _PARSED[key](value, f"{paths.config_file}: {key}")
        elif key == "models":
            value = _model_settings(value, f"{paths.config_file}: models")
        elif key in ("max_loaded_models", "max_queue"):
            value = _count(key, value, str(paths.config_file))
        updates[key] = value

    for var, (name, kind) in _ENV_SCALARS.items():
        if env.get(var):
            updates[name] = _coerce(name, env[var], kind, var)
            if name in ("max_loaded_models", "max_queue"):
                _count(name, updates[name], var)
    for var, name in _ENV_PARSED.items():
        if env.get(var):
            updates[name] = _PARSED[name](env[var], var)
    if env.get("LTCAI_DISABLE_PLUGINS"):
        updates["disable_plugins"] = tuple(
            p.strip() for p in env["LTCAI_DISABLE_PLUGINS"].split(",") if p.strip()
        )
    return replace(settings, **updates)


def _count(name: str, value: Any, origin: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"{origin}: {name} must be a whole number, 0 or more, got {value!r}", code="invalid_config")
    return value


def _model_settings(raw: Any, origin: str) -> dict[str, dict[str, Any]]:
    """``[models."id"]`` tables checked, with keep_alive parsed to seconds."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{origin} must be a table of model ids", code="invalid_config")
    checked: dict[str, dict[str, Any]] = {}
    for model, entry in raw.items():
        where = f"{origin}.{model!r}"
        if not isinstance(entry, dict) or not set(entry) <= _MODEL_KEYS:
            raise InvalidRequest(
                f"{where}: only {', '.join(sorted(_MODEL_KEYS))} can be set per model, got {entry!r}",
                code="invalid_config",
            )
        item: dict[str, Any] = {}
        if "keep_alive" in entry:
            item["keep_alive"] = parse_keep_alive(entry["keep_alive"], f"{where}.keep_alive")
        if "pin" in entry:
            if not isinstance(entry["pin"], bool):
                raise InvalidRequest(f"{where}.pin must be true or false", code="invalid_config")
            item["pin"] = entry["pin"]
        checked[str(model)] = item
    return checked
