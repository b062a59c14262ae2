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


_ENV_SCALARS: dict[str, tuple[str, type]] = {
    "LTCAI_DEFAULT_ENGINE": ("default_engine", str),
    "LTCAI_LOG_LEVEL": ("log_level", str),
    "LTCAI_SHUTDOWN_GRACE_S": ("shutdown_grace_s", float),
    "LTCAI_STALL_TIMEOUT_S": ("stall_timeout_s", float),
    "LTCAI_HTTP": ("http", str),
}


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
        updates[key] = value

    for var, (name, kind) in _ENV_SCALARS.items():
        if env.get(var):
            updates[name] = _coerce(name, env[var], kind, var)
    if env.get("LTCAI_DISABLE_PLUGINS"):
        updates["disable_plugins"] = tuple(
            p.strip() for p in env["LTCAI_DISABLE_PLUGINS"].split(",") if p.strip()
        )
    return replace(settings, **updates)
