"""Unit tests of model id validation (SPEC.md §5 Improve), pure functions only."""

from __future__ import annotations

import posixpath
import unicodedata
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ltcai.compat._model_ids as model_ids_module
from ltcai.compat._model_ids import MAX_MODEL_ID_LENGTH, VALIDATION_RULES, validate_model_id
from ltcai.errors import InvalidModelId

ROOT = "/srv/models"


def rule_of(model_id: object, **kwargs) -> str:
    with pytest.raises(InvalidModelId) as info:
        validate_model_id(model_id, **kwargs)  # type: ignore[arg-type]
    assert info.value.rule in VALIDATION_RULES
    return info.value.rule


def test_exported_names() -> None:
    assert set(model_ids_module.__all__) == {
        "MAX_MODEL_ID_LENGTH", "VALIDATION_RULES", "check_resolved", "check_text", "preview",
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
        "absolute_path_outside_roots", "leading_dash", "percent_sign",
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
            ["/", "\\", "..", "../", "..\\", ":", "~", "-", "%2e%2e", "%", "%00", "\x00", "\x1b[31m",
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
    assert "%" not in accepted
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


@pytest.mark.parametrize("model_id", ["a%00b", "org/50%off", "%", "hf.co/org/repo:Q4%5F0", "ollama:a%20b"])
def test_a_percent_sign_is_refused_naming_the_rule(model_id: str) -> None:
    """Issue 10, defect 8: no engine's namespace has '%', and a decoded id means another."""
    assert rule_of(model_id) == "percent_sign"


def test_an_encoded_traversal_is_still_called_traversal() -> None:
    # The more specific rule first: '%2e%2e' is a '..' segment once decoded.
    assert rule_of("org/%2e%2e/x") == "path_traversal"
