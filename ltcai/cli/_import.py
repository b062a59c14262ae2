"""``ltcai import``: a GGUF turned into an MLX model folder, here and now, without a daemon.

The conversion runs in the MLX engine's Python (the one prepare would serve with), so
the folder it writes is one that engine can load. It lands where prepare keeps its own
imports (``models/mlx/NAME`` in the data dir): importing ``smollm2`` here means a later
``ltcai prepare smollm2 --engine mlx`` finds it already done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from ..config.settings import Settings
from ..engines import mlx, mlx_import
from ..engines.bundled import BUNDLED_MODELS, DEFAULT_MODEL_ALIAS, locate_bundled
from ..engines.managed_venv import engine_python
from ..errors import InvalidRequest
from ._render import Renderer

__all__ = ["import_command"]


def _source(gguf_or_alias: str) -> tuple[Path, str]:
    """The GGUF file to read and the folder name it gets by default."""
    key = next(iter(BUNDLED_MODELS)) if gguf_or_alias.casefold() == DEFAULT_MODEL_ALIAS else gguf_or_alias
    bundled = BUNDLED_MODELS.get(key)
    if bundled is not None:
        return locate_bundled(bundled).path, bundled.catalog_id
    path = Path(gguf_or_alias).expanduser()
    if not path.is_file():
        raise InvalidRequest(
            f"no GGUF file at {path}",
            hint=f"give a .gguf file, or {DEFAULT_MODEL_ALIAS} for the bundled model",
            code="model_not_found",
        )
    return path.resolve(), path.stem


def import_command(settings: Settings, gguf_or_alias: str, name: str | None, force: bool, ui: Renderer) -> int:
    gguf, default_name = _source(gguf_or_alias)
    folder = mlx.imported_dir(settings.paths.models_dir, name or default_name)
    if not force and mlx_import.is_imported_from(folder, gguf):
        result: dict[str, Any] = {"path": str(folder), "imported": False}
        _done(ui, result, f"already imported from {gguf.name} into {folder} (--force imports again)")
        return 0
    if folder.exists() and not force:
        raise InvalidRequest(
            f"{folder} already exists (not an import of {gguf.name})",
            hint="pass --force to replace it, or choose another --name",
            code="already_exists",
        )
    python = engine_python("mlx", settings.engines.get("mlx", {}), settings.paths.engines_dir)

    def progress(line: str) -> None:
        if not ui.json_output:
            ui.err.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)

    summary = anyio.run(lambda: mlx.run_import(python, gguf, folder, progress=progress, force=True))
    result = {**summary, "imported": True}
    _done(ui, result, f"imported {gguf.name} into {folder} in {summary['seconds']:.1f} s")
    return 0


def _done(ui: Renderer, result: dict[str, Any], message: str) -> None:
    if ui.json_output:
        ui.emit_json(result)
        return
    ui.out.print(message, markup=False, soft_wrap=True)
    ui.out.print(f"serve it:  ltcai prepare {result['path']} --engine mlx", markup=False, soft_wrap=True)
