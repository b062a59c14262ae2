"""Unit tests of answer post-processing (SPEC.md §3): the whole-text steps, the registry,
the streaming processor (same text for any split, held back no more than needed) and the
gpt-oss harmony split."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from ltcai.compat._harmony import (
    HarmonyDelta,
    HarmonyParts,
    HarmonyStreamPostprocessor,
    postprocess_harmony,
    split_harmony,
)
from ltcai.compat._markers import BAD_MARKERS, HARMONY_MARKERS, USER_TURN_MARKERS
from ltcai.compat._steps import (
    POSTPROCESSORS,
    Postprocessor,
    apply_postprocess,
    strip_role_tokens,
    trim_after_user_marker,
)
from ltcai.compat._streaming import StreamPostprocessor

# The step lists of the family table (SPEC §2).
STEP_LISTS: list[list[str]] = [["strip_role_tokens"], ["trim_after_user_marker", "strip_role_tokens"]]
GPT_OSS_STEPS = ["trim_after_user_marker", "strip_role_tokens"]


def stream(text: str, cuts: Sequence[int], steps: Sequence[str], **kwargs) -> list[str]:
    """Feed ``text`` cut at ``cuts``; every emitted piece, the finish() one last."""
    processor = StreamPostprocessor(steps, **kwargs)
    return [processor.feed(chunk) for chunk in _chunks(text, cuts)] + [processor.finish()]


def stream_harmony(text: str, cuts: Sequence[int], steps: Sequence[str]) -> tuple[str, str]:
    processor = HarmonyStreamPostprocessor(steps)
    deltas = [processor.feed(chunk) for chunk in _chunks(text, cuts)] + [processor.finish()]
    return "".join(d.content for d in deltas), "".join(d.reasoning for d in deltas)


def _chunks(text: str, cuts: Sequence[int]) -> list[str]:
    bounds = [0, *sorted(cuts), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


# --- the marker lists ----------------------------------------------------------------------


@pytest.mark.parametrize("markers", [BAD_MARKERS, HARMONY_MARKERS], ids=["bad", "harmony"])
def test_removed_markers_do_not_overlap(markers: tuple[str, ...]) -> None:
    """Streamed fixpoint removal equals whole-text removal only because removal order does
    not matter, which holds while no marker overlaps another: adding one that does needs a
    new design, not just a new list entry."""
    for a in markers:
        for b in markers:
            assert a == b or a not in b
            assert not [i for i in range(1, len(a)) if b.startswith(a[i:]) and len(a) - i < len(b)]


# --- strip_role_tokens --------------------------------------------------------------------


@pytest.mark.parametrize("marker", BAD_MARKERS)
def test_strip_removes_each_bad_marker_everywhere(marker: str) -> None:
    assert strip_role_tokens(f"{marker}Hello{marker} world{marker}") == "Hello world"


def test_strip_removes_markers_that_a_removal_joins() -> None:
    assert strip_role_tokens("a<|im_<s>end|>b") == "ab"
    assert strip_role_tokens("a<<|im_end|>s>b") == "ab"


@pytest.mark.parametrize(
    "prefix", ["user:", "assistant:", "system:", "USER:", "Assistant :", "  system :  "]
)
def test_strip_removes_one_leading_role(prefix: str) -> None:
    assert strip_role_tokens(prefix + "Hi") == "Hi"


def test_strip_removes_only_one_leading_role_and_only_at_the_start() -> None:
    assert strip_role_tokens("user: assistant: Hi") == "assistant: Hi"
    assert strip_role_tokens("Hi user: there") == "Hi user: there"
    assert strip_role_tokens("username: x") == "username: x"


def test_strip_role_is_removed_after_markers() -> None:
    # The leading role comes into view only once the marker in front of it is gone.
    assert strip_role_tokens("<|im_start|>assistant: Hi") == "Hi"


def test_strip_trims() -> None:
    assert strip_role_tokens("  \n Hi there \t\n") == "Hi there"


# --- trim_after_user_marker ---------------------------------------------------------------


@pytest.mark.parametrize("marker", USER_TURN_MARKERS)
def test_trim_cuts_at_each_user_marker(marker: str) -> None:
    assert trim_after_user_marker(f"The answer. {marker} next question") == "The answer."


@pytest.mark.parametrize("marker", USER_TURN_MARKERS)
def test_trim_does_not_cut_at_position_zero(marker: str) -> None:
    assert trim_after_user_marker(f"{marker}Hi") == f"{marker}Hi".strip()


def test_trim_cuts_at_a_later_marker_after_one_at_position_zero() -> None:
    assert trim_after_user_marker("<|user|>Hi <|user|>more") == "<|user|>Hi"


def test_trim_cuts_at_the_first_marker() -> None:
    assert trim_after_user_marker("A\nUser: b<|user|>c### Instruction: d") == "A"
    assert trim_after_user_marker("A### Instruction: d\nuser: b") == "A"


def test_trim_is_case_exact_and_needs_the_newline() -> None:
    assert trim_after_user_marker("A\nUSER: b") == "A\nUSER: b"
    assert trim_after_user_marker("A user: b") == "A user: b"


def test_trim_trims_even_without_a_cut() -> None:
    assert trim_after_user_marker("  A  ") == "A"


def test_order_of_steps_matters_trim_before_strip() -> None:
    text = "Hi<|user|>next question"
    assert apply_postprocess(text, ["trim_after_user_marker", "strip_role_tokens"]) == "Hi"
    assert apply_postprocess(text, ["strip_role_tokens", "trim_after_user_marker"]) == "Hinext question"


# --- registry -----------------------------------------------------------------------------


def test_builtin_registry_is_read_only_and_complete() -> None:
    assert set(POSTPROCESSORS) == {"strip_role_tokens", "trim_after_user_marker"}
    with pytest.raises(TypeError):
        POSTPROCESSORS["x"] = str.upper  # type: ignore[index]
    assert POSTPROCESSORS["strip_role_tokens"]("<s>hi") == "hi"


def test_unknown_step_is_skipped_and_logged() -> None:
    with capture_logs() as logs:
        assert apply_postprocess(" <s>hi ", ["nope", "strip_role_tokens"]) == "hi"
    assert [(e["event"], e["step"]) for e in logs] == [("postprocess_unknown_step", "nope")]


def _boom(text: str) -> str:
    raise ValueError("boom")


@pytest.mark.parametrize("bad", [_boom, lambda text: None])
def test_failing_step_is_skipped_and_logged(bad: Callable[[str], str]) -> None:
    registry = {**POSTPROCESSORS, "bad": bad}
    with capture_logs() as logs:
        assert apply_postprocess(" <s>hi ", ["bad", "strip_role_tokens"], registry=registry) == "hi"
    assert [(e["event"], e["step"]) for e in logs] == [("postprocess_step_failed", "bad")]


def test_callers_extend_the_registry_and_keep_the_order() -> None:
    registry = {**POSTPROCESSORS, "shout": str.upper}
    assert apply_postprocess("<s> hi ", ["strip_role_tokens", "shout"], registry=registry) == "HI"
    assert apply_postprocess("<s> hi ", ["shout", "strip_role_tokens"], registry=registry) == "<S> HI"


def test_a_given_log_is_used() -> None:
    calls: list[tuple[str, dict]] = []

    class Log:
        def warning(self, event: str, **kw: object) -> None:
            calls.append((event, kw))

    apply_postprocess("x", ["nope"], log=Log())
    assert calls == [("postprocess_unknown_step", {"step": "nope"})]


# --- streaming: examples --------------------------------------------------------------------


@pytest.mark.parametrize("steps", STEP_LISTS)
def test_stream_emits_plain_text_at_once(steps: list[str]) -> None:
    processor = StreamPostprocessor(steps)
    assert processor.feed("Hello wor") == "Hello wor"
    assert processor.feed("ld, how") == "ld, how"
    assert processor.finish() == ""


@pytest.mark.parametrize("steps", STEP_LISTS)
def test_stream_holds_only_a_marker_prefix_and_trailing_space(steps: list[str]) -> None:
    processor = StreamPostprocessor(steps)
    assert processor.feed("Hello <|im_") == "Hello"
    assert processor.feed("end|> there") == "  there"
    assert processor.finish() == ""


def test_stream_holds_a_run_of_prefixes_a_removal_could_join() -> None:
    processor = StreamPostprocessor(["strip_role_tokens"])
    assert processor.feed("x <<|im_") == "x"  # the first "<" could become "<s>"
    assert processor.feed("end|>s>y") == " y"
    assert processor.finish() == ""


def test_stream_releases_a_prefix_that_did_not_become_a_marker() -> None:
    processor = StreamPostprocessor(["strip_role_tokens"])
    assert processor.feed("a [IN") == "a"
    assert processor.feed("DEX]") == " [INDEX]"


def test_stream_holds_the_start_while_it_could_be_a_role() -> None:
    processor = StreamPostprocessor(["strip_role_tokens"])
    assert processor.feed(" Assis") == ""
    assert processor.feed("tant ") == ""
    assert processor.feed(": Hi") == "Hi"

    processor = StreamPostprocessor(["strip_role_tokens"])
    assert processor.feed("use") == ""
    assert processor.feed("ful") == "useful"


def test_stream_trim_holds_a_possible_user_turn_then_drops_the_rest() -> None:
    processor = StreamPostprocessor(GPT_OSS_STEPS)
    assert processor.feed("Four.\nUs") == "Four."
    assert processor.feed("er: and") == ""
    assert processor.feed(" more") == ""
    assert processor.finish() == ""


def test_stream_trim_at_position_zero_is_not_held() -> None:
    processor = StreamPostprocessor(["trim_after_user_marker"])
    assert processor.feed("<|us") == "<|us"
    assert processor.feed("er|>hi") == "er|>hi"


def test_stream_whitespace_is_dropped_at_both_ends() -> None:
    # chunks: " ", " \n", " H", "i  ", "ther", "e \n "
    assert stream("  \n Hi  there \n ", [1, 3, 5, 8, 12], ["strip_role_tokens"]) == [
        "", "", "H", "i", "  ther", "e", "",
    ]  # fmt: skip


def test_stream_unknown_step_is_logged_and_skipped() -> None:
    with capture_logs() as logs:
        assert "".join(stream("<s>hi", [2], ["nope", "strip_role_tokens"])) == "hi"
    assert [(e["event"], e["step"]) for e in logs] == [("postprocess_unknown_step", "nope")]


def test_stream_plain_function_step_is_applied_at_the_end() -> None:
    registry = {**POSTPROCESSORS, "shout": str.upper}
    pieces = stream("<s> hi", [2, 4], ["strip_role_tokens", "shout"], registry=registry)
    assert pieces == ["", "", "", "HI"]


def test_stream_plain_function_that_raises_is_skipped_and_logged() -> None:
    registry = {**POSTPROCESSORS, "bad": _boom}
    with capture_logs() as logs:
        assert "".join(stream(" hi ", [2], ["bad", "strip_role_tokens"], registry=registry)) == "hi"
    assert [(e["event"], e["step"]) for e in logs] == [("postprocess_step_failed", "bad")]


class _UpperStage:
    def feed(self, text: str) -> str:
        return text.upper()

    def finish(self) -> str:
        return ""


def test_stream_plugin_stage_streams() -> None:
    registry = {**POSTPROCESSORS, "shout": Postprocessor(str.upper, _UpperStage)}
    assert stream("ab", [1], ["shout"], registry=registry) == ["A", "B", ""]
    assert apply_postprocess("ab", ["shout"], registry=registry) == "AB"


class _BrokenStage:
    def __init__(self) -> None:
        self.calls = 0

    def feed(self, text: str) -> str:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("broken")
        return text

    def finish(self) -> str:
        return ""


def test_stream_stage_that_raises_is_bypassed_and_logged() -> None:
    registry = {**POSTPROCESSORS, "broken": Postprocessor(lambda t: t, _BrokenStage)}
    with capture_logs() as logs:
        assert stream("abc", [1, 2], ["broken"], registry=registry) == ["a", "b", "c", ""]
    assert [(e["event"], e["step"]) for e in logs] == [("postprocess_step_failed", "broken")]


# --- streaming: property ------------------------------------------------------------------

_MARKERS = sorted({*BAD_MARKERS, *USER_TURN_MARKERS, *HARMONY_MARKERS})
_PIECES = sorted(
    {m[:i] for m in _MARKERS for i in range(1, len(m))}
    | {m[i:] for m in _MARKERS for i in range(1, len(m))}
    | {"user:", "User :", "assistant:", "SYSTEM:", " ", "  ", "\n", "\n\n", "\t", "Hello", "네 4.",
       "analysis", "final", "commentary", "assistant", "user", " to=functions.f ", "json"}
)  # fmt: skip


@st.composite
def _nested_markers(draw: st.DrawFn) -> str:
    """A marker with another (maybe nested) marker inside it: removing the inner one joins
    the outer one, the case that makes streamed removal hold back more than one marker."""
    outer = draw(st.sampled_from(_MARKERS))
    inner = draw(st.one_of(st.sampled_from(_MARKERS), _nested_markers()))
    cut = draw(st.integers(1, len(outer) - 1))
    return outer[:cut] + inner + outer[cut:]


_texts = st.lists(
    st.one_of(
        st.sampled_from(_MARKERS),
        _nested_markers(),
        st.sampled_from(_PIECES),
        st.text(alphabet="<|>s[]#/:\n ab", max_size=3),
        st.text(max_size=3),
    ),
    max_size=25,
).map("".join)


@st.composite
def _split_texts(draw: st.DrawFn) -> tuple[str, list[int]]:
    text = draw(_texts)
    cuts = draw(st.lists(st.integers(0, len(text)), max_size=len(text) + 1))
    return text, cuts


_PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("steps", STEP_LISTS)
@_PROPERTY
@given(split=_split_texts())
def test_stream_equals_whole_for_any_split(steps: list[str], split: tuple[str, list[int]]) -> None:
    text, cuts = split
    whole = apply_postprocess(text, steps)
    assert "".join(stream(text, cuts, steps)) == whole
    assert "".join(stream(text, range(1, len(text)), steps)) == whole  # one character at a time


@_PROPERTY
@given(text=_texts)
def test_strip_leaves_no_bad_marker(text: str) -> None:
    for steps in STEP_LISTS:
        result = apply_postprocess(text, steps)
        assert not [m for m in BAD_MARKERS if m in result]
        assert result == result.strip()


@_PROPERTY
@given(split=_split_texts())
def test_harmony_stream_equals_whole_for_any_split(split: tuple[str, list[int]]) -> None:
    text, cuts = split
    whole = postprocess_harmony(text, GPT_OSS_STEPS)
    expected = (whole.answer, whole.reasoning or "")
    assert stream_harmony(text, cuts, GPT_OSS_STEPS) == expected
    assert stream_harmony(text, range(1, len(text)), GPT_OSS_STEPS) == expected
    parts = split_harmony(text)
    assert stream_harmony(text, cuts, []) == (parts.answer, parts.reasoning or "")


@_PROPERTY
@given(text=_texts)
def test_harmony_leaves_no_channel_marker(text: str) -> None:
    parts = split_harmony(text)
    answer = postprocess_harmony(text, GPT_OSS_STEPS).answer
    for field in (parts.answer, parts.reasoning or "", answer):
        assert not [m for m in HARMONY_MARKERS if m in field]
    assert parts.reasoning != ""  # no reasoning is None, never ""


@given(text=st.text().filter(lambda t: "<|" not in t))
def test_harmony_plain_text_is_all_answer(text: str) -> None:
    assert split_harmony(text) == HarmonyParts(text, None)


# --- harmony: examples --------------------------------------------------------------------

_ANALYSIS = "<|channel|>analysis<|message|>User asks 2+2. Easy.<|end|>"
_FINAL = "<|start|>assistant<|channel|>final<|message|>2+2는 4입니다.<|return|>"


@pytest.mark.parametrize(
    ("text", "answer", "reasoning"),
    [
        (_ANALYSIS + _FINAL, "2+2는 4입니다.", "User asks 2+2. Easy."),
        # no <|end|> after the analysis
        (_ANALYSIS.replace("<|end|>", "") + _FINAL, "2+2는 4입니다.", "User asks 2+2. Easy."),
        # neither <|end|> nor <|start|>: the channel marker alone opens the next message
        ("<|channel|>analysis<|message|>hm<|channel|>final<|message|>4", "4", "hm"),
        # no final channel (cut off while thinking)
        ("<|channel|>analysis<|message|>Let me th", "", "Let me th"),
        # no closing marker on the final message
        (_ANALYSIS + "<|start|>assistant<|channel|>final<|message|>4", "4", "User asks 2+2. Easy."),
        # commentary (a preamble or a tool call) is not the answer; constrain text is header
        ("<|channel|>commentary to=functions.f <|constrain|>json<|message|>{}<|call|>", "", "{}"),
        # messages for the same field are joined by a newline
        ("<|channel|>analysis<|message|>a<|end|>"
         "<|start|>assistant<|channel|>commentary<|message|>b<|end|>"
         "<|start|>assistant<|channel|>final<|message|>c", "c", "a\nb"),
        # a message with no channel is the answer
        ("<|start|>assistant<|message|>4<|end|>", "4", None),
        # the model ran on into a user turn: dropped
        (_FINAL.replace("<|return|>", "<|end|>") + "<|start|>user<|message|>next?<|end|>",
         "2+2는 4입니다.", None),
        # text outside any message is dropped
        ("<|channel|>final<|message|>4<|end|> stray", "4", None),
        # plain text
        ("2+2는 4입니다.", "2+2는 4입니다.", None),
        # a marker the split itself joins is removed too
        ("<|channel|>final<|message|>4<|<|message|>end|>", "4", None),
    ],
)
def test_split_harmony(text: str, answer: str, reasoning: str | None) -> None:
    assert split_harmony(text) == HarmonyParts(answer, reasoning)


def test_postprocess_harmony_applies_steps_to_the_answer_only() -> None:
    text = (
        "<|channel|>analysis<|message|> think <|end|>"
        "<|channel|>final<|message|> 4<|im_end|>\nuser: more"
    )
    assert postprocess_harmony(text, GPT_OSS_STEPS) == HarmonyParts("4", " think ")


def test_postprocess_harmony_removes_a_channel_marker_a_step_revealed() -> None:
    text = "<|channel|>final<|message|>a<|chan<s>nel|>b"
    assert postprocess_harmony(text, ["strip_role_tokens"]).answer == "ab"


def test_harmony_stream_routes_deltas_as_they_come() -> None:
    processor = HarmonyStreamPostprocessor(GPT_OSS_STEPS)
    assert processor.feed("<|channel|>analysis<|mess") == HarmonyDelta("", "")
    assert processor.feed("age|>Easy") == HarmonyDelta("", "Easy")
    delta = processor.feed(".<|end|><|start|>assistant<|channel|>final<|message|>4")
    assert delta == HarmonyDelta("4", ".")
    assert processor.feed("입니다 ") == HarmonyDelta("입니다", "")
    assert processor.feed("<|return|>") == HarmonyDelta("", "")
    assert processor.finish() == HarmonyDelta("", "")


def test_harmony_stream_of_plain_text_is_all_content() -> None:
    processor = HarmonyStreamPostprocessor(["strip_role_tokens"])
    assert processor.feed("Hello wor") == HarmonyDelta("Hello wor", "")
