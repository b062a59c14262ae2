"""Building the plugin manager and the typed facade the daemon calls hooks through.

Built at daemon start and passed down (never an import-time global), so tests and
several daemons in one process never leak plugins into each other.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from ..compat import POSTPROCESSORS
from ..errors import InvalidRequest
from . import hookspecs

if TYPE_CHECKING:
    from ..engines.base import EngineAdapter

__all__ = ["DEFAULT_PLUGINS", "PluginHost", "build_plugin_host"]

# The built-in engines: ordinary plugins, listed once. Each is blocked by its short name
# (``LTCAI_DISABLE_PLUGINS=ollama``).
DEFAULT_PLUGINS: tuple[str, ...] = (
    "ltcai.engines.llamacpp",
    "ltcai.engines.mlx",
    "ltcai.engines.ollama",
    "ltcai.engines.vllm",
    "ltcai.engines.lmstudio",
    "ltcai.engines.openai_remote",
)

ENTRY_POINT_GROUP = "ltcai"


class PluginHost:
    """Typed, keyword-only access to the hooks, and the registries they fill."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager
        self._engines: dict[str, EngineAdapter] | None = None
        self._postprocessors: Mapping[str, Callable[[str], str]] | None = None

    @property
    def plugin_names(self) -> list[str]:
        # A blocked plugin stays listed by pluggy with None in its place: it is not loaded.
        return sorted(name for name, plugin in self.manager.list_name_plugin() if name and plugin is not None)

    def engines(self) -> dict[str, EngineAdapter]:
        if self._engines is None:
            found: dict[str, EngineAdapter] = {}

            def register(adapter: EngineAdapter) -> None:
                if not adapter.name:
                    raise InvalidRequest(f"engine adapter {adapter!r} has no name", code="plugin_error")
                if adapter.name in found:
                    raise InvalidRequest(
                        f"two plugins register an engine named {adapter.name!r}: "
                        f"{type(found[adapter.name]).__module__} and {type(adapter).__module__}",
                        hint="disable one with LTCAI_DISABLE_PLUGINS",
                        code="plugin_error",
                    )
                found[adapter.name] = adapter

            self.manager.hook.ltcai_register_engines(register=register)
            self._engines = found
        return self._engines

    def postprocessors(self) -> Mapping[str, Callable[[str], str]]:
        """Every step a profile may name: the built-ins, extended by the plugins' steps.

        A plugin adds steps; it never replaces the built-ins (one plugin installed must not
        make ``strip_role_tokens`` unknown). A name already taken, by a built-in or by an
        earlier plugin, is refused: a profile's step list must mean one thing.
        """
        if self._postprocessors is None:
            found: dict[str, Callable[[str], str]] = dict(POSTPROCESSORS)

            def register(name: str, step: Callable[[str], str]) -> None:
                if name in found:
                    owner = "a built-in step" if name in POSTPROCESSORS else "registered by another plugin"
                    raise InvalidRequest(
                        f"a plugin registers a post-processing step named {name!r}, which is {owner}",
                        hint="give the plugin's step another name, or disable one with LTCAI_DISABLE_PLUGINS",
                        code="plugin_error",
                    )
                found[name] = step

            self.manager.hook.ltcai_register_postprocessors(register=register)
            self._postprocessors = MappingProxyType(found)
        return self._postprocessors

    def resolve_model(self, *, model_id: str, engine: str) -> str | None:
        return self.manager.hook.ltcai_resolve_model(model_id=model_id, engine=engine)

    def profile_overrides(self, *, model_id: str, engine: str | None, family: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        # pluggy calls the last registered first; reverse so later plugins win.
        for result in reversed(
            self.manager.hook.ltcai_profile_overrides(model_id=model_id, engine=engine, family=family)
        ):
            if result:
                merged.update(result)
        return merged


def _import_plugin(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise InvalidRequest(
            f"plugin module {name!r} cannot be imported: {exc}", code="plugin_error"
        ) from exc


def build_plugin_host(
    *,
    disabled: Iterable[str] = (),
    extra_modules: Iterable[str] = (),
    builtin: Iterable[str] = DEFAULT_PLUGINS,
    load_entry_points: bool = True,
) -> PluginHost:
    """A fresh plugin manager with the built-ins, entry-point plugins and ``extra_modules``.

    ``disabled`` blocks plugins by name: a built-in's module name or its short name
    (``llamacpp`` for ``ltcai.engines.llamacpp``), or an entry point's name.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    blocked = set(disabled)
    for name in blocked:
        manager.set_blocked(name)
    for module_name in (*builtin, *extra_modules):
        short = module_name.rsplit(".", 1)[-1]
        if module_name in blocked or short in blocked:
            continue
        manager.register(_import_plugin(module_name), name=module_name)
    if load_entry_points:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    manager.check_pending()
    return PluginHost(manager)
