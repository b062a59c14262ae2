"""Unit tests of Hugging Face references (SPEC.md §5: ``hf.co/org/repo:Q4_K_M``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ltcai.compat._huggingface import HFRef, parse_hf_reference

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
