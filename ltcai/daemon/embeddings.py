"""Embedding vectors as clients want them: OpenAI's base64 form, and usage when the engine gives none.

ltcai always asks the engine for floats and encodes base64 itself (little-endian float32,
what the ``openai`` SDK asks for by default and decodes), so every engine that embeds
serves both encodings.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

__all__ = ["counted_usage", "encode_base64"]


def encode_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def counted_usage(inputs: list[Any]) -> dict[str, Any]:
    """Token counts when the engine reports none: token-id inputs count exactly, text
    by its whitespace-separated words (an estimate, and marked so)."""
    tokens = sum(len(i) if isinstance(i, list) else len(i.split()) for i in inputs)
    return {"prompt_tokens": tokens, "total_tokens": tokens, "estimated": not all(isinstance(i, list) for i in inputs)}
