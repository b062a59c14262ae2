"""The compat package's public surface (STYLE.md 8): what other layers may import.

Other modules (the daemon, engines, the CLI, plugins) import ``ltcai.compat`` only;
the ``_modules`` behind it are free to move. A name added or dropped here is an API
change and must be deliberate.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import ltcai.compat

PUBLIC = {
    # families and profile layer 1
    "FAMILY_DEFAULTS", "UNKNOWN_FAMILY", "detect_family", "family_defaults",
    # profiles: layers, metadata (layer 2), user overrides (layer 4), cache, smoke learning
    "LAYERS", "ModelMetadata", "Profile", "ProfileCache", "build_profile", "learn_from_smoke",
    "metadata_from_hf_configs", "is_marker_token", "profile_key", "rebuild_profile", "resolve_family",
    "select_user_overrides", "generation_params",
    # clean answers: the chat path's entry points and the marker catalogue
    "AnswerDelta", "AnswerParts", "AnswerStream", "clean_answer", "MARKER_CATALOGUE",
    "TemplateMarkers",
    # measured capabilities
    "CAPABILITY_KEYS", "CAPABILITY_STATUSES", "Capability", "capabilities_to_dict", "untested_capabilities",
    # post-processing: markers, steps, streaming, harmony
    "BAD_MARKERS", "HARMONY_MARKERS", "USER_TURN_MARKERS", "POSTPROCESSORS", "apply_postprocess",
    "strip_role_tokens", "trim_after_user_marker", "StreamPostprocessor", "HarmonyDelta",
    "HarmonyParts", "HarmonyStreamPostprocessor", "postprocess_harmony", "split_harmony",
    # smoke test
    "SMOKE_PROMPT", "SmokeVerdict", "classify_answer",
    # engines, providers, resolution, ids
    "KNOWN_PROVIDERS", "LOCAL_ENGINES", "REMOTE_PROVIDERS", "normalize_engine",
    "split_provider_prefix", "BUILTIN_ALIASES", "Resolution", "default_engine", "resolve",
    "validate_model_id", "HFRef", "parse_hf_reference",
}  # fmt: skip

PACKAGE = Path(ltcai.compat.__file__).parent
MODULES = sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE)]))


def test_the_public_names_are_exactly_the_intended_ones() -> None:
    assert set(ltcai.compat.__all__) == PUBLIC
    assert len(ltcai.compat.__all__) == len(PUBLIC)  # no name listed twice
    for name in PUBLIC:
        assert getattr(ltcai.compat, name) is not None


def test_every_module_behind_it_is_private_and_declares_its_names() -> None:
    assert MODULES and all(name.startswith("_") for name in MODULES)
    for name in MODULES:
        module = importlib.import_module(f"ltcai.compat.{name}")
        assert module.__all__, name
        assert [n for n in module.__all__ if not hasattr(module, n)] == [], name


@pytest.mark.parametrize("name", MODULES)
def test_no_module_is_a_god_module(name: str) -> None:
    """Issue 10: compat split along its seams; each module one job, none over ~500 lines."""
    lines = (PACKAGE / f"{name}.py").read_text(encoding="utf-8").count("\n")
    assert lines <= 450, f"ltcai/compat/{name}.py has {lines} lines"
