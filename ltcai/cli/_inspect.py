"""``ltcai inspect``: what ltcai would do with a model id, without a daemon.

Resolution (SPEC.md §5) and the compat profile with the layer behind each field
(SPEC.md §2). For a model that is on this machine (the bundled one, a local GGUF, a
local model folder), what it says of itself is read — a GGUF's header or a folder's
tokenizer and generation configs, never the weights — as ``ltcai prepare`` reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..compat import ModelMetadata
from ..config.settings import Settings
from ..core import explain_rows, layered_profile, profile_view, resolve_with_settings
from ..engines.bundled import BUNDLED_MODELS, locate_bundled
from ..engines.model_metadata import read_model_metadata
from ..errors import LtcaiError
from ..plugins import build_plugin_host

__all__ = ["inspect_model"]


def _local_model(model: str) -> Path | None:
    """The file or folder a model id names on this machine, if any."""
    bundled = BUNDLED_MODELS.get(model)
    if bundled is not None:
        try:
            return locate_bundled(bundled).path
        except LtcaiError:
            return None
    path = Path(model).expanduser()
    return path if path.is_absolute() and path.exists() else None


def inspect_model(settings: Settings, model: str, engine: str | None) -> dict[str, Any]:
    plugins = build_plugin_host(disabled=settings.disable_plugins)
    resolution = resolve_with_settings(settings, plugins, model, engine)
    file = _local_model(resolution.resolved_model)
    metadata: ModelMetadata | None = read_model_metadata(file) if file is not None else None
    profile = layered_profile(plugins, settings.profiles, resolution.resolved_model, resolution.engine, metadata)
    return {
        "resolution": resolution.to_dict(),
        "file": str(file) if file else None,
        "profile": profile_view(profile),
        "explain": explain_rows(profile),
    }
