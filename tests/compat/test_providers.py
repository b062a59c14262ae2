"""Unit tests of engine names, aliases and the provider-prefix rule (SPEC.md §5, §1)."""

from __future__ import annotations

import pytest

from ltcai.compat._providers import (
    ENGINE_ALIASES,
    KNOWN_PROVIDERS,
    LOCAL_ENGINES,
    REMOTE_PROVIDERS,
    normalize_engine,
    split_provider_prefix,
)


def test_engine_lists_are_the_spec_ones() -> None:
    assert set(LOCAL_ENGINES) == {"mlx", "ollama", "vllm", "lmstudio", "llamacpp"}
    assert set(REMOTE_PROVIDERS) == {"openai", "anthropic", "openrouter", "groq", "together"}
    assert set(KNOWN_PROVIDERS) == set(LOCAL_ENGINES) | set(REMOTE_PROVIDERS)


@pytest.mark.parametrize(
    ("alias", "engine"),
    [
        ("local_mlx", "mlx"),
        ("local-mlx", "mlx"),
        ("llama.cpp", "llamacpp"),
        ("llama-cpp", "llamacpp"),
        ("lm-studio", "lmstudio"),
        ("lmstudio:openai-compatible", "lmstudio"),
    ],
)
@pytest.mark.parametrize("spell", [str.lower, str.upper, str.title])
def test_every_alias_normalizes_in_any_case(alias: str, engine: str, spell) -> None:
    assert normalize_engine(spell(alias)) == engine
    assert normalize_engine(f"  {spell(alias)} ") == engine


def test_alias_table_is_exactly_the_spec_one() -> None:
    assert ENGINE_ALIASES == {
        "local_mlx": "mlx",
        "local-mlx": "mlx",
        "llama.cpp": "llamacpp",
        "llama-cpp": "llamacpp",
        "lm-studio": "lmstudio",
        "lmstudio:openai-compatible": "lmstudio",
    }


@pytest.mark.parametrize("name", KNOWN_PROVIDERS)
def test_canonical_names_normalize_to_themselves_in_any_case(name: str) -> None:
    assert normalize_engine(name) == name
    assert normalize_engine(name.upper()) == name


@pytest.mark.parametrize("name", [None, "", "   ", "llama", "ollama2", "mlx:", "gpt"])
def test_unknown_engine_names_normalize_to_none(name: str | None) -> None:
    assert normalize_engine(name) is None


@pytest.mark.parametrize("name", KNOWN_PROVIDERS)
def test_every_known_provider_prefix_is_split(name: str) -> None:
    assert split_provider_prefix(f"{name}:some/model:tag") == (name, "some/model:tag")
    assert split_provider_prefix(f"{name.upper()}:Model") == (name, "Model")


@pytest.mark.parametrize(("alias", "engine"), sorted(ENGINE_ALIASES.items()))
def test_every_alias_prefix_is_split(alias: str, engine: str) -> None:
    assert split_provider_prefix(f"{alias.upper()}:m") == (engine, "m")


def test_lmstudio_openai_compatible_prefix_wins_over_lmstudio() -> None:
    """The longest prefix is removed whole, not just ``lmstudio:``."""
    assert split_provider_prefix("lmstudio:openai-compatible:foo") == ("lmstudio", "foo")
    assert split_provider_prefix("LMStudio:OpenAI-Compatible:qwen2.5:7b") == (
        "lmstudio",
        "qwen2.5:7b",
    )


@pytest.mark.parametrize(
    "model_id",
    [
        "llama3.2:1b",  # an Ollama tag, not a provider (the 0.3.x bug)
        "gpt-oss:20b",
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
        "mlx-community/gpt-oss-20b-MXFP4-Q8",  # "mlx" without a colon
        "ollamax:foo",
        "foo:ollama:bar",
        "",
    ],
)
def test_unknown_prefix_is_not_split(model_id: str) -> None:
    assert split_provider_prefix(model_id) == (None, model_id)


def test_only_the_first_prefix_is_removed() -> None:
    assert split_provider_prefix("ollama:mlx:x") == ("ollama", "mlx:x")
