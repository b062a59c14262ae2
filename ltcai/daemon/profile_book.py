"""The daemon's profiles: the pure ProfileCache plus persistence and the layers' sources.

Layer sources: metadata (the model file, read by the runner), engine overrides (the
``ltcai_profile_overrides`` hook), user overrides (the config's ``[profiles]`` table),
learned (the smoke test). Every change is written to ``state/profiles.json``.
"""

from __future__ import annotations

from typing import Any

import structlog

from ..compat import (
    ModelMetadata,
    Profile,
    ProfileCache,
    build_profile,
    rebuild_profile,
    resolve_family,
    select_user_overrides,
)
from ..plugins import PluginHost
from .store import StateStore

__all__ = ["ProfileBook", "layered_profile"]

log = structlog.get_logger(__name__)

DOCUMENT = "profiles"


def layered_profile(
    plugins: PluginHost,
    user_table: dict[str, dict[str, Any]],
    model_id: str,
    engine: str | None,
    metadata: ModelMetadata | None,
    cached: Profile | None = None,
) -> Profile:
    """A profile from every layer but the learned one, keeping what ``cached`` learned."""
    family, _layer = resolve_family(model_id, metadata)
    engine_overrides = plugins.profile_overrides(model_id=model_id, engine=engine, family=family)
    user = select_user_overrides(user_table, model_id, engine)
    if cached is not None:
        return rebuild_profile(cached, metadata=metadata, engine_overrides=engine_overrides, user_overrides=user)
    return build_profile(model_id, engine, metadata=metadata, engine_overrides=engine_overrides, user_overrides=user)


class ProfileBook:
    def __init__(self, store: StateStore, plugins: PluginHost, user_table: dict[str, dict[str, Any]]) -> None:
        self.store = store
        self.plugins = plugins
        self.user_table = user_table
        self.cache = ProfileCache()

    async def restore(self) -> None:
        document = await self.store.read(DOCUMENT, default={}) or {}
        if not isinstance(document, dict):  # valid JSON of the wrong shape: nothing usable
            log.warning("profiles state is not a JSON object; ignored", found=type(document).__name__)
            return
        for key, data in document.items():
            try:
                self.cache.put(Profile.from_dict(data))
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("unreadable profile skipped", key=key, error=str(exc))

    async def save(self) -> None:
        await self.store.save(DOCUMENT, {key: profile.to_dict() for key, profile in self.cache.items()})

    def get(self, model_id: str, engine: str | None) -> Profile | None:
        return self.cache.get(model_id, engine)

    def build(self, model_id: str, engine: str | None, metadata: ModelMetadata | None) -> Profile:
        cached = self.cache.get(model_id, engine)
        return layered_profile(self.plugins, self.user_table, model_id, engine, metadata, cached)

    def ensure(self, model_id: str, engine: str | None) -> Profile:
        cached = self.cache.get(model_id, engine)
        return cached if cached is not None else self.cache.put(self.build(model_id, engine, None))

    async def put(self, profile: Profile) -> Profile:
        self.cache.put(profile)
        await self.save()
        return profile

    async def forget(self, key: str) -> bool:
        model_id, engine = _split_key(key, self.cache)
        removed = self.cache.forget(model_id, engine)
        if removed:
            await self.save()
        return removed

    def reload_user_table(self, table: dict[str, dict[str, Any]]) -> None:
        self.user_table = table
        for _key, profile in self.cache.items():
            user = select_user_overrides(table, profile.model_id, profile.engine)
            self.cache.put(rebuild_profile(profile, user_overrides=user))


def _split_key(key: str, cache: ProfileCache) -> tuple[str, str | None]:
    for existing_key, profile in cache.items():
        if existing_key == key:
            return profile.model_id, profile.engine
    return key, None
