"""Post-processing steps from plugins extend the built-ins (issue 10, defect 3).

Real plugin host (pluggy), real compat steps, the daemon's real ``postprocess_text``; the
plugin is a small object registered on the host, like any installed plugin module.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest

from ltcai.compat import POSTPROCESSORS, build_profile
from ltcai.daemon.chat import postprocess_text
from ltcai.errors import InvalidRequest, PluginError
from ltcai.plugins import PluginHost, build_plugin_host, hookimpl


class _StepPlugin:
    def __init__(self, name: str, step: Callable[[str], str]) -> None:
        self.name, self.step = name, step

    @hookimpl
    def ltcai_register_postprocessors(self, register: Callable[[str, Callable[[str], str]], None]) -> None:
        register(self.name, self.step)


def _host_with(*plugins: _StepPlugin) -> PluginHost:
    # build_plugin_host collects the registries at once; these plugins join its manager
    # afterwards, so a fresh host over that manager collects them.
    manager = build_plugin_host(builtin=(), load_entry_points=False).manager
    for plugin in plugins:
        manager.register(plugin)
    return PluginHost(manager)


def test_a_plugin_step_is_added_to_the_builtins() -> None:
    steps = _host_with(_StepPlugin("shout", str.upper)).postprocessors()
    assert set(steps) == {*POSTPROCESSORS, "shout"}
    assert steps["strip_role_tokens"] is POSTPROCESSORS["strip_role_tokens"]


def test_with_a_plugin_installed_the_chat_path_still_strips_role_tokens() -> None:
    """The defect: ``postprocessors() or None`` handed the chat path the plugin's steps
    alone, so ``strip_role_tokens`` was unknown (skipped) and ``<|im_end|>`` reached the user."""
    services = SimpleNamespace(plugins=_host_with(_StepPlugin("shout", str.upper)))
    profile = build_profile("Qwen/Qwen2.5-0.5B-Instruct")  # steps: strip_role_tokens
    answer, reasoning = postprocess_text(services, profile, "2 + 2 = 4.<|im_end|>")  # type: ignore[arg-type]
    assert (answer, reasoning) == ("2 + 2 = 4.", None)


def test_a_profile_may_name_builtin_and_plugin_steps_together() -> None:
    services = SimpleNamespace(plugins=_host_with(_StepPlugin("shout", str.upper)))
    profile = build_profile("x", user_overrides={"postprocess": ["strip_role_tokens", "shout"]})
    assert postprocess_text(services, profile, "<s> four ")[0] == "FOUR"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("plugins", "owner"),
    [
        ([_StepPlugin("strip_role_tokens", str.upper)], "a built-in step"),
        ([_StepPlugin("shout", str.upper), _StepPlugin("shout", str.lower)], "another plugin"),
    ],
)
def test_a_step_name_already_taken_is_refused(plugins: list[_StepPlugin], owner: str) -> None:
    with pytest.raises(PluginError) as info:
        _host_with(*plugins).postprocessors()
    assert info.value.code == "plugin_error" and not isinstance(info.value, InvalidRequest)
    assert owner in info.value.message
