"""Compat profiles (SPEC.md §2): how to talk to one model on one engine, and why.

A profile is resolved from five layers, bottom up; a higher layer wins on a field:

    1 family    the 0.3.x family defaults (``FAMILY_DEFAULTS``), chosen by name
    2 model     what the model says of itself (``ModelMetadata``: GGUF header, HF configs)
    3 engine    what the engine adapter needs (the ``ltcai_profile_overrides`` hook)
    4 user      the user's config (``[profiles]``)
    5 learned   what the smoke test and the chat recovery path learned

Each field remembers the highest layer that set it, so ``ltcai profiles show`` can say
*why* a model stops on ``<|im_end|>``. The layer inputs are kept on the profile too, so a
persisted profile can be rebuilt when the config or the smoke test changes one layer.

Stop sequences merge rather than replace, because a stop list is a safety net: each layer
only knows some of the ways a model can run on into the next turn. The rule, per layer:

* ``extra_stop`` (and everything layer 2 derives) *extends*: union, order kept (lower
  layers first), no duplicates, empty strings dropped;
* ``stop`` *replaces* the list built so far (an engine or user who knows better);
  within one layer ``stop`` is applied before ``extra_stop``.

``stop``'s layer is the highest layer that changed the list: a layer that only repeats
stops already there does not claim it.

The layers' inputs come from their own modules: ``_families`` (layer 1), ``_metadata``
(layer 2), ``_overrides`` (coercion of layers 3–5). Pure and synchronous: the GGUF/HF
readers that produce ``ModelMetadata`` live in ``ltcai.engines``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, NamedTuple

from ..errors import InvalidRequest
from ._capabilities import (
    Capabilities,
    capabilities_from_dict,
    capabilities_to_dict,
    untested_capabilities,
    with_capability,
)
from ._families import UNKNOWN_FAMILY, detect_family, family_defaults
from ._metadata import ModelMetadata, family_from_metadata, model_layer
from ._overrides import LAYERED_FIELDS, coerce, normalize_overrides
from ._providers import canonical_engine, profile_key
from ._stops import merge_stops

__all__ = [
    "LAYERS",
    "OVERRIDE_LAYERS",
    "PROFILE_SCHEMA",
    "QUALITY_STATUSES",
    "STATE_FIELDS",
    "Explanation",
    "Profile",
    "ProfileCache",
    "build_profile",
    "learn_from_smoke",
    "rebuild_profile",
    "resolve_family",
]

LAYERS: tuple[str, ...] = ("family", "model", "engine", "user", "learned")
# Layers given as plain ``{field: value}`` mappings (layer 2 comes from ``ModelMetadata``).
OVERRIDE_LAYERS: tuple[str, ...] = ("engine", "user", "learned")
QUALITY_STATUSES: tuple[str, ...] = ("ok", "degraded", "failed", "unknown")
STATE_FIELDS: tuple[str, ...] = (
    "loaded",
    "chat_compatible",
    "quality_status",
    "last_test_error",
    "validated_at",
)
PROFILE_SCHEMA = 1


class Explanation(NamedTuple):
    field: str
    value: Any
    layer: str


@dataclass(frozen=True)
class Profile:
    """A resolved profile: the values, the layer each came from, the inputs, and test state."""

    model_id: str
    engine: str | None
    family: str
    supports_system: bool
    vision: bool
    template: str
    chat_template: str | None
    preferred_engines: tuple[str, ...]
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]
    no_draft: bool
    postprocess: tuple[str, ...]
    # State: optimistic until a smoke test fails (0.3.x); quality_status says if it ran.
    loaded: bool = False
    chat_compatible: bool = True
    quality_status: str = "unknown"
    last_test_error: str | None = None
    validated_at: str | None = None
    # field -> layer that set it, for every name in LAYERED_FIELDS.
    layers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    # The layer inputs, kept so a persisted profile can be rebuilt (rebuild_profile).
    metadata: ModelMetadata | None = None
    overrides: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    # What probes measured, per capability (untested until one ran); kept across rebuilds.
    capabilities: Capabilities = field(default_factory=untested_capabilities, hash=False)

    @property
    def key(self) -> str:
        return profile_key(self.model_id, self.engine)

    def source_of(self, name: str) -> str:
        """The layer that set ``name``; ``"state"`` for test/load state, which no layer sets."""
        if name in STATE_FIELDS:
            return "state"
        try:
            return self.layers[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a profile field") from None

    def explain(self) -> list[Explanation]:
        """Every field with its value and the layer it came from, for ``ltcai profiles show``."""
        names = LAYERED_FIELDS + STATE_FIELDS
        return [Explanation(n, getattr(self, n), self.source_of(n)) for n in names]

    def with_state(self, **changes: Any) -> Profile:
        """A copy with state fields changed (``loaded=True`` after a load); layered ones refuse."""
        bad = set(changes) - set(STATE_FIELDS)
        if bad:
            raise ValueError(f"not state fields: {sorted(bad)}; rebuild_profile changes layers")
        if changes.get("quality_status", self.quality_status) not in QUALITY_STATUSES:
            raise ValueError(f"quality_status must be one of {QUALITY_STATUSES}")
        return replace(self, **changes)

    def with_capability(
        self, key: str, status: str, reason: str, measured_at: str | datetime | None
    ) -> Profile:
        """A copy with one capability's verdict recorded (``chat``, ``stream``, ``tools``…)."""
        return replace(self, capabilities=with_capability(self.capabilities, key, status, reason, measured_at))

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form the daemon persists (lists for tuples, sorted-key friendly)."""
        return {
            "schema": PROFILE_SCHEMA,
            "key": self.key,
            "model_id": self.model_id,
            "engine": self.engine,
            "fields": {
                n: {"value": _jsonable(getattr(self, n)), "layer": self.layers[n]} for n in LAYERED_FIELDS
            },
            "state": {n: getattr(self, n) for n in STATE_FIELDS},
            "capabilities": capabilities_to_dict(self.capabilities),
            "inputs": {
                "metadata": self.metadata.to_dict() if self.metadata else None,
                **{name: _jsonable(dict(self.overrides.get(name, {}))) for name in OVERRIDE_LAYERS},
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """A persisted profile back; a damaged document raises ``ValueError`` saying what broke.

        ValueError rather than an ``LtcaiError``: no user sent it; the daemon logs it and
        rebuilds the profile from its layers.
        """
        try:
            return _profile_from_dict(data)
        except (KeyError, TypeError, AttributeError, ValueError, InvalidRequest) as exc:
            raise ValueError(f"stored profile is not readable: {exc!r}") from exc


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _profile_from_dict(data: Mapping[str, Any]) -> Profile:
    if data.get("schema") != PROFILE_SCHEMA:
        raise ValueError(f"unsupported profile schema {data.get('schema')!r}")
    stored = data["fields"]
    values = {n: coerce("stored", n, stored[n]["value"]) for n in LAYERED_FIELDS}
    layers = {n: stored[n]["layer"] for n in LAYERED_FIELDS}
    if not set(layers.values()) <= set(LAYERS):
        raise ValueError(f"unknown layer in {layers}")
    state = {n: data["state"][n] for n in STATE_FIELDS}
    inputs = data["inputs"]
    metadata = ModelMetadata.from_dict(inputs["metadata"]) if inputs.get("metadata") else None
    overrides = {layer: normalize_overrides(layer, inputs.get(layer)) for layer in OVERRIDE_LAYERS}
    profile = Profile(
        model_id=data["model_id"],
        engine=canonical_engine(data.get("engine")),
        **values,
        layers=MappingProxyType(layers),
        metadata=metadata,
        overrides=MappingProxyType(overrides),
        capabilities=capabilities_from_dict(data.get("capabilities")),  # absent before they existed
    )
    return profile.with_state(**state)


# --------------------------------------------------------------------------- building


def resolve_family(
    model_id: str,
    metadata: ModelMetadata | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[str, str]:
    """``(family, layer)``: by name (layer "family"); metadata only corrects an ``unknown``.

    An engine/user/learned override of ``family`` wins over both (it also picks the row).
    """
    family, layer = detect_family(model_id), "family"
    if family == UNKNOWN_FAMILY and metadata is not None:
        corrected = family_from_metadata(metadata)
        if corrected:
            family, layer = corrected, "model"
    for name in OVERRIDE_LAYERS:
        chosen = (overrides or {}).get(name, {}).get("family")
        if chosen:
            family, layer = chosen, name
    return family, layer


def _apply_layer(
    values: dict[str, Any], layers: dict[str, str], layer: str, overrides: Mapping[str, Any]
) -> None:
    if "stop" in overrides:
        values["stop"], layers["stop"] = merge_stops(overrides["stop"]), layer
    if "extra_stop" in overrides:
        merged = merge_stops(values["stop"], overrides["extra_stop"])
        if merged != values["stop"]:
            values["stop"], layers["stop"] = merged, layer
    for key, value in overrides.items():
        if key not in ("family", "stop", "extra_stop"):
            values[key], layers[key] = value, layer


def _resolve(
    model_id: str,
    metadata: ModelMetadata | None,
    overrides: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, Any], dict[str, str]]:
    family, family_layer = resolve_family(model_id, metadata, overrides)
    values: dict[str, Any] = {**family_defaults(family), "chat_template": None, "family": family}
    layers = {n: "family" for n in LAYERED_FIELDS}
    layers["family"] = family_layer
    _apply_layer(values, layers, "model", model_layer(metadata))
    for name in OVERRIDE_LAYERS:
        _apply_layer(values, layers, name, overrides[name])
    return values, layers


def build_profile(
    model_id: str,
    engine: str | None = None,
    *,
    metadata: ModelMetadata | None = None,
    engine_overrides: Mapping[str, Any] | None = None,
    user_overrides: Mapping[str, Any] | None = None,
    learned: Mapping[str, Any] | None = None,
) -> Profile:
    """Resolve the five layers for ``model_id`` on ``engine``; state starts untested."""
    if not isinstance(model_id, str) or not model_id:
        raise InvalidRequest("a profile needs a model id", code="invalid_model_id")
    overrides = {
        "engine": normalize_overrides("engine", engine_overrides),
        "user": normalize_overrides("user", user_overrides),
        "learned": normalize_overrides("learned", learned),
    }
    values, layers = _resolve(model_id, metadata, overrides)
    return Profile(
        model_id=model_id,
        engine=canonical_engine(engine),
        **values,
        layers=MappingProxyType(layers),
        metadata=metadata,
        overrides=MappingProxyType(overrides),
    )


_UNCHANGED: Any = object()


def rebuild_profile(
    profile: Profile,
    *,
    metadata: ModelMetadata | None = _UNCHANGED,
    engine_overrides: Mapping[str, Any] | None = _UNCHANGED,
    user_overrides: Mapping[str, Any] | None = _UNCHANGED,
    learned: Mapping[str, Any] | None = _UNCHANGED,
) -> Profile:
    """Re-resolve ``profile`` with some layers replaced (config reload, new metadata); keeps
    state and measured capabilities."""

    def pick(new: Any, old: Any) -> Any:
        return old if new is _UNCHANGED else new

    rebuilt = build_profile(
        profile.model_id,
        profile.engine,
        metadata=pick(metadata, profile.metadata),
        engine_overrides=pick(engine_overrides, profile.overrides.get("engine")),
        user_overrides=pick(user_overrides, profile.overrides.get("user")),
        learned=pick(learned, profile.overrides.get("learned")),
    )
    rebuilt = replace(rebuilt, capabilities=profile.capabilities)
    return rebuilt.with_state(**{n: getattr(profile, n) for n in STATE_FIELDS})


def _iso(moment: str | datetime | None) -> str | None:
    return moment.isoformat() if isinstance(moment, datetime) else moment


def learn_from_smoke(
    profile: Profile,
    verdict_status: str,
    reason: str | None,
    leaked_marker: str | None,
    validated_at: str | datetime | None,
) -> Profile:
    """Record a smoke-test verdict (SPEC.md §4) and learn a leaked marker as a stop (layer 5).

    The marker is kept in the learned layer even when it already is a stop, so it survives
    a user ``stop`` that later replaces the list. ``last_test_error`` is None when usable.
    A verdict (a ``reason``: the classifier always gives one) is the ``chat`` capability's
    measurement; ``reason=None`` only learns the marker (the chat recovery path).
    """
    if verdict_status not in ("ok", "degraded", "failed"):
        raise ValueError(f"verdict status must be ok, degraded or failed, got {verdict_status!r}")
    if leaked_marker and leaked_marker.strip():
        learned = dict(profile.overrides.get("learned", {}))
        learned["extra_stop"] = merge_stops(learned.get("extra_stop", ()), (leaked_marker,))
        profile = rebuild_profile(profile, learned=learned)
    usable = verdict_status != "failed"
    if reason is not None:
        profile = profile.with_capability("chat", verdict_status, reason, validated_at)
    return profile.with_state(
        chat_compatible=usable,
        quality_status=verdict_status,
        last_test_error=None if usable else (reason or verdict_status),
        validated_at=_iso(validated_at),
    )


# --------------------------------------------------------------------------- cache


class ProfileCache:
    """Profiles by key (SPEC.md §2). Owned by the daemon and passed down; never a global."""

    def __init__(self, profiles: Iterable[Profile] = ()) -> None:
        self._profiles: dict[str, Profile] = {}
        for profile in profiles:
            self.put(profile)

    def get(self, model_id: str, engine: str | None = None) -> Profile | None:
        return self._profiles.get(profile_key(model_id, engine))

    def by_key(self, key: str) -> Profile | None:
        """Look up by the ``engine:model_id`` key itself (what ``ltcai profiles forget`` gets)."""
        return self._profiles.get(key)

    def put(self, profile: Profile) -> Profile:
        self._profiles[profile.key] = profile
        return profile

    def forget(self, model_id: str, engine: str | None = None) -> bool:
        """Drop a profile; True if there was one."""
        return self._profiles.pop(profile_key(model_id, engine), None) is not None

    def ensure_profile(self, model_id: str, engine: str | None = None, **layers: Any) -> Profile:
        """The cached profile, or one built from ``layers`` (``build_profile``'s keywords), cached."""
        cached = self.get(model_id, engine)
        if cached is not None:
            return cached
        return self.put(build_profile(model_id, engine, **layers))

    def items(self) -> list[tuple[str, Profile]]:
        return sorted(self._profiles.items())

    def __len__(self) -> int:
        return len(self._profiles)

    def __contains__(self, key: object) -> bool:
        return key in self._profiles

    def __iter__(self) -> Iterator[Profile]:
        return iter(list(self._profiles.values()))
