"""The smoke-test classifier (SPEC.md §4): is a freshly loaded model's answer chat-usable?

A model can load fine and still be useless for chat: wrong template, missing stop tokens,
a runaway loop. One short question, answered, is judged here; the rules and their reason
strings are the 0.3.x behaviour and are read by people and by the profile.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from ._markers import BAD_MARKERS, ROLE_LEAK_RE, SPECIAL_TOKEN_RE

__all__ = ["SMOKE_PROMPT", "SmokeStatus", "SmokeVerdict", "classify_answer"]

# "Answer in one sentence, in Korean: what is 2+2?" A tiny, checkable answer that also
# shows whether the model keeps to one sentence and to a non-English language.
SMOKE_PROMPT = "한국어로 한 문장만 답해. 2+2는?"

SmokeStatus = Literal["ok", "degraded", "failed"]

_SENTENCE_BREAK_RE = re.compile(r"[.!?\n]+")
# A 1–20 character unit and 6 more copies right after it: 7 in a row.
_RUNAWAY_RE = re.compile(r"(.{1,20}?)\1{6,}", re.DOTALL)
# "4" in digits, 네 (native Korean "four", as in 네 개) or 사 (Sino-Korean "four").
_EXPECTED_RESULT = ("4", "네", "사")

_MIN_PIECE = 3
_SEVERE_REPEATS = 5
_MILD_REPEATS = 3
_MAX_LENGTH = 4000
_EXPECTED_LENGTH = 600


@dataclass(frozen=True, slots=True)
class SmokeVerdict:
    """The classifier's judgement; ``reason`` is ``ok``, one failure, or the degradations."""

    status: SmokeStatus
    reason: str

    @property
    def usable(self) -> bool:
        """Chat usable: a degraded model still answers, a failed one does not."""
        return self.status != "failed"


def _most_repeated_piece(text: str) -> int:
    pieces = (piece.strip() for piece in _SENTENCE_BREAK_RE.split(text))
    counts = Counter(piece for piece in pieces if len(piece) >= _MIN_PIECE)
    return max(counts.values(), default=0)


def _failure(text: str, repeats: int) -> str | None:
    """The first failure rule that fires (their order is part of the spec), or None."""
    for marker in BAD_MARKERS:
        if marker in text:
            return f"role token leakage ({marker})"
    if SPECIAL_TOKEN_RE.search(text):
        return "special token leakage"
    if ROLE_LEAK_RE.match(text):
        return "role marker leakage"
    if repeats >= _SEVERE_REPEATS:
        return "severe repetition"
    if _RUNAWAY_RE.search(text):
        return "runaway repetition"
    if len(text) > _MAX_LENGTH:
        return "response too long"
    return None


def _degradations(text: str, repeats: int, check_expected_result: bool) -> list[str]:
    reasons = []
    if repeats >= _MILD_REPEATS:
        reasons.append("mild repetition")
    if len(text) > _EXPECTED_LENGTH:
        reasons.append("response longer than expected")
    if check_expected_result and not any(token in text for token in _EXPECTED_RESULT):
        reasons.append("answer did not contain expected result")
    return reasons


def classify_answer(text: str | None, *, check_expected_result: bool = True) -> SmokeVerdict:
    """Classify a smoke-test answer to :data:`SMOKE_PROMPT`.

    ``check_expected_result=False`` drops the 2+2 check: the chat recovery path (§7)
    judges answers to arbitrary questions with the same rules.
    """
    if not text or text.isspace():
        return SmokeVerdict("failed", "empty response")
    repeats = _most_repeated_piece(text)
    failure = _failure(text, repeats)
    if failure is not None:
        return SmokeVerdict("failed", failure)
    reasons = _degradations(text, repeats, check_expected_result)
    if reasons:
        return SmokeVerdict("degraded", "; ".join(reasons))
    return SmokeVerdict("ok", "ok")
