"""A model's own special tokens from its GGUF join the marker catalogue for that model
(issue 14 item 2, profile layer 2).

The reader takes the vocabulary's marker-shaped CONTROL tokens (and USER_DEFINED ones
with bars); the answer cleaner cuts at the model's end tokens and drops its other
control tokens. The real files show what real vocabularies declare; a tiny file written
here declares tokens no family catalogue knows, and its answers are cleaned whole and
streamed at every split point.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltcai.compat import AnswerStream, Profile, build_profile, clean_answer
from ltcai.compat._markers import MARKER_CATALOGUE
from ltcai.engines.gguf_metadata import read_gguf_metadata
from tests.engines.test_gguf_metadata import gemma_path, smollm2_path  # noqa: F401 — the real files, as fixtures

T = gguf.TokenType
KNOWN = {m for entry in MARKER_CATALOGUE.values() for group in entry for m in group}

# ------------------------------------------------------------------------------ real files


def test_smollm2_declares_its_chatml_tokens(smollm2_path: Path) -> None:
    special = read_gguf_metadata(smollm2_path).special_tokens
    assert {"<|im_start|>", "<|im_end|>", "<|endoftext|>"} <= set(special)
    # StarCoder's control tokens are SmolLM2's too; nothing else of its 49k tokens is.
    assert set(special) == {
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
        "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
        "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>",
        "<jupyter_script>", "<empty_output>",
    }  # fmt: skip


def test_gemma_declares_its_turn_tokens_not_its_placeholders_nor_html(gemma_path: Path) -> None:
    special = read_gguf_metadata(gemma_path).special_tokens
    assert {"<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>"} <= set(special)
    assert not [t for t in special if t.startswith("<unused")]  # 6k never-trained placeholders
    # Gemma's user-defined HTML tags are text a user may ask for.
    assert not {"<table>", "<tr>", "<td>", "<h1>", "<div>", "<b>"} & set(special)
    assert len(special) < 64


@pytest.mark.parametrize(("model", "budget_s"), [("smollm2_path", 0.5), ("gemma_path", 1.0)])
def test_reading_the_special_tokens_stays_cheap(model: str, budget_s: float, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(model)
    read_gguf_metadata(path)  # the page cache, not the reader, is what a first read measures
    started = time.perf_counter()
    read_gguf_metadata(path)
    assert time.perf_counter() - started < budget_s


# ------------------------------------------------------------------------- synthetic files

# (text, type): a vocabulary declaring tokens that no family catalogue knows.
VOCAB = [
    ("<unk>", T.UNKNOWN),
    ("<s>", T.CONTROL),
    ("<|my_end|>", T.CONTROL),  # the end of a turn (EOT)
    ("<|my_start|>", T.CONTROL),  # a turn's header
    ("[MY_TOOL]", T.CONTROL),
    ("<|my_user_token|>", T.USER_DEFINED),  # barred: a marker, whatever its type says
    ("<tool_call>", T.USER_DEFINED),  # user-defined and unbarred: text (Qwen's tool tags)
    ("<unused7>", T.CONTROL),  # a placeholder
    ("Question:", T.CONTROL),  # control, but not shaped like a marker
    ("<div>", T.NORMAL),
    ("hello", T.NORMAL),
    ("<|my_eom|>", T.CONTROL),
]
MY_END, MY_EOM = 2, 11
# The model's own markers, which no family catalogue knows.
MINE = ["<|my_end|>", "<|my_start|>", "[MY_TOOL]", "<|my_user_token|>", "<|my_eom|>"]


def write_vocab_gguf(
    path: Path, *, endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE, with_types: bool = True
) -> Path:
    writer = gguf.GGUFWriter(path, "llama", endianess=endianess)
    writer.add_token_list([text for text, _ in VOCAB])
    if with_types:
        writer.add_token_types([int(kind) for _, kind in VOCAB])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(MY_END)
    writer.add_eot_token_id(MY_END)
    writer.add_eom_token_id(MY_EOM)
    writer.add_tensor_info("w", (16,), np.dtype(np.float32), 64)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    os.truncate(path, -(-path.stat().st_size // 32) * 32 + 64)  # the data area, sparse
    return path


def test_only_marker_shaped_control_and_barred_user_tokens_are_read(tmp_path: Path) -> None:
    meta = read_gguf_metadata(write_vocab_gguf(tmp_path / "t.gguf"))
    assert meta.special_tokens == ("<s>", "<|my_end|>", "<|my_start|>", "[MY_TOOL]", "<|my_user_token|>", "<|my_eom|>")
    assert (meta.eot_token, meta.eos_token, meta.extra_stop_tokens) == ("<|my_end|>", "<|my_end|>", ("<|my_eom|>",))
    reader = gguf.GGUFReader(tmp_path / "t.gguf")  # the package's own reader agrees on the types
    types = reader.fields["tokenizer.ggml.token_type"]
    assert [types.contents(i) for i in range(len(VOCAB))] == [int(k) for _, k in VOCAB]


def test_big_endian_vocabulary_reads_the_same(tmp_path: Path) -> None:
    little = read_gguf_metadata(write_vocab_gguf(tmp_path / "le.gguf"))
    big = read_gguf_metadata(write_vocab_gguf(tmp_path / "be.gguf", endianess=gguf.GGUFEndian.BIG))
    assert big.special_tokens == little.special_tokens != ()


def test_a_vocabulary_without_types_declares_no_special_tokens(tmp_path: Path) -> None:
    meta = read_gguf_metadata(write_vocab_gguf(tmp_path / "t.gguf", with_types=False))
    assert meta.special_tokens == ()
    assert meta.eot_token == "<|my_end|>"  # still the model's end: the cleaner cuts there


@pytest.fixture(scope="module")
def mine(tmp_path_factory: pytest.TempPathFactory) -> Profile:
    meta = read_gguf_metadata(write_vocab_gguf(tmp_path_factory.mktemp("gguf") / "mine.gguf"))
    return build_profile("my-own-finetune", "llamacpp", metadata=meta)


ANSWER = "Use <div> or <tool_call>; hello."
SHAPES = [
    (f"{ANSWER}<|my_end|><|my_start|>user\nAnd Germany?", ANSWER),
    (f"{ANSWER}<|my_eom|>and more", ANSWER),
    (f"<|my_start|>{ANSWER}<|my_end|>", ANSWER),
    (f"Use <div> [MY_TOOL]or <tool_call>;<|my_user_token|> hello.", "Use <div> or <tool_call>; hello."),
]


def streamed(raw: str, cuts: list[int], profile: Profile) -> str:
    bounds = [0, *sorted(cuts), len(raw)]
    stream = AnswerStream(profile)
    out = [stream.feed(raw[a:b]).content for a, b in zip(bounds, bounds[1:])]
    return "".join(out) + stream.finish().content


def test_no_family_knows_these_tokens() -> None:
    assert not KNOWN & set(MINE)
    profile = build_profile("my-own-finetune", "llamacpp")  # no layer 2: the tokens stay text
    assert clean_answer(f"{ANSWER}<|my_end|>more", profile).answer == f"{ANSWER}<|my_end|>more"


@pytest.mark.parametrize(("raw", "clean"), SHAPES)
def test_the_models_own_tokens_are_cleaned_whole_and_at_every_split_point(raw: str, clean: str, mine: Profile) -> None:
    assert clean_answer(raw, mine).answer == clean
    for cut in range(len(raw) + 1):
        assert streamed(raw, [cut], mine) == clean, cut
    assert streamed(raw, list(range(1, len(raw))), mine) == clean


_pieces = st.sampled_from([*MINE, *(t[:i] for t in MINE for i in range(1, len(t))), " ", "\n", "<div>", "hello", "<", "|", ">"])
_around = st.lists(st.one_of(_pieces, st.text(max_size=3)), max_size=8).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(before=_around, after=_around, cuts=st.lists(st.integers(0, 40), max_size=6))
def test_whole_equals_streamed_around_the_models_end_token(before: str, after: str, cuts: list[int], mine: Profile) -> None:
    raw = before + "<|my_end|>" + after
    whole = clean_answer(raw, mine).answer
    assert "<|my_end|>" not in whole and "<|my_start|>" not in whole
    assert streamed(raw, [c for c in cuts if c <= len(raw)], mine) == whole
    assert streamed(raw, list(range(1, len(raw))), mine) == whole


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from([*"<|>[]/_ sabcMY:\n.", "my_end", "<div>", "<tool_call>", "Ünï"]), max_size=30).map("".join))
def test_text_without_the_models_tokens_passes_unchanged(text: str, mine: Profile) -> None:
    if any(t in text for t in (*MINE, *KNOWN)) or not text.strip():
        return
    assert clean_answer(text, mine).answer == text.strip()
