"""Resolution with the user's inputs: built-in and user aliases, plugins, allowed roots."""

from __future__ import annotations

from pathlib import Path

from ..compat import BUILTIN_ALIASES, Resolution, normalize_engine, resolve
from ..config.paths import hf_hub_cache
from ..config.settings import Settings
from ..plugins import PluginHost

__all__ = ["allowed_model_roots", "resolve_with_settings"]


def allowed_model_roots(settings: Settings) -> list[Path]:
    """Folders a model id may point into: ours, the HF cache, and the user's model_dirs."""
    return [settings.paths.models_dir, hf_hub_cache(), *map(Path, settings.model_dirs)]


def resolve_with_settings(settings: Settings, plugins: PluginHost | None, model: str, engine: str | None) -> Resolution:
    hook = None
    extra_engines: list[str] = []
    if plugins is not None:
        extra_engines = [name for name in plugins.engines() if normalize_engine(name) is None]
        hook = lambda model_id, chosen: plugins.resolve_model(model_id=model_id, engine=chosen)  # noqa: E731
    return resolve(
        model,
        engine,
        aliases={**BUILTIN_ALIASES, **settings.aliases},
        alias_hook=hook,
        platform_default=settings.default_engine,
        allowed_roots=allowed_model_roots(settings),
        extra_engines=extra_engines,
    )
