"""The layered profile (SPEC.md §2) built from its sources, and its views for clients."""

from __future__ import annotations

from typing import Any

from ..compat import ModelMetadata, Profile, build_profile, rebuild_profile, resolve_family, select_user_overrides
from ..plugins import PluginHost

__all__ = ["explain_rows", "layered_profile", "profile_view"]


def layered_profile(
    plugins: PluginHost,
    user_table: dict[str, dict[str, Any]],
    model_id: str,
    engine: str | None,
    metadata: ModelMetadata | None,
    cached: Profile | None = None,
) -> Profile:
    """A profile from every layer but the learned one, keeping what ``cached`` learned.

    Layer sources: ``metadata`` (what the model file or folder says about itself), engine
    overrides (the ``ltcai_profile_overrides`` hook), user overrides (the config's
    ``[profiles]`` table).
    """
    family, _layer = resolve_family(model_id, metadata)
    engine_overrides = plugins.profile_overrides(model_id=model_id, engine=engine, family=family)
    user = select_user_overrides(user_table, model_id, engine)
    if cached is not None:
        return rebuild_profile(cached, metadata=metadata, engine_overrides=engine_overrides, user_overrides=user)
    return build_profile(model_id, engine, metadata=metadata, engine_overrides=engine_overrides, user_overrides=user)


def profile_view(profile: Profile) -> dict[str, Any]:
    """A profile flat, for clients: its key, every field's value, its test state and its
    measured capabilities (each with status, reason and when)."""
    document = profile.to_dict()
    return {
        "key": document["key"],
        "model_id": document["model_id"],
        "engine": document["engine"],
        **{name: entry["value"] for name, entry in document["fields"].items()},
        **document["state"],
        "capabilities": document["capabilities"],
    }


def explain_rows(profile: Profile) -> list[dict[str, Any]]:
    """Every field with its value and the layer it came from, in the profile's order."""
    return [{"field": field, "value": value, "layer": layer} for field, value, layer in profile.explain()]
