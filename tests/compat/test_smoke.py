"""Unit tests of the smoke-test classifier (SPEC.md §4): every rule, its boundary and its
precedence over the rules after it."""

from __future__ import annotations

import dataclasses

import pytest

from ltcai.compat._markers import BAD_MARKERS
from ltcai.compat._smoke import SMOKE_PROMPT, SmokeVerdict, classify_answer

OK_ANSWER = "2+2는 4입니다."


def _filler(length: int, *, digit: str = "4") -> str:
    """Text of exactly ``length`` characters with no repeated sentence and no runaway unit,
    containing ``digit`` (pass "" for none of the expected results)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = [f"w{letters[i % 26]}{letters[i // 26 % 26]}{letters[i // 676 % 26]}" for i in range(2000)]
    text = (digit + " " + " ".join(words))[:length]
    assert len(text) == length and (digit == "" or digit in text)
    return text


def test_prompt_is_the_spec_prompt() -> None:
    assert SMOKE_PROMPT == "한국어로 한 문장만 답해. 2+2는?"


def test_verdict_is_frozen_and_usable_means_not_failed() -> None:
    verdict = SmokeVerdict("degraded", "mild repetition")
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.status = "ok"  # type: ignore[misc]
    assert SmokeVerdict("ok", "ok").usable
    assert SmokeVerdict("degraded", "x").usable
    assert not SmokeVerdict("failed", "x").usable


def test_ok() -> None:
    assert classify_answer(OK_ANSWER) == SmokeVerdict("ok", "ok")


@pytest.mark.parametrize("answer", ["네, 넷입니다.", "이 더하기 이는 사입니다.", "4"])
def test_each_expected_result_counts(answer: str) -> None:
    assert classify_answer(answer).status == "ok"


# --- failed rules, in order -------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", " ", "\n\t  \r\n"])
def test_rule1_empty(text: str | None) -> None:
    assert classify_answer(text) == SmokeVerdict("failed", "empty response")


@pytest.mark.parametrize("marker", BAD_MARKERS)
def test_rule2_each_bad_marker(marker: str) -> None:
    verdict = classify_answer(f"{OK_ANSWER} {marker}")
    assert verdict == SmokeVerdict("failed", f"role token leakage ({marker})")


def test_rule2_names_the_first_marker_in_list_order() -> None:
    assert classify_answer("4 [INST] <|im_end|>").reason == "role token leakage (<|im_end|>)"


@pytest.mark.parametrize("token", ["<|eot_id|>", "<|end|>", "<||>", "<|" + "abcdefghij" * 4 + "|>"])
def test_rule3_special_token(token: str) -> None:
    assert classify_answer(f"{OK_ANSWER}{token}") == SmokeVerdict("failed", "special token leakage")


_FORTY_ONE = "abcdefghijklmnopqrstuvwxyz0123456789ABCDE"


@pytest.mark.parametrize("text", ["4 <|" + _FORTY_ONE + "|>", "4 <|a|b|>c", "4 <eot_id>"])
def test_rule3_not_a_special_token(text: str) -> None:
    assert classify_answer(text).status == "ok"


@pytest.mark.parametrize(
    "prefix", ["assistant:", "system:", "user:", "USER:", "Assistant:", "  \n system:"]
)
def test_rule4_role_marker(prefix: str) -> None:
    assert classify_answer(prefix + " " + OK_ANSWER) == SmokeVerdict("failed", "role marker leakage")


@pytest.mark.parametrize("text", ["4 user: x", "users: 4", "user 4:"])
def test_rule4_only_at_the_start(text: str) -> None:
    assert classify_answer(text).status == "ok"


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (2, SmokeVerdict("ok", "ok")),
        (3, SmokeVerdict("degraded", "mild repetition")),
        (4, SmokeVerdict("degraded", "mild repetition")),
        (5, SmokeVerdict("failed", "severe repetition")),
    ],
)
def test_rule5_piece_counts(count: int, expected: SmokeVerdict) -> None:
    assert classify_answer("답은 4입니다. " * count) == expected


def test_rule5_splits_on_runs_of_all_breaks_and_trims() -> None:
    assert classify_answer("abc!  abc?!\nabc...abc\n\n abc . 4").reason == "severe repetition"


def test_rule5_ignores_pieces_shorter_than_three() -> None:
    # "ab" five times is not a sentence; it is not runaway either (breaks between).
    assert classify_answer("4. ab. ab. ab. ab. ab.").status == "ok"


_TWENTY = "abcdefghijklmnopqrst"


@pytest.mark.parametrize(
    ("unit", "times", "failed"),
    [("ab", 6, False), ("ab", 7, True), ("x", 7, True), ("abc ", 6, False),
     (_TWENTY, 6, False), (_TWENTY, 7, True)],
)  # fmt: skip
def test_rule6_runaway(unit: str, times: int, failed: bool) -> None:
    verdict = classify_answer("4 " + unit * times)
    if failed:
        assert verdict == SmokeVerdict("failed", "runaway repetition")
    else:
        assert verdict.status != "failed"


def test_rule6_unit_longer_than_twenty_is_not_runaway() -> None:
    unit = "".join(chr(0x61 + i) for i in range(21))
    assert classify_answer("4 " + unit * 7).status != "failed"


def test_rule6_crosses_newlines() -> None:
    assert classify_answer("4 " + "a\n" * 7).reason == "runaway repetition"


def test_rule7_length_boundary() -> None:
    assert classify_answer(_filler(4000)) == SmokeVerdict("degraded", "response longer than expected")
    assert classify_answer(_filler(4001)) == SmokeVerdict("failed", "response too long")


# --- precedence: each failed rule wins over the next ---------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("   ", "empty response"),
        ("user: <|im_end|>", "role token leakage (<|im_end|>)"),  # also rules 3 and 4
        ("user: <|eot_id|>", "special token leakage"),  # also rule 4
        ("user: abc. abc. abc. abc. abc.", "role marker leakage"),  # also rule 5
        ("abc. " * 7, "severe repetition"),  # also rule 6
        ("x" * 4001, "runaway repetition"),  # also rule 7
    ],
)
def test_failed_rule_precedence(text: str, reason: str) -> None:
    assert classify_answer(text) == SmokeVerdict("failed", reason)


# --- degraded ---------------------------------------------------------------------------


def test_degraded_length_boundary() -> None:
    assert classify_answer(_filler(600)) == SmokeVerdict("ok", "ok")
    assert classify_answer(_filler(601)) == SmokeVerdict("degraded", "response longer than expected")


def test_degraded_missing_expected_result() -> None:
    expected = SmokeVerdict("degraded", "answer did not contain expected result")
    assert classify_answer("잘 모르겠습니다.") == expected


def test_check_expected_result_false_drops_only_that_check() -> None:
    verdict = classify_answer("잘 모르겠습니다.", check_expected_result=False)
    assert verdict == SmokeVerdict("ok", "ok")
    assert classify_answer("모릅니다. " * 3, check_expected_result=False).reason == "mild repetition"
    assert classify_answer("", check_expected_result=False).reason == "empty response"


def test_degraded_reasons_are_all_joined_in_order() -> None:
    text = "모릅니다. 모릅니다. 모릅니다. " + _filler(620, digit="")
    assert classify_answer(text) == SmokeVerdict(
        "degraded",
        "mild repetition; response longer than expected; answer did not contain expected result",
    )


def test_degraded_two_reasons_keep_the_order() -> None:
    text = "모릅니다. 모릅니다. 모릅니다. " + _filler(620, digit="")
    assert classify_answer(text, check_expected_result=False).reason == (
        "mild repetition; response longer than expected"
    )
    assert classify_answer(_filler(601, digit="")).reason == (
        "response longer than expected; answer did not contain expected result"
    )
