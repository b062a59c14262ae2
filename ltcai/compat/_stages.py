"""The streaming twins of the built-in steps: each ``feed`` emits all it can at once and
holds back only what the rest of the stream could still change (the tail that could
become a marker, trailing whitespace that may turn out to be the end, the start of the
answer while it could still be a ``user:`` prefix).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from ._marker_match import BAD_SET, USER_TURN_SET, MarkerSet, chain_start, prefix_start, remove_all
from ._markers import LEADING_ROLE_RE, ROLE_WORDS

__all__ = [
    "MarkerRemover",
    "PassThrough",
    "StreamStage",
    "StripRoleTokensStage",
    "TrimAfterUserMarkerStage",
]


class StreamStage(Protocol):
    """A streaming twin of a whole-text step.

    ``feed`` returns the text that is final now; ``finish`` returns the rest. For any
    split of a text into chunks, everything returned, in order, must equal the
    whole-text step applied to the text. ``feed("")`` must return ``""`` and change
    nothing.
    """

    def feed(self, text: str) -> str: ...

    def finish(self) -> str: ...


class MarkerRemover:
    """Fixpoint marker removal, streamed (see :func:`_chain_start` for what is held)."""

    __slots__ = ("_markers", "_pending")

    def __init__(self, markers: MarkerSet) -> None:
        self._markers = markers
        self._pending = ""

    def feed(self, text: str) -> str:
        markers = self._markers
        if self._pending:
            text = self._pending + text
        elif markers.first.isdisjoint(text):
            return text
        text = remove_all(markers.pattern, text)
        hold = chain_start(text, markers)
        self._pending = text[hold:]
        return text[:hold]

    def finish(self) -> str:
        rest, self._pending = self._pending, ""
        return rest


class _Strip:
    """``str.strip``, streamed: leading whitespace is dropped, trailing whitespace is held
    until something other than whitespace follows it (or the stream ends, and it goes)."""

    __slots__ = ("_started", "_space")

    def __init__(self) -> None:
        self._started = False
        self._space = ""

    def feed(self, text: str) -> str:
        if not self._started:
            text = text.lstrip()
            if not text:
                return ""
            self._started = True
        elif not text:
            return ""
        if self._space:
            text = self._space + text
        if not text[-1].isspace():
            self._space = ""
            return text
        body = text.rstrip()
        self._space = text[len(body) :]
        return body

    def finish(self) -> str:
        self._space = ""
        return ""


def _role_head_re(words: Sequence[str]) -> re.Pattern[str]:
    """Every text that could still grow into a LEADING_ROLE_RE match (built from the same
    words and flags, so case-insensitivity agrees character by character)."""
    alternatives = [re.escape(w[:i]) for w in words for i in range(1, len(w))]
    alternatives += [re.escape(w) + r"\s*" for w in words]
    return re.compile(r"\s*(?:" + "|".join(alternatives) + ")?", re.IGNORECASE)


_ROLE_HEAD_RE = _role_head_re(ROLE_WORDS)


class StripRoleTokensStage(_Strip):
    """:func:`strip_role_tokens`, streamed: marker removal, then the start of the answer
    is held while it could still be ``user:``-style, then strip."""

    __slots__ = ("_remover", "_head")

    def __init__(self) -> None:
        super().__init__()
        self._remover = MarkerRemover(BAD_SET)
        self._head: str | None = ""  # None once the leading-role question is settled

    # The stages call _Strip.feed directly rather than through super(): this is the
    # per-chunk hot path and super() costs as much as the rest of a plain-text feed.

    def feed(self, text: str) -> str:
        text = self._remover.feed(text)
        if self._head is None:
            return _Strip.feed(self, text)
        return self._decide_head(self._head + text)

    def _decide_head(self, head: str) -> str:
        match = LEADING_ROLE_RE.match(head)
        if match is not None:
            self._head = None
            return _Strip.feed(self, head[match.end() :])
        if _ROLE_HEAD_RE.fullmatch(head):
            self._head = head
            return ""
        self._head = None
        return _Strip.feed(self, head)

    def finish(self) -> str:
        text = self._remover.finish()
        if self._head is not None:
            text, self._head = self._head + text, None
        return _Strip.feed(self, text) + _Strip.finish(self)


class TrimAfterUserMarkerStage(_Strip):
    """:func:`trim_after_user_marker`, streamed: after a cut everything is dropped; before
    it, only a tail that could still become a user-turn marker is held."""

    __slots__ = ("_pending", "_origin", "_cut")

    def __init__(self) -> None:
        super().__init__()
        self._pending = ""
        self._origin = True  # _pending starts at position 0, where a marker does not count
        self._cut = False

    def feed(self, text: str) -> str:
        if self._cut:
            return ""
        if self._pending:
            text = self._pending + text
        elif not text or (not self._origin and USER_TURN_SET.first.isdisjoint(text)):
            return _Strip.feed(self, text)
        base = 1 if self._origin else 0
        match = USER_TURN_SET.pattern.search(text, base)
        if match is not None:
            self._cut = True
            self._pending = ""
            return _Strip.feed(self, text[: match.start()])
        hold = prefix_start(text, max(base, len(text) - USER_TURN_SET.window), USER_TURN_SET)
        self._pending = text[hold:]
        self._origin = False  # hold >= base >= 1 when at the origin: position 0 is out
        return _Strip.feed(self, text[:hold])

    def finish(self) -> str:
        rest, self._pending = self._pending, ""
        return _Strip.feed(self, rest) + _Strip.finish(self)


class PassThrough:
    """Stands in for a streaming stage that raised, so the rest of the answer still flows."""

    __slots__ = ()

    def feed(self, text: str) -> str:
        return text

    def finish(self) -> str:
        return ""
