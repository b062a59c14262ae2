"""``hf_hub_cache`` finds the folder huggingface_hub itself would use, for every way to set it.

The client resolves ids without importing huggingface_hub, so the rule is re-read from
the environment; each case asks a fresh interpreter's ``huggingface_hub.constants``
(which reads the environment once, at import) for the answer to compare with.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltcai.config.paths import hf_hub_cache

_CACHE_VARIABLES = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HF_HUB_ENABLE_STAGING")


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"XDG_CACHE_HOME": "{tmp}/xdg"},
        {"HF_HOME": "{tmp}/home", "XDG_CACHE_HOME": "{tmp}/xdg"},
        {"HF_HOME": "~/hf-home"},
        {"HUGGINGFACE_HUB_CACHE": "{tmp}/legacy", "HF_HOME": "{tmp}/home"},
        {"HF_HUB_CACHE": "{tmp}/hub", "HUGGINGFACE_HUB_CACHE": "{tmp}/legacy", "HF_HOME": "{tmp}/home"},
        {"HF_HUB_CACHE": "$HOME/hub-in-home"},
    ],
    ids=lambda settings: "+".join(settings) or "defaults",
)
def test_same_folder_as_huggingface_hub(settings: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _CACHE_VARIABLES}
    env["HOME"] = str(tmp_path / "user")
    env.update({k: v.replace("{tmp}", str(tmp_path)) for k, v in settings.items()})
    theirs = subprocess.run(
        [sys.executable, "-c", "from huggingface_hub import constants; print(constants.HF_HUB_CACHE)"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()
    monkeypatch.setenv("HOME", env["HOME"])  # ~ and $HOME expand from this process's environment
    ours = hf_hub_cache(env)
    assert str(ours) == theirs
    assert ours.is_absolute()
