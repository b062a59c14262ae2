"""Coercing profile overrides (engine, user config, learned, stored, request) to their
canonical types, with an error that names the layer and the key; and the user's layer
picked out of the config's ``[profiles]`` table.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..errors import InvalidRequest
from ._providers import canonical_engine, profile_key

__all__ = ["LAYERED_FIELDS", "OVERRIDE_KEYS", "coerce", "normalize_overrides", "select_user_overrides"]

# The fields a layer may set, each resolved on its own (``Profile.layers`` names the winner).
LAYERED_FIELDS: tuple[str, ...] = (
    "family",
    "supports_system",
    "vision",
    "template",
    "chat_template",
    "preferred_engines",
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "no_draft",
    "postprocess",
)
# ``extra_stop`` adds to the stops instead of replacing them (see ``_profiles``).
OVERRIDE_KEYS: tuple[str, ...] = LAYERED_FIELDS + ("extra_stop",)


def _fail(layer: str, key: str, why: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"profile {layer} override {key!r} {why}, got {value!r}",
        code="invalid_profile_override",
        hint=f"valid keys: {', '.join(OVERRIDE_KEYS)}",
    )


def _text_tuple(layer: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _fail(layer, key, "must be a list of strings", value)
    return tuple(value)


def _number(layer: str, key: str, value: Any, low: float, high: float, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(layer, key, "must be a number", value)
    if value < low or value > high or (low_open and value == low):
        raise _fail(layer, key, f"must be in {'(' if low_open else '['}{low}, {high}]", value)
    return float(value)


def coerce(layer: str, key: str, value: Any) -> Any:
    """One override value in its canonical type, or a clear error naming layer and key."""
    if key in ("supports_system", "vision", "no_draft"):
        if not isinstance(value, bool):
            raise _fail(layer, key, "must be true or false", value)
        return value
    if key in ("stop", "extra_stop", "postprocess"):
        return _text_tuple(layer, key, value)
    if key == "preferred_engines":
        return tuple(canonical_engine(e) or e for e in _text_tuple(layer, key, value))
    if key == "temperature":
        return _number(layer, key, value, 0.0, 2.0, low_open=False)
    if key == "top_p":
        return _number(layer, key, value, 0.0, 1.0, low_open=True)
    if key == "max_tokens":
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _fail(layer, key, "must be a positive integer", value)
        return value
    if key == "chat_template":
        if value is not None and not isinstance(value, str):
            raise _fail(layer, key, "must be a string or null", value)
        return value
    if key in ("family", "template"):
        if not isinstance(value, str) or not value.strip():
            raise _fail(layer, key, "must be a non-empty string", value)
        return value.strip().lower() if key == "family" else value.strip()
    raise _fail(layer, key, "is not a profile field", value)


def normalize_overrides(layer: str, overrides: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A frozen, validated copy; a None value means "not set" (TOML/JSON nulls)."""
    if overrides is None:
        return MappingProxyType({})
    if not isinstance(overrides, Mapping):
        raise InvalidRequest(
            f"profile {layer} overrides must be a mapping of field to value, got {overrides!r}",
            code="invalid_profile_override",
        )
    return MappingProxyType({k: coerce(layer, k, v) for k, v in overrides.items() if v is not None})


def select_user_overrides(
    table: Mapping[str, Mapping[str, Any]] | None, model_id: str, engine: str | None = None
) -> dict[str, Any]:
    """Layer 4 for one profile from the config's ``[profiles]`` table.

    An entry under the bare model id applies on every engine; one under ``engine:model_id``
    is more specific and wins field by field.
    """
    table = table or {}
    merged = dict(table.get(model_id) or {})
    key = profile_key(model_id, engine)
    if key != model_id:
        merged.update(table.get(key) or {})
    return merged
