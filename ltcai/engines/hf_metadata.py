"""Read what a Hugging Face model folder says about itself (profile layer 2).

An MLX import (``models/mlx/NAME``), an MLX or vLLM snapshot from the hub and a local
folder all carry transformers' files: ``tokenizer_config.json`` (chat template, EOS/BOS
text, the added-token table), ``generation_config.json`` (the EOS ids a turn may end
with: Llama 3 lists ``<|eot_id|>`` there), ``config.json`` (architecture, context length)
and, in newer repos, ``chat_template.jinja``. This module finds and reads them; turning
them into ``ModelMetadata`` is compat's pure ``metadata_from_hf_configs``.

Blocking file I/O: call it from a worker thread in the daemon.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..compat import ModelMetadata, metadata_from_hf_configs
from ..errors import InvalidRequest

__all__ = ["HF_METADATA_FILES", "read_hf_metadata"]

TOKENIZER_CONFIG = "tokenizer_config.json"
GENERATION_CONFIG = "generation_config.json"
MODEL_CONFIG = "config.json"
CHAT_TEMPLATE = "chat_template.jinja"
# A folder holding one of these speaks for itself; config.json alone says nothing of turns.
HF_METADATA_FILES = (TOKENIZER_CONFIG, GENERATION_CONFIG)


def read_hf_metadata(folder: str | os.PathLike[str]) -> ModelMetadata | None:
    """Layer 2 from the folder's transformers files; None when it has neither
    ``tokenizer_config.json`` nor ``generation_config.json``.

    Raises ``InvalidRequest`` (``invalid_model_file``) for a file that is there but is not
    a JSON object: the engine would fail on it later, with less to say about why.
    """
    folder = Path(folder)
    tokenizer = _json_object(folder / TOKENIZER_CONFIG)
    generation = _json_object(folder / GENERATION_CONFIG)
    if tokenizer is None and generation is None:
        return None
    return metadata_from_hf_configs(
        tokenizer,
        generation,
        model_config=_json_object(folder / MODEL_CONFIG),
        chat_template=_text(folder / CHAT_TEMPLATE),
    )


def _json_object(path: Path) -> dict[str, Any] | None:
    raw = _text(path)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise _invalid(path, f"it is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _invalid(path, f"it holds a JSON {type(value).__name__}, not an object")
    return value


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise _invalid(path, f"it is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise _invalid(path, f"it cannot be read ({exc.strerror or exc})") from None


def _invalid(path: Path, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"{path} is not a usable model file: {why}",
        code="invalid_model_file",
        hint="download the model again, or fix the file in the model's folder",
    )
