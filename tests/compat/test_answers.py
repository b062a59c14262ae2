"""Clean answers from every family (issue 14), through the chat path's entry points:
``clean_answer`` (whole) and ``AnswerStream`` (streamed), with each family's profile.

Issue 14 fed an OpenAI-compatible upstream that ignores ``stop`` the raw shapes real
models produce, whole and in random-sized chunks: 8 of 26 came out clean. Here all 26
must, for every profile (the catalogue is every model's: leaks follow the template,
not the name), whole and in random chunks.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltcai.compat import AnswerParts, AnswerStream, Profile, build_profile, clean_answer
from ltcai.compat._metadata import ModelMetadata

# One model id per family row (SPEC §2), and a name no family matches.
PROFILES = {
    name: build_profile(name)
    for name in (
        "Qwen/Qwen2.5-7B-Instruct",
        "meta-llama/Llama-3.2-1B-Instruct",
        "google/gemma-3-1b-it",
        "mistralai/Mistral-7B-Instruct-v0.3",
        "microsoft/Phi-3-mini-4k-instruct",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "CohereForAI/c4ai-command-r-v01",
        "ibm-granite/granite-3.1-2b-instruct",
        "my-own-finetune",
    )
}
GPT_OSS = build_profile("openai/gpt-oss-20b")
PARIS = "The capital of France is Paris."
LOOK_ALIKES = "Use `std::vector<int>` or <div>; tell the user: Paris."

# (raw answer, clean answer, reasoning): the 26 shapes.
SHAPES: list[tuple[str, str, str | None]] = [
    # ChatML (Qwen, SmolLM2): a run-on into the next turn, a leading header
    (f"{PARIS}<|im_end|>\n<|im_start|>user\nAnd Germany?", PARIS, None),
    (f"<|im_start|>assistant\n{PARIS}", PARIS, None),
    (f"<|im_start|>assistant\n{PARIS}<|im_end|>", PARIS, None),
    (f"{PARIS}\n<|im_start|>user\nAnd Germany?<|im_end|>", PARIS, None),
    (f"{PARIS}<|endoftext|>Human: And Germany?", PARIS, None),
    # Llama 3
    (f"{PARIS}<|eot_id|>", PARIS, None),
    (f"{PARIS}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnd Germany?<|eot_id|>", PARIS, None),
    (f"<|start_header_id|>assistant<|end_header_id|>\n\n{PARIS}<|eot_id|>", PARIS, None),
    (f"{PARIS}<|eom_id|>", PARIS, None),
    # Gemma
    (f"{PARIS}<end_of_turn>\n<start_of_turn>user\nAnd Germany?", PARIS, None),
    (f"<start_of_turn>model\n{PARIS}<end_of_turn>", PARIS, None),
    # Mistral / Llama 2
    (f"{PARIS}</s>[INST] And Germany? [/INST]", PARIS, None),
    (f" {PARIS} </s><s>[INST] And Germany? [/INST] Berlin.", PARIS, None),
    # Phi
    (f"{PARIS}<|end|>\n<|user|>\nAnd Germany?<|end|>", PARIS, None),
    (f"<|assistant|>\n{PARIS}<|end|>", PARIS, None),
    # DeepSeek: full-width bars and ▁
    (f"{PARIS}<｜end▁of▁sentence｜>", PARIS, None),
    (f"{PARIS}<｜end▁of▁sentence｜><｜User｜>And Germany?<｜Assistant｜>Berlin.", PARIS, None),
    (f"{PARIS}<|EOT|>", PARIS, None),
    # Command-R, Granite
    (f"{PARIS}<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>And Germany?", PARIS, None),
    (f"<|start_of_role|>assistant<|end_of_role|>{PARIS}<|end_of_text|>", PARIS, None),
    # reasoning models
    (f"<think>\nThe user asks for a capital.\n</think>\n\n{PARIS}", PARIS, "The user asks for a capital."),
    (f"<|im_start|>assistant\n<think>A capital.</think>\n{PARIS}<|im_end|>", PARIS, "A capital."),
    # a leading role prefix, and look-alikes that must survive
    (f"assistant: {PARIS}", PARIS, None),
    (LOOK_ALIKES, LOOK_ALIKES, None),
]
HARMONY_SHAPES: list[tuple[str, str, str | None]] = [
    (f"<|channel|>analysis<|message|>A capital.<|end|><|start|>assistant<|channel|>final<|message|>{PARIS}<|return|>",
     PARIS, "A capital."),
    (f"<|channel|>final<|message|>{PARIS}<|im_end|>\n<|im_start|>user\nAnd Germany?", PARIS, None),
]  # fmt: skip


def streamed(raw: str, profile: Profile, cuts: Sequence[int], **kwargs) -> AnswerParts:
    stream = AnswerStream(profile, **kwargs)
    bounds = [0, *sorted(cuts), len(raw)]
    deltas = [stream.feed(raw[a:b]) for a, b in zip(bounds, bounds[1:])] + [stream.finish()]
    return AnswerParts("".join(d.content for d in deltas), "".join(d.reasoning for d in deltas) or None)


def test_there_are_26_shapes() -> None:
    assert len(SHAPES) + len(HARMONY_SHAPES) == 26


@pytest.mark.parametrize("profile", PROFILES.values(), ids=list(PROFILES))
@pytest.mark.parametrize(("raw", "answer", "reasoning"), SHAPES)
def test_every_shape_comes_out_clean_whole_and_in_random_chunks(
    profile: Profile, raw: str, answer: str, reasoning: str | None
) -> None:
    expected = AnswerParts(answer, reasoning)
    assert clean_answer(raw, profile) == expected
    rng = random.Random(raw)
    for _ in range(20):
        cuts = rng.sample(range(1, len(raw)), rng.randint(1, min(12, len(raw) - 1)))
        assert streamed(raw, profile, cuts) == expected, cuts
    assert streamed(raw, profile, range(1, len(raw))) == expected


@pytest.mark.parametrize(("raw", "answer", "reasoning"), HARMONY_SHAPES)
def test_harmony_shapes_come_out_clean_whole_and_in_random_chunks(raw: str, answer: str, reasoning: str | None) -> None:
    expected = AnswerParts(answer, reasoning)
    assert clean_answer(raw, GPT_OSS) == expected
    rng = random.Random(raw)
    for _ in range(20):
        assert streamed(raw, GPT_OSS, rng.sample(range(1, len(raw)), rng.randint(1, 12))) == expected
    assert streamed(raw, GPT_OSS, range(1, len(raw))) == expected


def test_the_requests_stops_are_enforced_whatever_the_engine_did() -> None:
    profile = PROFILES["Qwen/Qwen2.5-7B-Instruct"]
    raw = "Paris.\n\nBerlin is the capital of Germany.###Rome"
    assert clean_answer(raw, profile) == AnswerParts("Paris.\n\nBerlin is the capital of Germany.###Rome", None)
    stops = [*profile.stop, "###"]
    assert clean_answer(raw, profile, stops=stops).answer == "Paris.\n\nBerlin is the capital of Germany."
    assert streamed(raw, profile, range(1, len(raw)), stops=stops).answer.endswith("Germany.")
    assert clean_answer(raw, profile, stops=["\n\n"]).answer == "Paris."


def test_a_models_own_tokens_join_the_catalogue_for_that_model() -> None:
    metadata = ModelMetadata(eos_token="<|my_turn_end|>", special_tokens=("<|tool|>",))
    own = build_profile("my-own-finetune", metadata=metadata)
    raw = "Pa<|tool|>ris.<|my_turn_end|>User: more"
    assert clean_answer(raw, own).answer == "Paris."
    assert clean_answer(raw, PROFILES["my-own-finetune"]).answer == raw  # not for another model


def test_metadata_from_hf_configs_declares_the_special_tokens() -> None:
    from ltcai.compat import metadata_from_hf_configs

    tok = {"added_tokens_decoder": {
        "1": {"content": "<|im_start|>", "special": True}, "2": {"content": "<tool_call>", "special": False},
        "3": {"content": "<|fim_pad|>", "special": True}, "4": "<|bare|>",
    }}  # fmt: skip
    assert metadata_from_hf_configs(tok, None).special_tokens == ("<|im_start|>", "<|fim_pad|>")


def test_plugin_steps_still_run_after_the_turn_is_cleaned() -> None:
    profile = build_profile("my-own-finetune", user_overrides={"postprocess": ["strip_role_tokens", "shout"]})
    from ltcai.compat import POSTPROCESSORS

    registry = {**POSTPROCESSORS, "shout": str.upper}
    raw = f"<|im_start|>assistant\n{PARIS}<|im_end|>x"
    assert clean_answer(raw, profile, registry=registry).answer == PARIS.upper()


# --- property: whole equals streamed through the whole pipeline --------------------------------

_SLICES = ((0, 9), (9, 20), (20, 40), (40, 70))
_PIECES = sorted({raw[i:j] for raw, _, _ in SHAPES + HARMONY_SHAPES for i, j in _SLICES} | {
    "<|im_end|>", "<|im_start|>", "assistant", "\n", " ", "<think>", "</think>", "user:", "\nuser:", "<s>", "[INST]",
    "<|channel|>", "final", "analysis", "<|message|>", "<|end|>", "<|start|>", "<|return|>",
})  # fmt: skip
_answers = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=4)), max_size=12).map("".join)


@st.composite
def _split_answers(draw: st.DrawFn) -> tuple[str, list[int]]:
    text = draw(_answers)
    return text, draw(st.lists(st.integers(0, len(text)), max_size=len(text) + 1))


@pytest.mark.parametrize("profile", [PROFILES["my-own-finetune"], GPT_OSS], ids=["plain", "harmony"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split=_split_answers())
def test_whole_equals_streamed_through_the_pipeline(profile: Profile, split: tuple[str, list[int]]) -> None:
    text, cuts = split
    whole = clean_answer(text, profile, stops=[*profile.stop, "\n\n"])
    assert streamed(text, profile, cuts, stops=[*profile.stop, "\n\n"]) == whole
    assert whole.reasoning != ""
