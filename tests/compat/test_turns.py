"""The turn cleaner (SPEC.md §3 Improve, issue 14): headers dropped with their role word,
the answer cut at the end of the turn, at another turn's start and at every stop,
reasoning blocks routed to the reasoning output; whole text and streamed alike."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltcai.compat._markers import MARKER_CATALOGUE, REASONING_TAGS, TURN_WORDS
from ltcai.compat._metadata import ModelMetadata
from ltcai.compat._turns import (
    TurnCleaner,
    TurnMarkers,
    TurnParts,
    clean_turn,
    model_tokens,
    turn_markers,
)

STOPS = ("<|im_end|>", "STOP!", "\n\n")
TOKENS = model_tokens(
    ModelMetadata(
        eos_token="<|my_end|>",
        bos_token="<my_bos>",
        special_tokens=("<|python_tag|>", "<reason>", "</reason>"),
    )
)
MARKERS = turn_markers(STOPS, TOKENS)
PLAIN = turn_markers()

ENDS = sorted({m for e in MARKER_CATALOGUE.values() for m in e.ends})
OPENS = sorted({m for e in MARKER_CATALOGUE.values() for m in e.opens})
HEADERS = sorted({m for e in MARKER_CATALOGUE.values() for m in e.headers})
BEGINS = sorted({m for e in MARKER_CATALOGUE.values() for m in e.begins})
CUTTING = ENDS + OPENS + HEADERS
EVERY_MARKER = sorted(
    {*ENDS, *OPENS, *HEADERS, *BEGINS, *(t for pair in REASONING_TAGS for t in pair), *STOPS,
     "<|my_end|>", "<my_bos>", "<|python_tag|>", "<reason>", "</reason>"}
)  # fmt: skip


def chunks(text: str, cuts: Sequence[int]) -> list[str]:
    bounds = [0, *sorted(cuts), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def streamed(text: str, cuts: Sequence[int], markers: TurnMarkers = MARKERS) -> TurnParts:
    cleaner = TurnCleaner(markers)
    parts = [cleaner.feed(chunk) for chunk in chunks(text, cuts)] + [cleaner.finish()]
    return TurnParts("".join(p.content for p in parts), "".join(p.reasoning for p in parts))


# --- examples: issue 14's shapes, family by family ------------------------------------------


@pytest.mark.parametrize(
    ("raw", "content"),
    [
        # a run-on into the next turn is cut at that turn's start, for every family
        ("…Paris.<|im_end|>\n<|im_start|>user\nAnd Germany?", "…Paris."),
        ("…Paris.\n<|im_start|>user\nAnd Germany?", "…Paris.\n"),
        ("Paris.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnd Germany?", "Paris."),
        ("Paris.<end_of_turn>\n<start_of_turn>user\nAnd Germany?", "Paris."),
        ("Paris.</s>[INST] And Germany? [/INST]", "Paris."),
        ("Paris. [INST] And Germany?", "Paris. "),
        ("Paris.<|end|>\n<|user|>\nAnd Germany?", "Paris."),
        ("Paris.<｜end▁of▁sentence｜><｜User｜>And Germany?", "Paris."),
        ("Paris.<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>And Germany?", "Paris."),
        ("Paris.<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>And Germany?", "Paris."),
        ("Paris.<|end|><|start|>user<|message|>And Germany?", "Paris."),
        # a leading header goes with its role word and the whitespace around it
        ("<|im_start|>assistant\nParis.", "Paris."),
        ("<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>", "Paris."),
        ("<start_of_turn>model\nParis.<end_of_turn>", "Paris."),
        ("<s>[/INST] Paris.</s>", "Paris."),
        ("<|assistant|>\nParis.<|end|>", "Paris."),
        ("<｜begin▁of▁sentence｜><｜Assistant｜>Paris.<｜end▁of▁sentence｜>", "Paris."),
        ("<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Paris.<|END_OF_TURN_TOKEN|>", "Paris."),
        ("<|start_of_role|>assistant<|end_of_role|>Paris.<|end_of_text|>", "Paris."),
        ("<|channel|>final<|message|>Paris.<|return|>", "Paris."),
        ("  <|im_start|>  Assistant  \n  Paris.", "Paris."),
        # an opener followed by something that is not a role word keeps it
        ("<|im_start|>Paris is the capital.", "Paris is the capital."),
        ("<|im_start|>assistants are helpful", "assistants are helpful"),
        # the model's own tokens (layer 2): its EOS cuts, its BOS and control tokens go
        ("<my_bos>Paris.<|my_end|>more", "Paris."),
        ("Par<|python_tag|>is.", "Paris."),
        # stops cut wherever they are, even at the start
        ("Paris.STOP! more", "Paris."),
        ("Paris.\n\nMore paragraphs", "Paris."),
        ("STOP!Paris.", ""),
        ("<|im_start|>assistant\nSTOP!Paris.", ""),
        ("<|im_start|>assistant\n\n\nParis.\n\nMore", "Paris."),  # blanks after a header are not a stop
        # an end of turn before any answer is an empty answer
        ("<|im_end|>Paris.", ""),
    ],
)
def test_turns_are_cleaned(raw: str, content: str) -> None:
    assert clean_turn(raw, MARKERS) == TurnParts(content, "")
    assert streamed(raw, range(1, len(raw))) == TurnParts(content, "")


@pytest.mark.parametrize(
    "text",
    [
        "Use <div> and std::vector<int>; a<b>c; <|not a marker|> [TODO] [/x]",
        "Reply to the user: no. The assistant: yes. system: ok",
        "  leading and trailing blanks stay  ",
        "<s",  # a marker prefix at the very end is text once the stream ends
        "<|im_end",
        "  ",
        "",
    ],
)
def test_look_alikes_and_plain_text_pass_unchanged(text: str) -> None:
    assert clean_turn(text, MARKERS) == TurnParts(text, "")
    assert streamed(text, range(1, len(text))) == TurnParts(text, "")


@pytest.mark.parametrize(
    ("raw", "content", "reasoning"),
    [
        ("<think>2+2 is 4</think>\n\n4.", "4.", "2+2 is 4"),
        ("<|im_start|>assistant\n<think>\nhm\n</think>\n4.<|im_end|>", "4.", "hm"),
        ("<think> a \n b </think>4<think>\n\n</think><think> c</think>", "4", "a \n b\nc"),
        ("[THINK]hm[/THINK]4.", "4.", "hm"),
        ("<reason>the model's own tags</reason>4.", "4.", "the model's own tags"),
        ("Sure. <think>later</think> 4.", "Sure.  4.", "later"),
        ("<think>cut off while thinking", "", "cut off while thinking"),
        ("<think>stops are about the answer STOP! so</think>4", "4", "stops are about the answer STOP! so"),
        ("<think>hm<|im_end|>4", "", "hm"),  # the turn ended inside the reasoning
        ("thought</think>4.", "thought4.", ""),  # an orphan closing tag is dropped
    ],
)
def test_reasoning_blocks_go_to_the_reasoning_output(raw: str, content: str, reasoning: str) -> None:
    assert clean_turn(raw, MARKERS) == TurnParts(content, reasoning)
    assert streamed(raw, range(1, len(raw))) == TurnParts(content, reasoning)


def test_reasoning_streams_as_it_comes_and_plain_text_at_once() -> None:
    cleaner = TurnCleaner(MARKERS)
    assert cleaner.feed("<think>two and ") == TurnParts("", "two and")
    assert cleaner.feed("two</think>Four") == TurnParts("Four", " two")
    assert cleaner.feed(", surely") == TurnParts(", surely", "")
    assert cleaner.finish() == TurnParts("", "")


def test_only_what_could_still_be_a_marker_is_held() -> None:
    cleaner = TurnCleaner(MARKERS)
    assert cleaner.feed("Hello <|im_") == TurnParts("Hello ", "")
    assert cleaner.feed("sta") == TurnParts("", "")
    assert cleaner.feed("y|> there") == TurnParts("<|im_stay|> there", "")
    assert cleaner.feed("<|im_end|> gone") == TurnParts("", "")
    assert cleaner.feed("more") == TurnParts("", "")
    assert cleaner.finish() == TurnParts("", "")


def test_a_role_word_is_held_only_while_it_could_still_be_one() -> None:
    cleaner = TurnCleaner(PLAIN)
    assert cleaner.feed("<|im_start|>assis") == TurnParts("", "")
    assert cleaner.feed("tant\nHi") == TurnParts("Hi", "")
    cleaner = TurnCleaner(PLAIN)
    assert cleaner.feed("<|im_start|>Par") == TurnParts("Par", "")


def test_stops_can_be_given_per_request_and_a_catalogue_marker_keeps_its_meaning() -> None:
    assert clean_turn("a|b", turn_markers(("|",))) == TurnParts("a", "")
    # <|assistant|> is a stop of the unknown family and a Phi header: at the start it is a header
    unknown_stops = turn_markers(("<|user|>", "<|assistant|>"))
    assert clean_turn("<|assistant|>Hi<|user|>next", unknown_stops) == TurnParts("Hi", "")


def test_a_declared_token_that_is_not_shaped_like_a_marker_is_ignored() -> None:
    tokens = model_tokens(ModelMetadata(eos_token="Question:", special_tokens=("\n", "x")))
    assert tokens.ends == () and tokens.others == ()
    assert model_tokens(None) == model_tokens(ModelMetadata())


# --- properties -------------------------------------------------------------------------------

_WORDS = sorted({*TURN_WORDS, "Assistant", "USER", "assistants", "Paris", "4."})
_PIECES = sorted(
    {m[:i] for m in EVERY_MARKER for i in range(1, len(m))}
    | {m[i:] for m in EVERY_MARKER for i in range(1, len(m))}
    | {" ", "  ", "\n", "\n\n", "\t", "<div>", "std::vector<int>", "user:", "Hello", "네 4.", *_WORDS}
)
_texts = st.lists(
    st.one_of(
        st.sampled_from(EVERY_MARKER),
        st.sampled_from(_PIECES),
        st.text(alphabet="<|>[]/s \nat", max_size=3),
        st.text(max_size=3),
    ),
    max_size=20,
).map("".join)


@st.composite
def _split_texts(draw: st.DrawFn) -> tuple[str, list[int]]:
    text = draw(_texts)
    return text, draw(st.lists(st.integers(0, len(text)), max_size=len(text) + 1))


_PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(split=_split_texts())
def test_whole_equals_streamed_for_any_split(split: tuple[str, list[int]]) -> None:
    text, cuts = split
    whole = clean_turn(text, MARKERS)
    assert streamed(text, cuts) == whole
    assert streamed(text, range(1, len(text))) == whole


_around = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=4)), max_size=6).map("".join)


@pytest.mark.parametrize("marker", EVERY_MARKER)
@settings(max_examples=25, deadline=None)
@given(before=_around, after=_around)
def test_every_marker_whole_equals_streamed_at_every_split_point(marker: str, before: str, after: str) -> None:
    text = before + marker + after
    whole = clean_turn(text, MARKERS)
    for cut in range(len(text) + 1):
        assert streamed(text, [cut]) == whole, cut
    assert streamed(text, range(1, len(text))) == whole


@pytest.mark.parametrize("marker", CUTTING)
@settings(max_examples=25, deadline=None)
@given(answer=st.text(alphabet="abc .,!?\n<>/|", min_size=1, max_size=30).filter(lambda t: t.strip()), rest=_around)
def test_every_end_and_turn_marker_cuts_the_answer_after_text(marker: str, answer: str, rest: str) -> None:
    answer = "Answer " + answer  # starts with text: the header phase is over
    if any(m in answer + marker[:1] for m in EVERY_MARKER):
        return  # the generated answer made a marker of its own
    assert clean_turn(answer + marker + rest, MARKERS) == TurnParts(answer, "")


@pytest.mark.parametrize("opener", OPENS)
@pytest.mark.parametrize("role", ["assistant", "user", "model", "system"])
def test_every_opener_goes_with_its_role_word_at_the_start(opener: str, role: str) -> None:
    assert clean_turn(f"{opener}{role}\nParis.", MARKERS) == TurnParts("Paris.", "")


@pytest.mark.parametrize("marker", HEADERS + BEGINS)
def test_every_header_and_begin_marker_vanishes_at_the_start(marker: str) -> None:
    assert clean_turn(f"{marker}\nParis.", MARKERS) == TurnParts("Paris.", "")


_clean_texts = st.lists(st.sampled_from([*"<|>[]/_ sabcINST:\n.", "user:", "<div>", "Ünï"]), max_size=40).map("".join)


@_PROPERTY
@given(text=_clean_texts)
def test_clean_text_passes_unchanged(text: str) -> None:
    if any(m in text for m in EVERY_MARKER):
        return
    assert clean_turn(text, MARKERS) == TurnParts(text, "")
    assert streamed(text, range(1, len(text))) == TurnParts(text, "")
