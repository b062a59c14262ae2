"""Every family rule in one place: detection by name (SPEC.md §1), the family defaults
table (§2, profile layer 1), and the facts that prove a family from a model's own
metadata (architecture names, chat-template formats) when its name cannot tell.

Detection by name is only the first guess; ``_metadata`` corrects an ``unknown`` with
``ARCHITECTURE_FAMILIES`` and ``TEMPLATE_STYLES``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from ._providers import split_provider_prefix

__all__ = [
    "ARCHITECTURE_FAMILIES",
    "FAMILY_DEFAULTS",
    "FAMILY_ROW_ALIASES",
    "FAMILY_RULES",
    "TEMPLATE_STYLES",
    "UNKNOWN_FAMILY",
    "TemplateStyle",
    "detect_family",
    "family_defaults",
    "template_style",
]

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


# --------------------------------------------------------------------------- defaults (layer 1)


def _row(**values: Any) -> Mapping[str, Any]:
    return MappingProxyType(values)


_STRIP = ("strip_role_tokens",)

# The 0.3.x family defaults (SPEC.md §2 table), verbatim.
FAMILY_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "gpt-oss": _row(
            supports_system=True,
            vision=False,
            template="gpt_oss",
            preferred_engines=("ollama", "llamacpp", "vllm", "mlx"),
            temperature=0.1,
            top_p=0.9,
            max_tokens=2048,
            stop=("<|im_end|>", "<|end|>", "</s>", "<|user|>", "<|assistant|>"),
            no_draft=True,
            # trim first: strip_role_tokens would remove the <|user|> it cuts at.
            postprocess=("trim_after_user_marker", "strip_role_tokens"),
        ),
        "gemma": _row(
            supports_system=True,
            vision=True,
            template="gemma",
            preferred_engines=("mlx", "ollama", "llamacpp"),
            temperature=0.2,
            top_p=0.95,
            max_tokens=4096,
            stop=("<end_of_turn>", "</s>"),
            no_draft=False,
            postprocess=_STRIP,
        ),
        "qwen": _row(
            supports_system=True,
            vision=False,
            template="chatml",
            preferred_engines=("ollama", "mlx", "vllm"),
            temperature=0.2,
            top_p=0.9,
            max_tokens=4096,
            stop=("<|im_end|>", "<|endoftext|>"),
            no_draft=False,
            postprocess=_STRIP,
        ),
        "llama": _row(
            supports_system=True,
            vision=False,
            template="tokenizer_default",
            preferred_engines=("ollama", "mlx", "llamacpp", "vllm"),
            temperature=0.2,
            top_p=0.9,
            max_tokens=4096,
            stop=("</s>", "[INST]", "[/INST]"),
            no_draft=False,
            postprocess=_STRIP,
        ),
        "mistral": _row(
            supports_system=False,
            vision=False,
            template="tokenizer_default",
            preferred_engines=("ollama", "mlx", "llamacpp"),
            temperature=0.2,
            top_p=0.9,
            max_tokens=4096,
            stop=("</s>", "[INST]", "[/INST]"),
            no_draft=False,
            postprocess=_STRIP,
        ),
        "phi": _row(
            supports_system=True,
            vision=False,
            template="tokenizer_default",
            preferred_engines=("ollama", "mlx"),
            temperature=0.2,
            top_p=0.9,
            max_tokens=2048,
            stop=("<|end|>", "<|endoftext|>"),
            no_draft=False,
            postprocess=_STRIP,
        ),
        "deepseek": _row(
            supports_system=True,
            vision=False,
            template="tokenizer_default",
            preferred_engines=("ollama", "mlx", "vllm"),
            temperature=0.2,
            top_p=0.9,
            max_tokens=4096,
            stop=("<|EOT|>", "</s>"),
            no_draft=False,
            postprocess=_STRIP,
        ),
        UNKNOWN_FAMILY: _row(
            supports_system=True,
            vision=False,
            template="tokenizer_default",
            preferred_engines=(),
            temperature=0.2,
            top_p=0.9,
            max_tokens=2048,
            stop=("<|im_end|>", "<|endoftext|>", "</s>", "<|user|>", "<|assistant|>"),
            no_draft=False,
            postprocess=_STRIP,
        ),
    }
)

# Families only metadata can name. A model known solely by its ChatML template (SmolLM2)
# talks like Qwen, whose row is the ChatML row; the family keeps the honest name.
FAMILY_ROW_ALIASES: Mapping[str, str] = MappingProxyType({"chatml": "qwen"})

# GGUF ``general.architecture`` / HF ``model_type`` values that prove a family. ``llama``
# is deliberately absent: SmolLM2 and many fine-tunes reuse the architecture, not the format.
ARCHITECTURE_FAMILIES: Mapping[str, str] = MappingProxyType(
    {
        "gemma": "gemma",
        "gemma2": "gemma",
        "gemma3": "gemma",
        "gemma3_text": "gemma",
        "gemma3n": "gemma",
        "qwen2": "qwen",
        "qwen2moe": "qwen",
        "qwen2vl": "qwen",
        "qwen3": "qwen",
        "qwen3moe": "qwen",
        "phi2": "phi",
        "phi3": "phi",
        "phimoe": "phi",
        "deepseek": "deepseek",
        "deepseek2": "deepseek",
        "gpt-oss": "gpt-oss",
        "gpt_oss": "gpt-oss",
    }
)


def family_defaults(family: str | None) -> Mapping[str, Any]:
    """The layer-1 row for ``family``; every family the table does not list gets ``unknown``."""
    row = FAMILY_ROW_ALIASES.get(family or "", family or "")
    return FAMILY_DEFAULTS.get(row, FAMILY_DEFAULTS[UNKNOWN_FAMILY])


# --------------------------------------------------------------------------- template formats


class TemplateStyle(NamedTuple):
    """A turn format recognised inside a model's Jinja chat template."""

    marker: str  # a substring only this format uses
    template: str  # the profile's template name for it
    family: str  # the family it proves when the model's name could not tell
    stop: tuple[str, ...]  # the turn-end tokens the format implies


# First match wins; ChatML first because Qwen3-style templates mention other formats too.
TEMPLATE_STYLES: tuple[TemplateStyle, ...] = (
    TemplateStyle("<|im_start|>", "chatml", "chatml", ("<|im_end|>",)),
    TemplateStyle("<start_of_turn>", "gemma", "gemma", ("<end_of_turn>",)),
    TemplateStyle("<|channel|>", "gpt_oss", "gpt-oss", ()),
    TemplateStyle("<|start_header_id|>", "tokenizer_default", "llama", ("<|eot_id|>",)),
)


def template_style(chat_template: str | None) -> TemplateStyle | None:
    """The known turn format a Jinja chat template uses, or None."""
    if not chat_template:
        return None
    for style in TEMPLATE_STYLES:
        if style.marker in chat_template:
            return style
    return None
