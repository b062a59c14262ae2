"""Unit tests of family detection by name (SPEC.md §1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ltcai.compat._families import FAMILY_RULES, UNKNOWN_FAMILY, detect_family
from ltcai.compat._providers import ENGINE_ALIASES, KNOWN_PROVIDERS

SPEC_ORDER = (
    "gpt-oss", "gemma", "qwen", "llama", "mistral", "phi",
    "deepseek", "yi", "claude", "gpt-4", "gpt-3.5", "o1",
)  # fmt: skip


def test_rules_are_in_spec_order() -> None:
    assert tuple(family for family, _ in FAMILY_RULES) == SPEC_ORDER


# Each family: ids that match (every spelling the rule allows) ...
MATCHES = {
    "gpt-oss": ["gpt-oss:20b", "gpt_oss", "gptoss", "openai/gpt-oss-120b", "GPT-OSS-20B",
                "mlx-community/gpt-oss-20b-MXFP4-Q8"],
    "gemma": ["gemma3:270m", "google/gemma-2-9b-it", "GEMMA", "codegemma"],
    "qwen": ["qwen2.5:7b", "Qwen/Qwen2.5-0.5B-Instruct", "QWEN3", "myqwen"],
    "llama": ["llama3.2:1b", "meta-llama/Llama-3.1-8B-Instruct", "meta_llama_3", "Llama-3",
              "LLAMA", "org/llama-2-7b"],
    "mistral": ["mistral:7b", "mistralai/Mistral-7B-Instruct-v0.3", "Mixtral-8x7B", "mixtral"],
    "phi": ["phi3:mini", "phi-3", "phi_4", "microsoft/Phi-3-mini-4k-instruct", "PHI4"],
    "deepseek": ["deepseek-r1:7b", "deepseek-ai/DeepSeek-V3", "DEEPSEEK"],
    "yi": ["yi-34b", "yi_6b", "yi1.5", "01-ai/Yi-1.5-9B-Chat", "YI-6B"],
    "claude": ["claude-3-5-sonnet", "claude", "CLAUDE-3-opus"],
    "gpt-4": ["gpt-4o", "gpt4", "gpt_4-turbo", "GPT-4.1"],
    "gpt-3.5": ["gpt-3.5-turbo", "gpt35", "gpt_3.5", "GPT-3.5"],
    "o1": ["o1", "o1-mini", "O1-preview", "openai/o1"],
}

# ... and near misses that must not (each would match if the rule were looser).
NEAR_MISSES = {
    "gpt-oss": ["gpt--oss", "gpt-o-ss", "gpt oss"],
    "gemma": ["gema-2", "gem-ma"],
    "qwen": ["qwn2", "q-wen"],
    "llama": ["tinyllama", "TinyLlama-1.1B", "codellama", "lama-3", "metallama"],
    "mistral": ["mistal-7b", "mixtal"],
    "phi": ["phi", "phi-mini", "delphi-3", "sophi3", "phix3", "phi--3"],
    "deepseek": ["deep-seek", "deepsek"],
    "yi": ["yi", "yield-3", "tinyyi-3", "yi--6"],
    "claude": ["claud", "cla-ude"],
    "gpt-4": ["gpt-5", "gpt--4", "gp-4"],
    "gpt-3.5": ["gpt-3", "gpt-3-5", "gpt-3_5"],
    "o1": ["o3", "foo1", "bo1-mini", "o-1"],
}


@pytest.mark.parametrize(
    ("family", "model_id"), [(f, m) for f, ids in MATCHES.items() for m in ids]
)
def test_family_rule_matches(family: str, model_id: str) -> None:
    assert detect_family(model_id) == family


@pytest.mark.parametrize(
    ("family", "model_id"), [(f, m) for f, ids in NEAR_MISSES.items() for m in ids]
)
def test_family_rule_near_miss_is_unknown(family: str, model_id: str) -> None:
    assert detect_family(model_id) == UNKNOWN_FAMILY


@pytest.mark.parametrize(
    ("model_id", "family"),
    [
        ("gpt-oss-gpt-4", "gpt-oss"),  # rule 1 before rule 10
        ("gemma-qwen-merge", "gemma"),
        ("qwen-llama-merge", "qwen"),
        ("llama-mistral-merge", "llama"),
        ("mistral-phi-3", "mistral"),
        ("phi-3-deepseek", "phi"),
        ("deepseek-yi-34b", "deepseek"),
        ("yi-34b-claude", "yi"),
        ("claude-gpt-4", "claude"),
        ("gpt-4-gpt-3.5", "gpt-4"),
        ("gpt-3.5-o1", "gpt-3.5"),
        # Real ids where the order decides: llama (4) and qwen (3) come before deepseek (7).
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "llama"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "qwen"),
    ],
)
def test_first_matching_rule_wins(model_id: str, family: str) -> None:
    assert detect_family(model_id) == family


@pytest.mark.parametrize(
    "model_id",
    [
        "llama3.2:1b",  # the 0.3.x code cut this to "1b" and said unknown
        "ollama:llama3.2:1b",
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
    ],
)
def test_improve_ollama_tags_and_hf_refs_are_llama(model_id: str) -> None:
    assert detect_family(model_id) == "llama"


@pytest.mark.parametrize("model_id", [None, "", "   ", "\t\n"])
def test_empty_or_missing_is_unknown(model_id: str | None) -> None:
    assert detect_family(model_id) == UNKNOWN_FAMILY


@pytest.mark.parametrize("model_id", ["smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct", "1b"])
def test_names_matching_no_rule_are_unknown(model_id: str) -> None:
    assert detect_family(model_id) == UNKNOWN_FAMILY


PREFIXES = list(KNOWN_PROVIDERS) + list(ENGINE_ALIASES)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_known_prefix_is_stripped(prefix: str) -> None:
    """``mistral`` (rule 5) is found only if a ``llama…:`` prefix (rule 4) is removed first."""
    assert detect_family(f"{prefix}:mistral-7b") == "mistral"
    assert detect_family(f"{prefix.upper()}:mistral-7b") == "mistral"
    assert detect_family(f"{prefix}:smollm2") == UNKNOWN_FAMILY


def test_prefix_stripping_is_what_decides_for_llama_named_engines() -> None:
    # Without removal "llamacpp" would match llama before mistral.
    assert detect_family("llamacpp:mistral-7b") == "mistral"
    assert detect_family("llama.cpp:phi-3") == "phi"


@pytest.mark.parametrize(
    ("model_id", "family"),
    [
        ("gemma:qwen", "gemma"),  # "gemma:" names no provider, so it stays part of the name
        ("llama:smollm2", "llama"),
        ("foo:mistral", "mistral"),
        ("mymodel:1b", UNKNOWN_FAMILY),
    ],
)
def test_unknown_prefix_is_not_stripped(model_id: str, family: str) -> None:
    assert detect_family(model_id) == family


@given(st.one_of(st.none(), st.text()))
def test_detect_family_always_returns_a_known_family(model_id: str | None) -> None:
    assert detect_family(model_id) in {*SPEC_ORDER, UNKNOWN_FAMILY}
