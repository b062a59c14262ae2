"""Compat profiles (SPEC.md §2): how to talk to one model on one engine, and why.

A profile is resolved from five layers, bottom up; a higher layer wins on a field:

    1 family    the 0.3.x family defaults (``FAMILY_DEFAULTS``), chosen by name
    2 model     what the model says of itself (``ModelMetadata``: GGUF header, HF configs)
    3 engine    what the engine adapter needs (the ``ltcai_profile_overrides`` hook)
    4 user      the user's config (``[profiles]``)
    5 learned   what the smoke test and the chat recovery path learned

Each field remembers the highest layer that set it, so ``ltcai profiles show`` can say
*why* a model stops on ``<|im_end|>``. The layer inputs are kept on the profile too, so a
persisted profile can be rebuilt when the config or the smoke test changes one layer.

Stop sequences merge rather than replace, because a stop list is a safety net: each layer
only knows some of the ways a model can run on into the next turn. The rule, per layer:

* ``extra_stop`` (and everything layer 2 derives) *extends*: union, order kept (lower
  layers first), no duplicates, empty strings dropped;
* ``stop`` *replaces* the list built so far (an engine or user who knows better);
  within one layer ``stop`` is applied before ``extra_stop``.

``stop``'s layer is the highest layer that changed the list: a layer that only repeats
stops already there does not claim it.

Pure and synchronous: the GGUF/HF readers that produce ``ModelMetadata`` live in
``ltcai.engines``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, NamedTuple

from ..errors import InvalidRequest
from ._families import UNKNOWN_FAMILY, detect_family
from ._providers import normalize_engine

__all__ = [
    "ARCHITECTURE_FAMILIES",
    "FAMILY_DEFAULTS",
    "FAMILY_ROW_ALIASES",
    "LAYERED_FIELDS",
    "LAYERS",
    "OVERRIDE_KEYS",
    "OVERRIDE_LAYERS",
    "PROFILE_SCHEMA",
    "QUALITY_STATUSES",
    "STATE_FIELDS",
    "TEMPLATE_NAMES",
    "TEMPLATE_STYLES",
    "Explanation",
    "ModelMetadata",
    "Profile",
    "ProfileCache",
    "TemplateStyle",
    "build_profile",
    "family_defaults",
    "generation_params",
    "learn_from_smoke",
    "merge_stops",
    "metadata_from_hf_configs",
    "profile_key",
    "rebuild_profile",
    "resolve_family",
    "select_user_overrides",
    "template_style",
]

LAYERS: tuple[str, ...] = ("family", "model", "engine", "user", "learned")
# Layers given as plain ``{field: value}`` mappings (layer 2 comes from ``ModelMetadata``).
OVERRIDE_LAYERS: tuple[str, ...] = ("engine", "user", "learned")
QUALITY_STATUSES: tuple[str, ...] = ("ok", "degraded", "failed", "unknown")
# Turn formats an engine must know by name; "tokenizer_default": use the model's own template.
TEMPLATE_NAMES: tuple[str, ...] = ("chatml", "gemma", "gpt_oss", "tokenizer_default")

LAYERED_FIELDS: tuple[str, ...] = (
    "family",
    "supports_system",
    "vision",
    "template",
    "chat_template",
    "preferred_engines",
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "no_draft",
    "postprocess",
)
STATE_FIELDS: tuple[str, ...] = (
    "loaded",
    "chat_compatible",
    "quality_status",
    "last_test_error",
    "validated_at",
)
OVERRIDE_KEYS: tuple[str, ...] = LAYERED_FIELDS + ("extra_stop",)
PROFILE_SCHEMA = 1

# --------------------------------------------------------------------------- layer 1 data


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


# --------------------------------------------------------------------------- layer 2


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
    context_length: int | None = None
    source: str = "unknown"  # "gguf", "hf_config", …

    def stop_tokens(self) -> tuple[str, ...]:
        """Turn-ending token texts the model declares (EOT before EOS: it is the turn end)."""
        declared = (self.eot_token, self.eos_token, *self.extra_stop_tokens)
        return merge_stops(t for t in declared if t and t.strip())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["extra_stop_tokens"] = list(self.extra_stop_tokens)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMetadata:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["extra_stop_tokens"] = tuple(values.get("extra_stop_tokens") or ())
        return cls(**values)


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
        context_length=_context_length(cfg, tok),
        source="hf_config",
    )


def _family_from_metadata(metadata: ModelMetadata) -> str | None:
    """Architecture first (most specific), then the template's format, then the model's own name."""
    by_arch = ARCHITECTURE_FAMILIES.get((metadata.architecture or "").lower())
    if by_arch:
        return by_arch
    style = template_style(metadata.chat_template)
    if style is not None:
        return style.family
    by_name = detect_family(metadata.name)
    return None if by_name == UNKNOWN_FAMILY else by_name


def _model_layer(metadata: ModelMetadata | None) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- overrides


def _fail(layer: str, key: str, why: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"profile {layer} override {key!r} {why}, got {value!r}",
        code="invalid_profile_override",
        hint=f"valid keys: {', '.join(OVERRIDE_KEYS)}",
    )


def _text_tuple(layer: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _fail(layer, key, "must be a list of strings", value)
    return tuple(value)


def _number(layer: str, key: str, value: Any, low: float, high: float, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(layer, key, "must be a number", value)
    if value < low or value > high or (low_open and value == low):
        raise _fail(layer, key, f"must be in {'(' if low_open else '['}{low}, {high}]", value)
    return float(value)


def _coerce(layer: str, key: str, value: Any) -> Any:
    """One override value in its canonical type, or a clear error naming layer and key."""
    if key in ("supports_system", "vision", "no_draft"):
        if not isinstance(value, bool):
            raise _fail(layer, key, "must be true or false", value)
        return value
    if key in ("stop", "extra_stop", "postprocess"):
        return _text_tuple(layer, key, value)
    if key == "preferred_engines":
        return tuple(_canonical_engine(e) or e for e in _text_tuple(layer, key, value))
    if key == "temperature":
        return _number(layer, key, value, 0.0, 2.0, low_open=False)
    if key == "top_p":
        return _number(layer, key, value, 0.0, 1.0, low_open=True)
    if key == "max_tokens":
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _fail(layer, key, "must be a positive integer", value)
        return value
    if key == "chat_template":
        if value is not None and not isinstance(value, str):
            raise _fail(layer, key, "must be a string or null", value)
        return value
    if key in ("family", "template"):
        if not isinstance(value, str) or not value.strip():
            raise _fail(layer, key, "must be a non-empty string", value)
        return value.strip().lower() if key == "family" else value.strip()
    raise _fail(layer, key, "is not a profile field", value)


def _normalize_overrides(layer: str, overrides: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A frozen, validated copy; a None value means "not set" (TOML/JSON nulls)."""
    if overrides is None:
        return MappingProxyType({})
    if not isinstance(overrides, Mapping):
        raise InvalidRequest(
            f"profile {layer} overrides must be a mapping of field to value, got {overrides!r}",
            code="invalid_profile_override",
        )
    return MappingProxyType({k: _coerce(layer, k, v) for k, v in overrides.items() if v is not None})


# --------------------------------------------------------------------------- profile


def _canonical_engine(engine: str | None) -> str | None:
    """Built-ins and aliases fold to one spelling; a plugin's engine keeps its own, lower-cased."""
    if engine is None or not engine.strip():
        return None
    return normalize_engine(engine) or engine.strip().lower()


def profile_key(model_id: str, engine: str | None = None) -> str:
    """``engine:model_id``, or just ``model_id`` with no engine (the 0.3.x cache key)."""
    canonical = _canonical_engine(engine)
    return f"{canonical}:{model_id}" if canonical else model_id


def merge_stops(*lists: Iterable[str]) -> tuple[str, ...]:
    """Union of stop lists: first occurrence keeps its place, empty strings dropped."""
    return tuple(dict.fromkeys(s for stops in lists for s in stops if s))


class Explanation(NamedTuple):
    field: str
    value: Any
    layer: str


@dataclass(frozen=True)
class Profile:
    """A resolved profile: the values, the layer each came from, the inputs, and test state."""

    model_id: str
    engine: str | None
    family: str
    supports_system: bool
    vision: bool
    template: str
    chat_template: str | None
    preferred_engines: tuple[str, ...]
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]
    no_draft: bool
    postprocess: tuple[str, ...]
    # State: optimistic until a smoke test fails (0.3.x); quality_status says if it ran.
    loaded: bool = False
    chat_compatible: bool = True
    quality_status: str = "unknown"
    last_test_error: str | None = None
    validated_at: str | None = None
    # field -> layer that set it, for every name in LAYERED_FIELDS.
    layers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    # The layer inputs, kept so a persisted profile can be rebuilt (rebuild_profile).
    metadata: ModelMetadata | None = None
    overrides: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    @property
    def key(self) -> str:
        return profile_key(self.model_id, self.engine)

    def source_of(self, name: str) -> str:
        """The layer that set ``name``; ``"state"`` for test/load state, which no layer sets."""
        if name in STATE_FIELDS:
            return "state"
        try:
            return self.layers[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a profile field") from None

    def explain(self) -> list[Explanation]:
        """Every field with its value and the layer it came from, for ``ltcai profiles show``."""
        names = LAYERED_FIELDS + STATE_FIELDS
        return [Explanation(n, getattr(self, n), self.source_of(n)) for n in names]

    def with_state(self, **changes: Any) -> Profile:
        """A copy with state fields changed (``loaded=True`` after a load); layered ones refuse."""
        bad = set(changes) - set(STATE_FIELDS)
        if bad:
            raise ValueError(f"not state fields: {sorted(bad)}; rebuild_profile changes layers")
        if changes.get("quality_status", self.quality_status) not in QUALITY_STATUSES:
            raise ValueError(f"quality_status must be one of {QUALITY_STATUSES}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form the daemon persists (lists for tuples, sorted-key friendly)."""
        return {
            "schema": PROFILE_SCHEMA,
            "key": self.key,
            "model_id": self.model_id,
            "engine": self.engine,
            "fields": {
                n: {"value": _jsonable(getattr(self, n)), "layer": self.layers[n]} for n in LAYERED_FIELDS
            },
            "state": {n: getattr(self, n) for n in STATE_FIELDS},
            "inputs": {
                "metadata": self.metadata.to_dict() if self.metadata else None,
                **{name: _jsonable(dict(self.overrides.get(name, {}))) for name in OVERRIDE_LAYERS},
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """A persisted profile back; a damaged document raises ``ValueError`` saying what broke.

        ValueError rather than an ``LtcaiError``: no user sent it; the daemon logs it and
        rebuilds the profile from its layers.
        """
        try:
            return _profile_from_dict(data)
        except (KeyError, TypeError, AttributeError, ValueError, InvalidRequest) as exc:
            raise ValueError(f"stored profile is not readable: {exc!r}") from exc


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _profile_from_dict(data: Mapping[str, Any]) -> Profile:
    if data.get("schema") != PROFILE_SCHEMA:
        raise ValueError(f"unsupported profile schema {data.get('schema')!r}")
    stored = data["fields"]
    values = {n: _coerce("stored", n, stored[n]["value"]) for n in LAYERED_FIELDS}
    layers = {n: stored[n]["layer"] for n in LAYERED_FIELDS}
    if not set(layers.values()) <= set(LAYERS):
        raise ValueError(f"unknown layer in {layers}")
    state = {n: data["state"][n] for n in STATE_FIELDS}
    inputs = data["inputs"]
    metadata = ModelMetadata.from_dict(inputs["metadata"]) if inputs.get("metadata") else None
    overrides = {layer: _normalize_overrides(layer, inputs.get(layer)) for layer in OVERRIDE_LAYERS}
    profile = Profile(
        model_id=data["model_id"],
        engine=_canonical_engine(data.get("engine")),
        **values,
        layers=MappingProxyType(layers),
        metadata=metadata,
        overrides=MappingProxyType(overrides),
    )
    return profile.with_state(**state)


# --------------------------------------------------------------------------- building


def resolve_family(
    model_id: str,
    metadata: ModelMetadata | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[str, str]:
    """``(family, layer)``: by name (layer "family"); metadata only corrects an ``unknown``.

    An engine/user/learned override of ``family`` wins over both (it also picks the row).
    """
    family, layer = detect_family(model_id), "family"
    if family == UNKNOWN_FAMILY and metadata is not None:
        corrected = _family_from_metadata(metadata)
        if corrected:
            family, layer = corrected, "model"
    for name in OVERRIDE_LAYERS:
        chosen = (overrides or {}).get(name, {}).get("family")
        if chosen:
            family, layer = chosen, name
    return family, layer


def _apply_layer(
    values: dict[str, Any], layers: dict[str, str], layer: str, overrides: Mapping[str, Any]
) -> None:
    if "stop" in overrides:
        values["stop"], layers["stop"] = merge_stops(overrides["stop"]), layer
    if "extra_stop" in overrides:
        merged = merge_stops(values["stop"], overrides["extra_stop"])
        if merged != values["stop"]:
            values["stop"], layers["stop"] = merged, layer
    for key, value in overrides.items():
        if key not in ("family", "stop", "extra_stop"):
            values[key], layers[key] = value, layer


def _resolve(
    model_id: str,
    metadata: ModelMetadata | None,
    overrides: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, Any], dict[str, str]]:
    family, family_layer = resolve_family(model_id, metadata, overrides)
    values: dict[str, Any] = {**family_defaults(family), "chat_template": None, "family": family}
    layers = {n: "family" for n in LAYERED_FIELDS}
    layers["family"] = family_layer
    _apply_layer(values, layers, "model", _model_layer(metadata))
    for name in OVERRIDE_LAYERS:
        _apply_layer(values, layers, name, overrides[name])
    return values, layers


def build_profile(
    model_id: str,
    engine: str | None = None,
    *,
    metadata: ModelMetadata | None = None,
    engine_overrides: Mapping[str, Any] | None = None,
    user_overrides: Mapping[str, Any] | None = None,
    learned: Mapping[str, Any] | None = None,
) -> Profile:
    """Resolve the five layers for ``model_id`` on ``engine``; state starts untested."""
    if not isinstance(model_id, str) or not model_id:
        raise InvalidRequest("a profile needs a model id", code="invalid_model_id")
    overrides = {
        "engine": _normalize_overrides("engine", engine_overrides),
        "user": _normalize_overrides("user", user_overrides),
        "learned": _normalize_overrides("learned", learned),
    }
    values, layers = _resolve(model_id, metadata, overrides)
    return Profile(
        model_id=model_id,
        engine=_canonical_engine(engine),
        **values,
        layers=MappingProxyType(layers),
        metadata=metadata,
        overrides=MappingProxyType(overrides),
    )


_UNCHANGED: Any = object()


def rebuild_profile(
    profile: Profile,
    *,
    metadata: ModelMetadata | None = _UNCHANGED,
    engine_overrides: Mapping[str, Any] | None = _UNCHANGED,
    user_overrides: Mapping[str, Any] | None = _UNCHANGED,
    learned: Mapping[str, Any] | None = _UNCHANGED,
) -> Profile:
    """Re-resolve ``profile`` with some layers replaced (config reload, new metadata); keeps state."""

    def pick(new: Any, old: Any) -> Any:
        return old if new is _UNCHANGED else new

    rebuilt = build_profile(
        profile.model_id,
        profile.engine,
        metadata=pick(metadata, profile.metadata),
        engine_overrides=pick(engine_overrides, profile.overrides.get("engine")),
        user_overrides=pick(user_overrides, profile.overrides.get("user")),
        learned=pick(learned, profile.overrides.get("learned")),
    )
    return rebuilt.with_state(**{n: getattr(profile, n) for n in STATE_FIELDS})


def _iso(moment: str | datetime | None) -> str | None:
    return moment.isoformat() if isinstance(moment, datetime) else moment


def learn_from_smoke(
    profile: Profile,
    verdict_status: str,
    reason: str | None,
    leaked_marker: str | None,
    validated_at: str | datetime | None,
) -> Profile:
    """Record a smoke-test verdict (SPEC.md §4) and learn a leaked marker as a stop (layer 5).

    The marker is kept in the learned layer even when it already is a stop, so it survives
    a user ``stop`` that later replaces the list. ``last_test_error`` is None when usable.
    """
    if verdict_status not in ("ok", "degraded", "failed"):
        raise ValueError(f"verdict status must be ok, degraded or failed, got {verdict_status!r}")
    if leaked_marker and leaked_marker.strip():
        learned = dict(profile.overrides.get("learned", {}))
        learned["extra_stop"] = merge_stops(learned.get("extra_stop", ()), (leaked_marker,))
        profile = rebuild_profile(profile, learned=learned)
    usable = verdict_status != "failed"
    return profile.with_state(
        chat_compatible=usable,
        quality_status=verdict_status,
        last_test_error=None if usable else (reason or verdict_status),
        validated_at=_iso(validated_at),
    )


def select_user_overrides(
    table: Mapping[str, Mapping[str, Any]] | None, model_id: str, engine: str | None = None
) -> dict[str, Any]:
    """Layer 4 for one profile from the config's ``[profiles]`` table.

    An entry under the bare model id applies on every engine; one under ``engine:model_id``
    is more specific and wins field by field.
    """
    table = table or {}
    merged = dict(table.get(model_id) or {})
    key = profile_key(model_id, engine)
    if key != model_id:
        merged.update(table.get(key) or {})
    return merged


_GENERATION_FIELDS = ("temperature", "top_p", "max_tokens")


def generation_params(
    profile: Profile, request_overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Sampling parameters for one chat (SPEC.md §7): the profile's; a request's non-null win.

    A request's ``stop`` *adds* to the profile's: those stops are what keeps the model from
    running on into the next turn, and a client asking for its own stops does not know them.
    """
    request = request_overrides or {}
    params: dict[str, Any] = {n: getattr(profile, n) for n in _GENERATION_FIELDS}
    for name in _GENERATION_FIELDS:
        if request.get(name) is not None:
            params[name] = _coerce("request", name, request[name])
    extra = request.get("stop")
    extra_stops = _coerce("request", "stop", extra) if extra is not None else ()
    params["stop"] = list(merge_stops(profile.stop, extra_stops))
    return params


# --------------------------------------------------------------------------- cache


class ProfileCache:
    """Profiles by key (SPEC.md §2). Owned by the daemon and passed down; never a global."""

    def __init__(self, profiles: Iterable[Profile] = ()) -> None:
        self._profiles: dict[str, Profile] = {}
        for profile in profiles:
            self.put(profile)

    def get(self, model_id: str, engine: str | None = None) -> Profile | None:
        return self._profiles.get(profile_key(model_id, engine))

    def by_key(self, key: str) -> Profile | None:
        """Look up by the ``engine:model_id`` key itself (what ``ltcai profiles forget`` gets)."""
        return self._profiles.get(key)

    def put(self, profile: Profile) -> Profile:
        self._profiles[profile.key] = profile
        return profile

    def forget(self, model_id: str, engine: str | None = None) -> bool:
        """Drop a profile; True if there was one."""
        return self._profiles.pop(profile_key(model_id, engine), None) is not None

    def ensure_profile(self, model_id: str, engine: str | None = None, **layers: Any) -> Profile:
        """The cached profile, or one built from ``layers`` (``build_profile``'s keywords), cached."""
        cached = self.get(model_id, engine)
        if cached is not None:
            return cached
        return self.put(build_profile(model_id, engine, **layers))

    def items(self) -> list[tuple[str, Profile]]:
        return sorted(self._profiles.items())

    def __len__(self) -> int:
        return len(self._profiles)

    def __contains__(self, key: object) -> bool:
        return key in self._profiles

    def __iter__(self) -> Iterator[Profile]:
        return iter(list(self._profiles.values()))
