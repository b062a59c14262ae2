"""The built-in engines are plain plugins in ``DEFAULT_PLUGINS``; each can be blocked by name.

The expected modules and engines are written out here, not read from ``DEFAULT_PLUGINS``:
a built-in dropped from that tuple must fail these tests, not shrink what they expect.
"""

from __future__ import annotations

import importlib

import pytest

from ltcai.config.settings import load_settings
from ltcai.plugins import DEFAULT_PLUGINS, build_plugin_host

BUILTIN_MODULES = (
    "ltcai.engines.llamacpp",
    "ltcai.engines.mlx",
    "ltcai.engines.ollama",
    "ltcai.engines.vllm",
    "ltcai.engines.lmstudio",
    "ltcai.engines.openai_remote",
)
LOCAL = {"llamacpp", "mlx", "ollama", "vllm", "lmstudio"}
REMOTE = {"openai", "anthropic", "openrouter", "groq", "together"}


def test_the_builtins_are_exactly_these_modules() -> None:
    assert DEFAULT_PLUGINS == BUILTIN_MODULES


def test_every_builtin_engine_is_registered() -> None:
    host = build_plugin_host(load_entry_points=False)
    engines = host.engines()
    assert set(engines) == LOCAL | REMOTE
    assert set(DEFAULT_PLUGINS) <= set(host.plugin_names)
    for name, adapter in engines.items():
        assert adapter.name == name and adapter.description, name


@pytest.mark.parametrize("module_name", BUILTIN_MODULES)
def test_each_builtin_module_registers_its_engines_through_the_hook(module_name: str) -> None:
    registered: list[object] = []
    importlib.import_module(module_name).ltcai_register_engines(register=registered.append)
    assert registered, f"{module_name} registers no engine"


@pytest.mark.parametrize(
    ("disabled", "gone"),
    [
        ({"ollama"}, {"ollama"}),  # a built-in's short name
        ({"ltcai.engines.lmstudio"}, {"lmstudio"}),  # or its module name
        ({"openai_remote", "vllm"}, REMOTE | {"vllm"}),  # one plugin, five providers
    ],
)
def test_a_builtin_is_blocked_by_name(disabled: set[str], gone: set[str]) -> None:
    engines = build_plugin_host(disabled=disabled, load_entry_points=False).engines()
    assert set(engines) == (LOCAL | REMOTE) - gone


def test_ltcai_disable_plugins_reaches_the_plugin_host() -> None:
    settings = load_settings({"LTCAI_DISABLE_PLUGINS": "ollama, lmstudio,openai_remote"})
    engines = build_plugin_host(disabled=settings.disable_plugins, load_entry_points=False).engines()
    assert set(engines) == LOCAL - {"ollama", "lmstudio"}
