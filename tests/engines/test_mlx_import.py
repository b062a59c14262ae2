"""The GGUF → MLX importer (``ltcai.engines.mlx_import``), with real mlx and real models.

Two kinds of input, both real files: the bundled SmolLM2 GGUF (config, tensor layout,
tokenizer and logits compared against llama-cpp-python reading the same file), and tiny
llama GGUFs this module writes with the ``gguf`` package, to check the q/k un-permutation
exactly and the refusals (architecture, quantization) and the whole-or-nothing folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize

from ltcai.engines import mlx_import
from ltcai.engines.bundled import BUNDLED_MODELS, locate_bundled
from ltcai.engines.mlx import run_import
from ltcai.errors import DownloadError, InvalidRequest


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is not None:
        return
    if os.environ.get("LTCAI_REQUIRE_E2E"):
        pytest.fail(f"{module} is missing in CI (scripts/setup-env --test installs it)")
    pytest.skip(f"{module} is not installed (run scripts/setup-env --test)")


@pytest.fixture(scope="module")
def mx() -> Any:
    _require("mlx_lm")
    import mlx.core

    return mlx.core


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    try:
        return locate_bundled(BUNDLED_MODELS["smollm2-135m-instruct-q4_1"]).path
    except DownloadError as exc:
        if os.environ.get("LTCAI_REQUIRE_E2E"):
            pytest.fail(exc.message)
        pytest.skip(exc.message)


@pytest.fixture(scope="module")
def smollm2_mlx(mx: Any, smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("import") / "smollm2"
    mlx_import.import_gguf(smollm2_gguf, out, progress=lambda _line: None)
    return out


# ------------------------------------------------------------------- llama.cpp's rules


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """The q/k row permutation of llama.cpp's ``convert_hf_to_gguf.py`` (``LlamaModel.permute``)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


# ------------------------------------------------------------------ tiny GGUF writer

_HIDDEN, _HEADS, _KV_HEADS, _FF, _LAYERS = 64, 4, 2, 96, 2
_HEAD_DIM = _HIDDEN // _HEADS
# Byte-level BPE needs every byte's character; a few merges and ChatML control tokens.
_BYTES = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 173)] + [chr(c) for c in range(174, 256)]
_BYTES += [chr(256 + i) for i in range(256 - len(_BYTES))]
_TOKENS = [*_BYTES, "he", "ll", "hell", "hello", "<|im_start|>", "<|im_end|>"]
_MERGES = ["h e", "l l", "he ll", "hell o"]


def write_llama_gguf(
    path: Path,
    hf_weights: dict[str, np.ndarray],
    *,
    arch: str = "llama",
    quant: GGMLQuantizationType | None = None,
    raw_override: dict[str, GGMLQuantizationType] | None = None,
) -> Path:
    """A small llama GGUF from Hugging Face-layout weights, q/k permuted as llama.cpp does."""
    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(_LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(_HIDDEN)
    writer.add_feed_forward_length(_FF)
    writer.add_head_count(_HEADS)
    writer.add_head_count_kv(_KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(_TOKENS)
    writer.add_token_types([1] * (len(_TOKENS) - 2) + [3, 3])
    writer.add_token_merges(_MERGES)
    writer.add_bos_token_id(len(_TOKENS) - 2)
    writer.add_eos_token_id(len(_TOKENS) - 1)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
    for name, array in hf_weights.items():
        gguf_name, data = _gguf_tensor(name, array)
        raw = (raw_override or {}).get(gguf_name)
        if raw is not None:
            writer.add_tensor(gguf_name, _raw_bytes(data.shape, raw), raw_dtype=raw)
        elif quant is not None and data.ndim == 2:
            writer.add_tensor(gguf_name, quantize(data, quant), raw_dtype=quant)
        else:
            writer.add_tensor(gguf_name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _raw_bytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> np.ndarray:
    from gguf.constants import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[qtype]
    return np.zeros((shape[0], shape[1] // block * size), dtype=np.uint8)


_HF_TO_GGUF = {v: k for k, v in {**mlx_import._LAYER_PARTS, **mlx_import._TOP_PARTS}.items()}


def _gguf_tensor(hf: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    module = hf.removesuffix(".weight")
    if module.startswith("model.layers."):
        _, _, layer, rest = module.split(".", 3)
        name = f"blk.{layer}.{_HF_TO_GGUF[rest]}.weight"
    else:
        name = f"{_HF_TO_GGUF[module]}.weight"
    if name.endswith("attn_q.weight"):
        array = llama_cpp_permute(array, _HEADS)
    elif name.endswith("attn_k.weight"):
        array = llama_cpp_permute(array, _KV_HEADS)
    return name, np.ascontiguousarray(array)


def hf_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    weights = {"model.embed_tokens.weight": w(len(_TOKENS), _HIDDEN), "model.norm.weight": w(_HIDDEN)}
    for i in range(_LAYERS):
        p = f"model.layers.{i}."
        weights |= {
            p + "self_attn.q_proj.weight": w(_HEADS * _HEAD_DIM, _HIDDEN),
            p + "self_attn.k_proj.weight": w(_KV_HEADS * _HEAD_DIM, _HIDDEN),
            p + "self_attn.v_proj.weight": w(_KV_HEADS * _HEAD_DIM, _HIDDEN),
            p + "self_attn.o_proj.weight": w(_HIDDEN, _HEADS * _HEAD_DIM),
            p + "mlp.gate_proj.weight": w(_FF, _HIDDEN),
            p + "mlp.up_proj.weight": w(_FF, _HIDDEN),
            p + "mlp.down_proj.weight": w(_HIDDEN, _FF),
            p + "input_layernorm.weight": w(_HIDDEN),
            p + "post_attention_layernorm.weight": w(_HIDDEN),
        }
    return weights


def _quiet(_line: str) -> None:
    pass


# ------------------------------------------------------------------------- permutation


def test_unpermute_inverts_llama_cpp_permute_for_query_and_grouped_key_heads() -> None:
    rng = np.random.default_rng(1)
    for heads in (1, 3, 9):
        original = rng.standard_normal((heads * 8, 5)).astype(np.float32)
        permuted = llama_cpp_permute(original, heads)
        assert not np.array_equal(permuted, original)  # the permutation really moves rows
        assert np.array_equal(mlx_import._unpermute(permuted, heads), original)


def test_float_weights_come_back_exactly_under_hugging_face_names(mx: Any, tmp_path: Path) -> None:
    original = hf_weights()
    gguf = write_llama_gguf(tmp_path / "tiny.gguf", original)
    result = mlx_import.import_gguf(gguf, tmp_path / "out", progress=_quiet)
    weights = mx.load(str(result.path / "model.safetensors"))
    # Tied embeddings: no lm_head is written when the GGUF has no output.weight.
    assert set(weights) == set(original)
    for name, array in original.items():
        assert np.array_equal(np.array(weights[name]), array), name
    config = json.loads((result.path / "config.json").read_text())
    assert "quantization" not in config and config["tie_word_embeddings"] is True


def test_q8_0_weights_stay_packed_and_dequantize_to_the_original_rows(mx: Any, tmp_path: Path) -> None:
    original = hf_weights(2)
    gguf = write_llama_gguf(tmp_path / "tiny-q8.gguf", original, quant=GGMLQuantizationType.Q8_0)
    result = mlx_import.import_gguf(gguf, tmp_path / "out", progress=_quiet)
    weights = mx.load(str(result.path / "model.safetensors"))
    config = json.loads((result.path / "config.json").read_text())
    assert config["quantization"] == {"group_size": 32, "bits": 8, "mode": "affine"}
    q = "model.layers.1.self_attn.q_proj"
    assert weights[q + ".weight"].dtype == mx.uint32 and weights[q + ".weight"].shape == (_HIDDEN, _HIDDEN // 4)
    for module in (q, "model.layers.1.self_attn.k_proj", "model.layers.0.mlp.down_proj"):
        restored = mx.dequantize(
            weights[module + ".weight"], weights[module + ".scales"], weights[module + ".biases"], group_size=32, bits=8
        )
        expected = original[module + ".weight"]
        # Q8_0 keeps ~1/127 of each block's largest value: rows in the wrong order would be off by ~1.
        assert np.abs(np.array(restored) - expected).max() < 0.05, module


# ---------------------------------------------------------------------- the real model


def test_smollm2_config_matches_its_gguf(smollm2_mlx: Path) -> None:
    config = json.loads((smollm2_mlx / "config.json").read_text())
    assert config["model_type"] == "llama" and config["rope_traditional"] is False
    assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (576, 30, 1536)
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (9, 3, 64)
    assert (config["vocab_size"], config["max_position_embeddings"]) == (49152, 8192)
    assert config["rope_theta"] == 100000.0 and config["tie_word_embeddings"] is True
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    # Q4_1 file whose embedding table is Q8_0: the exception is named per module.
    assert config["quantization"] == {"group_size": 32, "bits": 4, "mode": "affine", "model.embed_tokens": {"group_size": 32, "bits": 8}}
    tokenizer_config = json.loads((smollm2_mlx / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|im_end|>" and "<|im_start|>" in tokenizer_config["chat_template"]


def test_smollm2_tensor_names_and_packed_shapes(mx: Any, smollm2_mlx: Path) -> None:
    weights = mx.load(str(smollm2_mlx / "model.safetensors"))
    layer = {f"self_attn.{p}_proj" for p in "qkvo"} | {f"mlp.{p}_proj" for p in ("gate", "up", "down")}
    expected = {"model.norm.weight"} | {f"model.embed_tokens.{k}" for k in ("weight", "scales", "biases")}
    for i in range(30):
        expected |= {f"model.layers.{i}.{n}.weight" for n in ("input_layernorm", "post_attention_layernorm")}
        expected |= {f"model.layers.{i}.{m}.{k}" for m in layer for k in ("weight", "scales", "biases")}
    assert set(weights) == expected
    assert weights["model.layers.0.self_attn.q_proj.weight"].shape == (576, 576 * 4 // 32)  # 4-bit packed in uint32
    assert weights["model.layers.0.self_attn.k_proj.scales"].shape == (192, 576 // 32)
    assert weights["model.embed_tokens.weight"].shape == (49152, 576 * 8 // 32)


_TEXTS = [
    "Hello, world! 2+2=4",
    "<|im_start|>user\n  héllo   12345 über\n\nx<|im_end|>",
    "한국어로 한 문장만 답해. 2+2는?",
    "def f(x):\n\treturn x ** 2  # 🙂",
]


@pytest.fixture(scope="module")
def llama_vocab(smollm2_gguf: Path) -> Any:
    _require("llama_cpp")
    import llama_cpp

    return llama_cpp.Llama(str(smollm2_gguf), vocab_only=True, verbose=False)


@pytest.mark.parametrize("text", _TEXTS)
def test_tokenizer_gives_llama_cpp_token_ids_and_round_trips(smollm2_mlx: Path, llama_vocab: Any, text: str) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(smollm2_mlx / "tokenizer.json"))
    ids = tokenizer.encode(text).ids
    assert ids == llama_vocab.tokenize(text.encode(), add_bos=True, special=True)
    assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_smollm2_logits_agree_with_llama_cpp_on_the_same_gguf(smollm2_gguf: Path, smollm2_mlx: Path, llama_vocab: Any) -> None:
    """A mis-converted tensor shows here: without the q/k un-permutation the correlation
    drops to ~0.85 and only 57% of the next-token choices agree (measured)."""
    import llama_cpp
    import mlx.core as mx
    from mlx_lm import load

    prompt = "<|im_start|>user\nWhat is the capital of France? Answer in one word.<|im_end|>\n<|im_start|>assistant\n"
    reference = llama_cpp.Llama(str(smollm2_gguf), logits_all=True, n_ctx=256, n_threads=2, verbose=False)
    tokens = reference.tokenize(prompt.encode(), add_bos=True, special=True)
    reference.eval(tokens)
    expected = np.array(reference.scores[: len(tokens)])
    model, _tokenizer = load(str(smollm2_mlx))
    got = np.array(model(mx.array([tokens]))[0].astype(mx.float32))
    # llama.cpp multiplies with 8-bit quantized activations, MLX in float: close, not equal.
    correlations = [np.corrcoef(expected[i], got[i])[0, 1] for i in range(len(tokens))]
    assert min(correlations) > 0.99, correlations
    agreement = float((expected.argmax(-1) == got.argmax(-1)).mean())
    assert agreement >= 0.85, agreement
    assert expected[-1].argmax() == got[-1].argmax()


# ---------------------------------------------------------------------------- refusals


def _no_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".importing-" in p.name or ".old-" in p.name)


def test_an_unsupported_architecture_is_refused_and_nothing_is_written(mx: Any, tmp_path: Path) -> None:
    gguf = write_llama_gguf(tmp_path / "phi.gguf", hf_weights(), arch="phi3")
    with pytest.raises(mlx_import.GGUFImportError) as caught:
        mlx_import.import_gguf(gguf, tmp_path / "out", progress=_quiet)
    assert caught.value.code == "unsupported_model" and "'phi3'" in caught.value.message
    assert not (tmp_path / "out").exists() and _no_leftovers(tmp_path) == []


@pytest.mark.asyncio
async def test_run_import_refuses_from_the_header_before_mlx_reads_the_file(tmp_path: Path) -> None:
    """Pre-flight in ltcai's own process: no mlx needed to say no."""
    gguf = write_llama_gguf(tmp_path / "phi.gguf", hf_weights(), arch="phi3")
    with pytest.raises(DownloadError) as caught:
        await run_import("/nonexistent/python", gguf, tmp_path / "out", progress=_quiet)
    assert caught.value.code == "unsupported_model"
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(gguf.read_bytes()[: gguf.stat().st_size // 2])
    with pytest.raises(InvalidRequest) as broken:
        await run_import("/nonexistent/python", truncated, tmp_path / "out2", progress=_quiet)
    assert broken.value.code == "invalid_model_file" and "truncated" in broken.value.message


@pytest.mark.asyncio
async def test_a_quantization_mlx_cannot_read_is_named_through_the_engine_python(mx: Any, tmp_path: Path) -> None:
    import sys

    gguf = write_llama_gguf(
        tmp_path / "q5.gguf", hf_weights(), raw_override={"blk.0.ffn_up.weight": GGMLQuantizationType.Q5_0}
    )
    lines: list[str] = []
    with pytest.raises(DownloadError) as caught:
        await run_import(sys.executable, gguf, tmp_path / "out", progress=lines.append)
    assert caught.value.code == "unsupported_quantization"
    assert "Q4_0, Q4_1, Q8_0" in caught.value.message and "llamacpp" in (caught.value.hint or "")
    assert any("reading q5.gguf" in line for line in lines)  # progress came through as it ran
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------- the folder, whole or not


def test_a_failure_while_writing_leaves_no_folder_and_no_partial_files(mx: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = write_llama_gguf(tmp_path / "tiny.gguf", hf_weights())
    original_write = mlx_import._write_json

    def failing_write(path: Path, data: dict[str, Any]) -> None:
        if path.name == "config.json":
            raise OSError(28, "No space left on device")
        original_write(path, data)

    monkeypatch.setattr(mlx_import, "_write_json", failing_write)
    with pytest.raises(OSError):
        mlx_import.import_gguf(gguf, tmp_path / "out", progress=_quiet)
    assert not (tmp_path / "out").exists() and _no_leftovers(tmp_path) == []


def test_reimport_replaces_the_folder_whole_and_tracks_the_source(mx: Any, tmp_path: Path) -> None:
    gguf = write_llama_gguf(tmp_path / "tiny.gguf", hf_weights())
    out = tmp_path / "out"
    mlx_import.import_gguf(gguf, out, progress=_quiet)
    assert mlx_import.is_imported_from(out, gguf)
    with pytest.raises(mlx_import.GGUFImportError) as exists:
        mlx_import.import_gguf(gguf, out, progress=_quiet)
    assert exists.value.code == "already_exists"

    (out / "stray.txt").write_text("from the old import")
    write_llama_gguf(gguf, hf_weights(seed=7))  # the source changed
    assert not mlx_import.is_imported_from(out, gguf)
    mlx_import.import_gguf(gguf, out, force=True, progress=_quiet)
    assert mlx_import.is_imported_from(out, gguf)
    assert not (out / "stray.txt").exists() and _no_leftovers(tmp_path) == []
    weights = mx.load(str(out / "model.safetensors"))
    assert np.array_equal(np.array(weights["model.norm.weight"]), hf_weights(seed=7)["model.norm.weight"])


def test_model_names_are_single_safe_folder_names() -> None:
    for good in ("smollm2", "TinyLlama-1.1B.Q4_0", "a_b"):
        assert mlx_import.valid_model_name(good)
    for bad in ("", "../x", "a/b", ".hidden", "-flag", "a..b", "x" * 200, "a\nb"):
        assert not mlx_import.valid_model_name(bad), bad
