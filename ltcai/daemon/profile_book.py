"""The daemon's profiles: the pure ProfileCache plus persistence.

Layers come from ``core.layered_profile`` (metadata the runner read from the model,
engine overrides, user overrides) and the smoke test (learned). Every change is written
to ``state/profiles.json``. Beside each profile, the last smoke test with the weights and
set-up it was measured on (``smoke_reuse.SmokeRecord``, in ``state/smoke_records.json``):
what lets a just-in-time prepare skip repeating it. Forgetting a profile forgets it too.
"""

from __future__ import annotations

from typing import Any

import structlog

from ..compat import ModelMetadata, Profile, ProfileCache, profile_key, rebuild_profile, select_user_overrides
from ..core import layered_profile
from ..plugins import PluginHost
from .smoke_reuse import SmokeRecord
from .store import StateStore

__all__ = ["ProfileBook"]

log = structlog.get_logger(__name__)

DOCUMENT = "profiles"
SMOKE_DOCUMENT = "smoke_records"


class ProfileBook:
    def __init__(self, store: StateStore, plugins: PluginHost, user_table: dict[str, dict[str, Any]]) -> None:
        self.store = store
        self.plugins = plugins
        self.user_table = user_table
        self.cache = ProfileCache()
        self._smoke: dict[str, SmokeRecord] = {}  # by profile key

    async def restore(self) -> None:
        await self._restore_profiles()
        records = await self.store.read(SMOKE_DOCUMENT, default={}) or {}
        for key, data in records.items() if isinstance(records, dict) else ():
            try:
                self._smoke[key] = SmokeRecord.from_dict(data)
            except (ValueError, TypeError, KeyError) as exc:  # the next smoke test writes a new one
                log.warning("unreadable smoke record skipped", key=key, error=str(exc))

    async def _restore_profiles(self) -> None:
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
        if self._smoke.pop(profile_key(model_id, engine), None) is not None:
            await self._save_smoke()
        return removed

    def smoke_record(self, profile: Profile) -> SmokeRecord | None:
        return self._smoke.get(profile.key)

    async def put_smoke_record(self, profile: Profile, record: SmokeRecord) -> None:
        self._smoke[profile.key] = record
        await self._save_smoke()

    async def _save_smoke(self) -> None:
        await self.store.save(SMOKE_DOCUMENT, {key: record.to_dict() for key, record in sorted(self._smoke.items())})

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
