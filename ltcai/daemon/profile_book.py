"""The daemon's profiles: the pure ProfileCache plus persistence.

Layers come from ``core.layered_profile`` (metadata the runner read from the model,
engine overrides, user overrides) and the smoke test (learned). Every change is written
to ``state/profiles.json``.
"""

from __future__ import annotations

from typing import Any

import structlog

from ..compat import ModelMetadata, Profile, ProfileCache, rebuild_profile, select_user_overrides
from ..core import layered_profile
from ..plugins import PluginHost
from .store import StateStore

__all__ = ["ProfileBook"]

log = structlog.get_logger(__name__)

DOCUMENT = "profiles"


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
