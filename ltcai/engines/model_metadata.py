"""Profile layer 2 for whatever a download left on disk: a GGUF file or an HF folder.

One entry point for the prepare runner and ``ltcai inspect``: a ``.gguf`` file's header
(``gguf_metadata``), a folder's transformers files (``hf_metadata``), or None for
anything else (an engine with its own store has no path to read).
Blocking file I/O: call it from a worker thread in the daemon.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..compat import ModelMetadata
from .gguf_metadata import read_gguf_metadata
from .hf_metadata import read_hf_metadata

__all__ = ["read_model_metadata"]


def read_model_metadata(path: str | os.PathLike[str]) -> ModelMetadata | None:
    path = Path(path)
    if path.suffix == ".gguf":
        return read_gguf_metadata(path)
    if path.is_dir():
        return read_hf_metadata(path)
    return None
