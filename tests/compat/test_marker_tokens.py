"""Which tokens a model declares join its markers (``is_marker_token``): shaped like one,
and not a never-trained numbered placeholder; ``barred`` asks for the ``<|…|>`` shapes only."""

from __future__ import annotations

import pytest

from ltcai.compat import is_marker_token
from ltcai.compat._metadata import ModelMetadata
from ltcai.compat._turns import model_tokens


@pytest.mark.parametrize(
    "token", ["<start_of_turn>", "[INST]", "<|im_end|>", "<｜end▁of▁sentence｜>", "<filename>", "</s>", "[/THINK]"]
)
def test_marker_shaped_tokens_are_markers(token: str) -> None:
    assert is_marker_token(token)


@pytest.mark.parametrize(
    "token",
    ["Question:", "\n", "", None, "< s >", "<a b>", "x<y>", "<" + "x" * 63 + ">",
     "<unused0>", "<unused6241>", "[unused12]", "<|reserved_special_token_17|>", "<extra_id_3>", "<|placeholder4|>"],
)  # fmt: skip
def test_words_and_placeholders_are_not(token: str | None) -> None:
    assert not is_marker_token(token)


@pytest.mark.parametrize(("token", "barred"), [("<|my_tool|>", True), ("<｜User｜>", True), ("<tool_call>", False), ("[MY]", False)])
def test_barred_asks_for_bars(token: str, barred: bool) -> None:
    assert is_marker_token(token, barred=True) is barred
    assert is_marker_token(token)


def test_a_models_placeholders_do_not_join_its_markers() -> None:
    """Llama 3's HF tokenizer marks 250 reserved tokens special: none is a marker."""
    reserved = tuple(f"<|reserved_special_token_{i}|>" for i in range(250))
    tokens = model_tokens(ModelMetadata(eos_token="<|eot_id|>", special_tokens=(*reserved, "<|python_tag|>")))
    assert tokens.others == ("<|python_tag|>",)
