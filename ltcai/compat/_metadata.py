"""Profile layer 2: what a model says of itself (SPEC.md §2).

``ModelMetadata`` is filled by the GGUF reader (``ltcai.engines.gguf_metadata``) or, for an
HF folder or repo, by :func:`metadata_from_hf_configs` from the parsed JSON files; this
module turns it into the family it proves and the layer-2 overrides (template, stops).
Pure: it takes parsed dicts and text, never a path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ._families import ARCHITECTURE_FAMILIES, UNKNOWN_FAMILY, detect_family, template_style
from ._stops import merge_stops

__all__ = ["ModelMetadata", "family_from_metadata", "is_marker_token", "metadata_from_hf_configs", "model_layer"]

# A token a model declares joins its markers only if it is shaped like one: a word such
# as "Question:" declared as EOS must not cut every answer that mentions it.
_TOKEN_SHAPE = re.compile(r"[<\[][^\s<>\[\]]{1,62}[>\]]|<[｜|][^\s]{1,60}[｜|]>")
_BARRED_SHAPE = re.compile(r"<[｜|][^\s]{1,60}[｜|]>")
# Numbered placeholders (Gemma's 6k ``<unusedN>``, Llama 3's 250 reserved tokens): never
# trained, so never in an answer; without them a model's markers stay a short list.
_PLACEHOLDER = re.compile(
    r"[<\[][｜|]?(?:unused|reserved_special_token|extra_id|placeholder)[_-]?\d+[｜|]?[>\]]", re.IGNORECASE
)


def is_marker_token(text: str | None, *, barred: bool = False) -> bool:
    """Whether a token a model declares may be cleaned out of its answers: shaped like a
    marker (``<start_of_turn>``, ``[INST]``, ``<|im_end|>``; ``barred``: only the
    ``<|…|>`` / ``<｜…｜>`` shapes, for tokens that are often text, like a GGUF's
    user-defined ``<table>``), and not a numbered placeholder."""
    if not text:
        return False
    shape = _BARRED_SHAPE if barred else _TOKEN_SHAPE
    return shape.fullmatch(text) is not None and _PLACEHOLDER.fullmatch(text) is None


@dataclass(frozen=True, kw_only=True)
class ModelMetadata:
    """What a model file or repo says about itself (profile layer 2).

    Token fields hold token *text* (``"<|im_end|>"``), not ids: the text is what a stop
    list and a leakage check can use.
    """

    chat_template: str | None = None
    eos_token: str | None = None
    eot_token: str | None = None
    bos_token: str | None = None
    architecture: str | None = None
    name: str | None = None
    extra_stop_tokens: tuple[str, ...] = ()
    # The vocabulary's other special (control) tokens: never text for a user to read.
    special_tokens: tuple[str, ...] = ()
    context_length: int | None = None
    source: str = "unknown"  # "gguf", "hf_config", …

    def stop_tokens(self) -> tuple[str, ...]:
        """Turn-ending token texts the model declares (EOT before EOS: it is the turn end)."""
        declared = (self.eot_token, self.eos_token, *self.extra_stop_tokens)
        return merge_stops(t for t in declared if t and t.strip())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in _TUPLE_FIELDS:
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMetadata:
        """Read :meth:`to_dict` output back; a field an older writer did not know is empty."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in _TUPLE_FIELDS:
            values[name] = tuple(values.get(name) or ())
        return cls(**values)


_TUPLE_FIELDS = ("extra_stop_tokens", "special_tokens")


def _token_text(value: Any) -> str | None:
    """HF writes special tokens as a string or as an AddedToken dict ``{"content": …}``."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _token_ids(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _special_added_tokens(tokenizer_config: Mapping[str, Any]) -> tuple[str, ...]:
    """The added tokens HF marks ``"special": true`` (control tokens, not words)."""
    decoder = tokenizer_config.get("added_tokens_decoder")
    if not isinstance(decoder, Mapping):
        return ()
    found = (_token_text(e) for e in decoder.values() if isinstance(e, Mapping) and e.get("special") is True)
    return merge_stops(t for t in found if t)


def _added_tokens(tokenizer_config: Mapping[str, Any]) -> dict[int, str]:
    decoder = tokenizer_config.get("added_tokens_decoder")
    if not isinstance(decoder, Mapping):
        return {}
    out: dict[int, str] = {}
    for key, entry in decoder.items():
        text = _token_text(entry)
        if text is not None and str(key).isdigit():
            out[int(key)] = text
    return out


def _hf_chat_template(value: Any) -> str | None:
    """A single template, or the ``default`` one of HF's named-template list."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, list):
        named = [v for v in value if isinstance(v, Mapping) and isinstance(v.get("template"), str)]
        for entry in named:
            if entry.get("name") == "default":
                return entry["template"]
        return named[0]["template"] if named else None
    return None


# ``model_max_length`` is often a 1e30 sentinel meaning "not set".
_MAX_SANE_CONTEXT = 1 << 24


def _context_length(cfg: Mapping[str, Any], tok: Mapping[str, Any]) -> int | None:
    text_config = cfg.get("text_config")
    candidates = [
        cfg.get("max_position_embeddings"),
        text_config.get("max_position_embeddings") if isinstance(text_config, Mapping) else None,
        tok.get("model_max_length"),
    ]
    for value in candidates:
        if type(value) is int and 0 < value <= _MAX_SANE_CONTEXT:
            return value
    return None


def metadata_from_hf_configs(
    tokenizer_config: Mapping[str, Any] | None,
    generation_config: Mapping[str, Any] | None,
    *,
    model_config: Mapping[str, Any] | None = None,
    chat_template: str | None = None,
) -> ModelMetadata:
    """Layer 2 from an HF repo's ``tokenizer_config.json`` / ``generation_config.json``.

    ``generation_config.eos_token_id`` is where Llama 3 lists ``<|eot_id|>`` beside
    ``<|end_of_text|>``; ids are turned into text through ``added_tokens_decoder`` and the
    ones that are not the EOS become ``extra_stop_tokens``. ``model_config`` (``config.json``)
    adds architecture and context length; ``chat_template`` (a ``chat_template.jinja``
    file) wins over the one inside the tokenizer config, as in transformers.
    """
    tok = tokenizer_config or {}
    gen = generation_config or {}
    cfg = model_config or {}
    decoder = _added_tokens(tok)
    eos_ids = _token_ids(gen.get("eos_token_id")) or _token_ids(cfg.get("eos_token_id"))
    declared_eos = [decoder[i] for i in eos_ids if i in decoder]
    eos = _token_text(tok.get("eos_token")) or (declared_eos[0] if declared_eos else None)
    bos_ids = _token_ids(gen.get("bos_token_id"))
    bos = _token_text(tok.get("bos_token")) or (decoder.get(bos_ids[0]) if bos_ids else None)
    architecture = cfg.get("model_type")
    name = cfg.get("_name_or_path") or tok.get("name_or_path")
    return ModelMetadata(
        chat_template=chat_template or _hf_chat_template(tok.get("chat_template")),
        eos_token=eos,
        bos_token=bos,
        architecture=architecture if isinstance(architecture, str) else None,
        name=name if isinstance(name, str) and name else None,
        extra_stop_tokens=tuple(t for t in merge_stops(declared_eos) if t != eos),
        special_tokens=_special_added_tokens(tok),
        context_length=_context_length(cfg, tok),
        source="hf_config",
    )


def family_from_metadata(metadata: ModelMetadata) -> str | None:
    """Architecture first (most specific), then the template's format, then the model's own name."""
    by_arch = ARCHITECTURE_FAMILIES.get((metadata.architecture or "").lower())
    if by_arch:
        return by_arch
    style = template_style(metadata.chat_template)
    if style is not None:
        return style.family
    by_name = detect_family(metadata.name)
    return None if by_name == UNKNOWN_FAMILY else by_name


def model_layer(metadata: ModelMetadata | None) -> dict[str, Any]:
    """Layer 2 as an override mapping: the model's template and the stops it declares."""
    if metadata is None:
        return {}
    layer: dict[str, Any] = {}
    style = template_style(metadata.chat_template)
    if metadata.chat_template:
        layer["chat_template"] = metadata.chat_template
        # A template in no known format is still the model's own: use it as it is.
        layer["template"] = style.template if style else "tokenizer_default"
    stops = merge_stops(style.stop if style else (), metadata.stop_tokens())
    if stops:
        layer["extra_stop"] = stops
    return layer
