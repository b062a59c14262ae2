"""Model family detection by name (SPEC.md §1): only the first guess, see profiles layer 2."""

from __future__ import annotations

import re

from ._providers import split_provider_prefix

__all__ = ["FAMILY_RULES", "UNKNOWN_FAMILY", "detect_family"]

UNKNOWN_FAMILY = "unknown"

# Order matters: the first rule that matches wins (gpt-oss before gpt-4, …).
# "At a word start" means not preceded by a letter or digit: ``meta-llama`` and
# ``Llama-3`` match llama, ``tinyllama`` does not (0.3.x behaviour, kept).
_WORD_START = r"(?<![a-z0-9])"
FAMILY_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (family, re.compile(pattern, re.IGNORECASE))
    for family, pattern in (
        ("gpt-oss", r"gpt[-_]?oss"),
        ("gemma", r"gemma"),
        ("qwen", r"qwen"),
        ("llama", _WORD_START + r"llama|meta[-_]llama"),
        ("mistral", r"mistral|mixtral"),
        ("phi", _WORD_START + r"phi[-_]?\d"),
        ("deepseek", r"deepseek"),
        ("yi", _WORD_START + r"yi[-_]?\d"),
        ("claude", r"claude"),
        ("gpt-4", r"gpt[-_]?4"),
        ("gpt-3.5", r"gpt[-_]?(?:3\.5|35)"),
        ("o1", _WORD_START + r"o1"),
    )
)


def detect_family(model_id: str | None) -> str:
    """The family of ``model_id`` by name, or ``"unknown"``.

    A known provider prefix (``ollama:``, ``mlx:``, …) is removed first; anything else
    before a colon is part of the name (``llama3.2:1b`` is an Ollama tag, and llama).
    """
    if not model_id:
        return UNKNOWN_FAMILY
    _, name = split_provider_prefix(model_id.strip())
    for family, pattern in FAMILY_RULES:
        if pattern.search(name):
            return family
    return UNKNOWN_FAMILY
