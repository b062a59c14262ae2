"""The marker catalogue (SPEC.md §3 Improve, issue 14): one table, per template, of what
each chat-template marker does in an answer."""

from __future__ import annotations

import pytest

from ltcai.compat._markers import MARKER_CATALOGUE, REASONING_TAGS, TURN_WORDS

# Issue 14's list, as written there: template -> (ends, turn openers with a role word after
# them, other header markers, sequence starts).
ISSUE_14 = {
    "chatml": (["<|im_end|>"], ["<|im_start|>"], [], []),
    "llama3": (["<|eot_id|>", "<|eom_id|>"], ["<|start_header_id|>"], ["<|end_header_id|>"], ["<|begin_of_text|>"]),
    "gemma": (["<end_of_turn>"], ["<start_of_turn>"], [], []),
    "mistral": (["</s>"], [], ["[INST]", "[/INST]"], ["<s>"]),
    "phi": (["<|end|>"], [], ["<|user|>", "<|assistant|>", "<|system|>"], []),
    "deepseek": (["<｜end▁of▁sentence｜>"], [], ["<｜User｜>", "<｜Assistant｜>"], ["<｜begin▁of▁sentence｜>"]),
    "command_r": (
        ["<|END_OF_TURN_TOKEN|>"], [], ["<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>"], []
    ),
    "granite": (["<|end_of_text|>"], ["<|start_of_role|>"], ["<|end_of_role|>"], []),
    "harmony": (["<|end|>", "<|return|>", "<|call|>"], ["<|start|>", "<|channel|>"], ["<|message|>"], []),
}


@pytest.mark.parametrize("template", sorted(ISSUE_14))
def test_every_template_of_issue_14_is_catalogued_with_its_markers(template: str) -> None:
    entry = MARKER_CATALOGUE[template]
    ends, opens, headers, begins = ISSUE_14[template]
    assert set(ends) <= set(entry.ends)
    assert set(opens) <= set(entry.opens)
    assert set(headers) <= set(entry.headers)
    assert set(begins) <= set(entry.begins)


def test_a_marker_means_one_thing_across_the_table() -> None:
    meaning: dict[str, str] = {}
    for entry in MARKER_CATALOGUE.values():
        for kind, markers in entry._asdict().items():
            for marker in markers:
                assert meaning.setdefault(marker, kind) == kind, marker


def test_the_table_is_read_only_and_the_markers_look_like_markers() -> None:
    with pytest.raises(TypeError):
        MARKER_CATALOGUE["x"] = MARKER_CATALOGUE["chatml"]  # type: ignore[index]
    every = [m for entry in MARKER_CATALOGUE.values() for group in entry for m in group]
    every += [tag for pair in REASONING_TAGS for tag in pair]
    for marker in every:
        assert marker[0] in "<[" and marker[-1] in ">]" and not any(c.isspace() for c in marker), marker


def test_turn_words_cover_the_roles_templates_use() -> None:
    assert {"system", "user", "assistant", "model", "tool", "ipython"} <= set(TURN_WORDS)
    assert all(w == w.lower() and w.isalpha() for w in TURN_WORDS)
