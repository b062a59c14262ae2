"""Every ltcai hook, in one module. Plugins implement them with :data:`hookimpl`.

Hooks are synchronous and registry-shaped (pluggy has no async hooks): a plugin hands
the daemon objects, and those objects carry the ``async`` methods. Hooks are called
with keyword arguments only, through :class:`ltcai.plugins.PluginHost`.

A minimal engine plugin::

    from ltcai.plugins import hookimpl
    from ltcai.engines.base import EngineAdapter

    class MyEngine(EngineAdapter):
        name = "myengine"
        ...

    @hookimpl
    def ltcai_register_engines(register):
        register(MyEngine())

and in the plugin's ``pyproject.toml``::

    [project.entry-points.ltcai]
    myengine = "my_package.plugin"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from ..engines.base import EngineAdapter

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "ltcai"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def ltcai_register_engines(register: Callable[[EngineAdapter], None]) -> None:
    """Register engine adapters by calling ``register(adapter)`` once per engine.

    :param register: adds an :class:`~ltcai.engines.base.EngineAdapter` instance. Its
        ``name`` must be unique; a second adapter with a taken name is refused with an
        error naming both plugins.

    Called once, when the daemon builds its plugin host at start (not at import time).
    All results are collected (not firstresult).
    """


@hookspec(firstresult=True)
def ltcai_resolve_model(model_id: str, engine: str) -> str | None:
    """Resolve a model id further than the built-in aliases did (SPEC.md §5).

    :param model_id: the id after provider prefix removal and alias lookup.
    :param engine: the engine chosen so far (canonical name).
    :return: a new id, ``"engine:model"`` to switch engine as well (the prefix must be a
        known provider), or None to leave the id alone. The result is validated like
        user input.

    Called during the RESOLVING state of every prepare and by ``ltcai inspect``.
    firstresult: the first plugin returning non-None wins.
    """


@hookspec
def ltcai_profile_overrides(model_id: str, engine: str | None, family: str) -> dict[str, Any] | None:
    """Adjust the compat profile for what an engine needs (profile layer 3, "engine").

    :param model_id: the resolved model id.
    :param engine: the engine serving it, or None.
    :param family: the family detected so far.
    :return: a mapping of profile fields to values (``stop``, ``temperature``,
        ``max_tokens``, ``postprocess``…), or None. Later plugins win on the same field.

    Called whenever a profile is built (prepare, chat with no cached profile, inspect).
    """


@hookspec
def ltcai_register_postprocessors(register: Callable[[str, Callable[[str], str]], None]) -> None:
    """Register named text post-processing steps for the chat fast path (SPEC.md §3).

    :param register: ``register(name, function)``; ``function(text) -> text`` must be pure
        and cheap (it runs on every answer). A profile lists step names in its
        ``postprocess`` field; a step that raises is skipped and logged. The steps add to
        the built-ins (``strip_role_tokens``, ``trim_after_user_marker``); a name that is
        already registered, built-in or by another plugin, is refused.

    Called once, when the daemon builds its plugin host at start.
    """
