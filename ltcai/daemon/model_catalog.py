"""What a client can use, not only what is loaded: for ``/v1/models`` and Ollama's ``/api/tags``.

Model pickers (Open WebUI, Zed, Continue) show this list, and any entry works there: a
request for one that is not loaded prepares it just in time. Listed, first hit wins:

1. the models loaded now (with their status);
2. the aliases: the built-in ones whose files are here (``smollm2`` when its package is
   installed) and the user's, on every registered engine they name that an id can reach
   (``engine:alias`` for a built-in engine that is not the default; a third-party
   engine has no id prefix, so its aliases show once loaded);
3. GGUF files in ltcai's models dir and the user's ``model_dirs`` (by absolute path);
4. GGUF repositories in the Hugging Face cache (``org/repo``, or ``org/repo:QUANT``
   when it holds several).

The file system is read in a worker thread: a big cache never blocks the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from huggingface_hub import constants as hf_constants

from ..compat import BUILTIN_ALIASES, normalize_engine
from ..engines.base import RequestRules
from ..engines.bundled import BUNDLED_MODELS, locate_bundled
from ..errors import DownloadError
from .services import Services

__all__ = ["CatalogEntry", "capabilities", "usable_models"]

_MAX_DEPTH = 4  # how deep model folders are searched for GGUF files
_SPLIT_PART = re.compile(r"-(\d{5})-of-\d{5}\.gguf$", re.IGNORECASE)
_QUANT = re.compile(r"(?:^|[-._])((?:I?Q\d[A-Z0-9_]*)|BF16|F16|F32)\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class CatalogEntry:
    id: str  # what a client sends as "model"
    engine: str
    source: str  # "loaded", "alias", "models_dir", "model_dirs", "hf_cache"
    loaded: bool = False
    status: str = "available"  # a loaded model's status: "ready", "degraded", "stopped"
    path: str | None = None
    size: int | None = None
    modified: float = 0.0
    capabilities: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def capabilities(rules: RequestRules, *, vision: bool = False) -> tuple[str, ...]:
    """What a model on an engine with these rules can do, in Ollama's words."""
    takes = rules.fields
    found = ["completion"]
    if takes is None or "tools" in takes:
        found.append("tools")
    if vision and (takes is None or "image_url" in takes):
        found.append("vision")
    if rules.embeddings:
        found.append("embedding")
    return tuple(found)


async def usable_models(services: Services) -> list[CatalogEntry]:
    settings = services.settings
    engines = set(services.plugins.engines())
    default = settings.default_engine or "llamacpp"

    def rules(engine: str) -> RequestRules:
        return services.engine(engine).request_rules

    entries: dict[str, CatalogEntry] = {}
    for m in services.models.all():
        entries.setdefault(m.resolution.input_id, CatalogEntry(
            id=m.resolution.input_id, engine=m.resolution.engine, source="loaded", loaded=True, status=m.status.label,
            path=m.served.artifact_path, modified=m.loaded_at,
            capabilities=capabilities(rules(m.resolution.engine), vision=m.profile.vision),
            extra={"resolved_model": m.resolution.resolved_model},
        ))  # fmt: skip
    aliases = {**BUILTIN_ALIASES, **settings.aliases}
    found = await anyio.to_thread.run_sync(
        _scan_files,
        aliases,
        [(Path(settings.paths.models_dir), "models_dir"), *((Path(d), "model_dirs") for d in settings.model_dirs)],
        Path(hf_constants.HF_HUB_CACHE),
    )
    for alias, targets in aliases.items():
        for engine, target in targets.items():
            reachable = engine == default or normalize_engine(engine) == engine
            if engine not in engines or not reachable or (target in BUNDLED_MODELS and target not in found["bundled"]):
                continue
            name = alias if engine == default else f"{engine}:{alias}"
            entries.setdefault(name, CatalogEntry(
                id=name, engine=engine, source="alias", capabilities=capabilities(rules(engine)),
                extra={"resolved_model": target},
            ))  # fmt: skip
    if "llamacpp" in engines:  # GGUF files are llama.cpp's
        for name, source, path, size, modified in found["files"]:
            name = name if default == "llamacpp" else f"llamacpp:{name}"
            entries.setdefault(name, CatalogEntry(
                id=name, engine="llamacpp", source=source, path=path, size=size, modified=modified,
                capabilities=capabilities(rules("llamacpp")),
            ))  # fmt: skip
    return list(entries.values())


def _scan_files(
    aliases: dict[str, dict[str, str]], folders: list[tuple[Path, str]], hf_cache: Path
) -> dict[str, Any]:
    """Blocking: which bundled models are installed, and the GGUF files on disk."""
    bundled = set()
    for targets in aliases.values():
        for target in targets.values():
            if target in BUNDLED_MODELS and target not in bundled:
                try:
                    locate_bundled(BUNDLED_MODELS[target])
                    bundled.add(target)
                except DownloadError:
                    pass
    files: list[tuple[str, str, str, int, float]] = []
    for folder, source in folders:
        for path in _ggufs(folder, _MAX_DEPTH):
            stat = path.stat()
            files.append((str(path), source, str(path), stat.st_size, stat.st_mtime))
    files.extend(_hf_cache_repos(hf_cache))
    return {"bundled": bundled, "files": files}


def _ggufs(folder: Path, depth: int) -> Iterator[Path]:
    """GGUF model files under ``folder`` (a split model by its first part; no projectors)."""
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return
    for child in children:
        if child.name.startswith("."):
            continue
        if child.is_dir() and depth > 0:
            yield from _ggufs(child, depth - 1)
        elif child.suffix.lower() == ".gguf" and child.is_file() and _is_model_file(child.name):
            yield child


def _is_model_file(name: str) -> bool:
    part = _SPLIT_PART.search(name)
    return "mmproj" not in name.lower() and (part is None or part.group(1) == "00001")


def _hf_cache_repos(cache: Path) -> Iterable[tuple[str, str, str, int, float]]:
    try:
        repos = sorted(p for p in cache.iterdir() if p.name.startswith("models--"))
    except OSError:
        return []
    found = []
    for repo in repos:
        repo_id = repo.name.removeprefix("models--").replace("--", "/", 1)
        files = {p.name: p for p in _ggufs(repo / "snapshots", 2)}
        for name, path in sorted(files.items()):
            quant = _QUANT.search(_SPLIT_PART.sub(".gguf", name))
            model_id = repo_id if len(files) == 1 or quant is None else f"{repo_id}:{quant.group(1)}"
            stat = path.stat()  # follows the snapshot's link to the blob
            found.append((model_id, "hf_cache", str(path), stat.st_size, stat.st_mtime))
    return found
