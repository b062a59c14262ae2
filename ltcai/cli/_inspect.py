"""``ltcai inspect``: what ltcai would do with a model id, without a daemon.

Resolution (SPEC.md §5) and the compat profile with the layer behind each field
(SPEC.md §2). For a model whose file is on this machine (the bundled one, a local
GGUF), the file's own metadata is read — only its header, never the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..compat import ModelMetadata
from ..config.settings import Settings
from ..core import explain_rows, layered_profile, profile_view, resolve_with_settings
from ..engines.bundled import BUNDLED_MODELS, locate_bundled
from ..engines.gguf_metadata import read_gguf_metadata
from ..errors import LtcaiError
from ..plugins import build_plugin_host

__all__ = ["inspect_model"]


def _local_file(model: str) -> Path | None:
    bundled = BUNDLED_MODELS.get(model)
    if bundled is not None:
        try:
            return locate_bundled(bundled).path
        except LtcaiError:
            return None
    path = Path(model).expanduser()
    return path if path.is_absolute() and path.is_file() else None


def inspect_model(settings: Settings, model: str, engine: str | None) -> dict[str, Any]:
    plugins = build_plugin_host(disabled=settings.disable_plugins)
    resolution = resolve_with_settings(settings, plugins, model, engine)
    metadata: ModelMetadata | None = None
    file = _local_file(resolution.resolved_model)
    if file is not None and file.suffix == ".gguf":
        metadata = read_gguf_metadata(file)
    profile = layered_profile(plugins, settings.profiles, resolution.resolved_model, resolution.engine, metadata)
    return {
        "resolution": resolution.to_dict(),
        "file": str(file) if file else None,
        "profile": profile_view(profile),
        "explain": explain_rows(profile),
    }
