"""Building the plugin manager and the typed facade the daemon calls hooks through.

Built at daemon start and passed down (never an import-time global), so tests and
several daemons in one process never leak plugins into each other.

Everything that can be wrong with the installed plugins is found while building: a plugin
that cannot be imported, one module installed twice, two plugins registering one engine
name. Each is a ``PluginError`` naming the plugins, so ``ltcai serve`` refuses to start
with that message instead of answering some user's request with it later.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from ..compat import POSTPROCESSORS
from ..errors import PluginError
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
            self._engines = _collect_engines(self.manager)
        return self._engines

    def postprocessors(self) -> Mapping[str, Callable[[str], str]]:
        """Every step a profile may name: the built-ins, extended by the plugins' steps.

        A plugin adds steps; it never replaces the built-ins (one plugin installed must not
        make ``strip_role_tokens`` unknown). A name already taken, by a built-in or by an
        earlier plugin, is refused: a profile's step list must mean one thing.
        """
        if self._postprocessors is None:
            self._postprocessors = MappingProxyType(_collect_postprocessors(self.manager))
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


RegisterFn = Callable[..., None]


def _call_each_plugin(hook: Any, what: str, make_register: Callable[[str], RegisterFn]) -> None:
    """Call a registry-shaped hook one plugin at a time, so whatever goes wrong is told as
    that plugin's fault (``PluginError``); in the order the plugins were loaded (built-ins,
    LTCAI_PLUGINS, entry points)."""
    for impl in hook.get_hookimpls():
        plugin = impl.plugin_name
        register = make_register(plugin)
        try:
            impl.function(**{name: register for name in impl.argnames})
        except PluginError:
            raise
        except Exception as exc:  # the plugin's own bug
            raise PluginError(
                f"plugin {plugin!r} failed to register its {what}: {type(exc).__name__}: {exc}",
                hint=f"disable it with LTCAI_DISABLE_PLUGINS={plugin}",
            ) from exc


def _collect_engines(manager: pluggy.PluginManager) -> dict[str, EngineAdapter]:
    """Every plugin's engines, by name; a nameless adapter or a name taken twice is a
    ``PluginError`` naming the plugins (pluggy's names: module or entry point)."""
    found: dict[str, EngineAdapter] = {}
    owner: dict[str, str] = {}

    def make_register(plugin: str) -> RegisterFn:
        def register(adapter: EngineAdapter) -> None:
            if not getattr(adapter, "name", None):
                raise PluginError(f"plugin {plugin!r} registers an engine adapter with no name: {adapter!r}")
            if adapter.name in found:
                raise PluginError(
                    f"two plugins register an engine named {adapter.name!r}: {owner[adapter.name]} and {plugin}",
                    hint="uninstall one, or disable it with LTCAI_DISABLE_PLUGINS=<plugin name>",
                )
            found[adapter.name] = adapter
            owner[adapter.name] = plugin

        return register

    _call_each_plugin(manager.hook.ltcai_register_engines, "engines", make_register)
    return found


def _collect_postprocessors(manager: pluggy.PluginManager) -> dict[str, Callable[[str], str]]:
    """The built-in steps extended by the plugins' steps. A plugin adds steps, never replaces
    one (a profile's step list must mean one thing): a name taken is a ``PluginError``."""
    found: dict[str, Callable[[str], str]] = dict(POSTPROCESSORS)
    owner: dict[str, str] = {}

    def make_register(plugin: str) -> RegisterFn:
        def register(name: str, step: Callable[[str], str]) -> None:
            if name in found:
                taken = "a built-in step" if name in POSTPROCESSORS else f"registered by another plugin, {owner[name]}"
                raise PluginError(
                    f"plugin {plugin!r} registers a post-processing step named {name!r}, which is {taken}",
                    hint="give the plugin's step another name, or disable one with LTCAI_DISABLE_PLUGINS",
                )
            found[name] = step
            owner[name] = plugin

        return register

    _call_each_plugin(manager.hook.ltcai_register_postprocessors, "post-processing steps", make_register)
    return found


def _import_plugin(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # any import-time failure: ImportError, a SyntaxError, a bug
        raise PluginError(
            f"plugin module {name!r} cannot be imported: {type(exc).__name__}: {exc}",
            hint="check LTCAI_PLUGINS, or disable it with LTCAI_DISABLE_PLUGINS",
        ) from exc


def _register(manager: pluggy.PluginManager, plugin: object, name: str) -> None:
    try:
        manager.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:  # a hook implementation that fits no spec
        raise PluginError(f"plugin {name!r} is not a valid ltcai plugin: {exc}", hint=f"disable it with LTCAI_DISABLE_PLUGINS={name}") from exc
    except ValueError as exc:  # pluggy: this name, or this very module, is registered already
        first = manager.get_name(plugin)
        what = (
            f"plugins {first} and {name} are one module, loaded twice"
            if first is not None
            else f"two plugins are named {name!r}"
        )
        raise PluginError(
            f"plugin {name!r} cannot be registered: {what}",
            hint=f"load it once: disable one with LTCAI_DISABLE_PLUGINS={name}",
        ) from exc


def _load_entry_points(manager: pluggy.PluginManager, group: str) -> None:
    """pluggy's ``load_setuptools_entrypoints``, with a failing import told as whose it is."""
    for dist in list(importlib.metadata.distributions()):
        for entry_point in dist.entry_points:
            if entry_point.group != group or manager.has_plugin(entry_point.name) or manager.is_blocked(entry_point.name):
                continue
            try:
                plugin = entry_point.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {entry_point.name!r} (entry point {entry_point.value!r} of the package "
                    f"{dist.metadata['Name']} {dist.version}) cannot be imported: {type(exc).__name__}: {exc}",
                    hint=f"reinstall or uninstall {dist.metadata['Name']}, or disable it with "
                    f"LTCAI_DISABLE_PLUGINS={entry_point.name}",
                ) from exc
            _register(manager, plugin, entry_point.name)


def build_plugin_host(
    *,
    disabled: Iterable[str] = (),
    extra_modules: Iterable[str] = (),
    builtin: Iterable[str] = DEFAULT_PLUGINS,
    load_entry_points: bool = True,
) -> PluginHost:
    """A fresh plugin manager with the built-ins, entry-point plugins and ``extra_modules``.

    ``disabled`` blocks plugins by name: a built-in's module name or its short name
    (``llamacpp`` for ``ltcai.engines.llamacpp``), or an entry point's name. Raises
    ``PluginError`` if a plugin cannot be loaded or two register one engine name.
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
        _register(manager, _import_plugin(module_name), module_name)
    if load_entry_points:
        _load_entry_points(manager, ENTRY_POINT_GROUP)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:  # e.g. a misspelled hook: it would never be called
        name = manager.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(f"plugin {name!r} is not a valid ltcai plugin: {exc}", hint=f"disable it with LTCAI_DISABLE_PLUGINS={name}") from exc
    host = PluginHost(manager)
    # Now, so a clash stops the start-up rather than answering a later request.
    host.engines()
    host.postprocessors()
    return host
