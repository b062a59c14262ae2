"""One answer, cleaned for a user (SPEC.md §3): the entry points the chat path calls.

For a profile, the raw answer goes through, in order:

1. the harmony channel split, for a ``gpt_oss`` template (analysis → reasoning);
2. the turn cleaner (``_turns``): headers dropped, cut at the end of the turn, at
   another turn's start and at every stop (the profile's and the request's), reasoning
   blocks to the reasoning output;
3. the profile's named steps (``strip_role_tokens``…, built-in or from plugins).

:class:`AnswerStream` does it chunk by chunk, holding back only what a marker, a stop
or a step could still need; :func:`clean_answer` is the same stream fed once, so the
two always agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import structlog

from ._harmony import HarmonyStreamPostprocessor
from ._profiles import Profile
from ._streaming import StreamPostprocessor
from ._turns import TurnCleaner, TurnMarkers, model_tokens, turn_markers

__all__ = ["AnswerDelta", "AnswerParts", "AnswerStream", "answer_markers", "clean_answer"]

_log = structlog.get_logger(__name__)


class AnswerParts(NamedTuple):
    """A whole answer: what the user reads, and the model's reasoning (None if none)."""

    answer: str
    reasoning: str | None


class AnswerDelta(NamedTuple):
    """What one streamed chunk adds to the answer and to the reasoning."""

    content: str
    reasoning: str


def answer_markers(profile: Profile, stops: Sequence[str] | None = None) -> TurnMarkers:
    """The markers ``profile``'s answers are cleaned with: the catalogue, the model's own
    tokens (layer 2), and ``stops`` (default: the profile's)."""
    stop_list = tuple(profile.stop if stops is None else stops)
    return turn_markers(stop_list, model_tokens(profile.metadata), reasoning=profile.template != "gpt_oss")


class _ContentOnly:
    """The turn cleaner as a text stage, where harmony has already taken the reasoning."""

    __slots__ = ("_cleaner",)

    def __init__(self, markers: TurnMarkers) -> None:
        self._cleaner = TurnCleaner(markers)

    def feed(self, text: str) -> str:
        return self._cleaner.feed(text).content

    def finish(self) -> str:
        return self._cleaner.finish().content


class AnswerStream:
    """Clean an answer as it streams: each :meth:`feed` returns the content and reasoning
    that are final now; :meth:`finish` the rest. Joined, they equal :func:`clean_answer`."""

    __slots__ = ("_harmony", "_turns", "_content")

    def __init__(
        self,
        profile: Profile,
        *,
        stops: Sequence[str] | None = None,
        registry: Mapping[str, Callable[[str], str]] | None = None,
        log: Any = None,
    ) -> None:
        logger = _log if log is None else log
        markers = answer_markers(profile, stops)
        self._harmony: HarmonyStreamPostprocessor | None = None
        self._turns: TurnCleaner | None = None
        if profile.template == "gpt_oss":
            self._harmony = HarmonyStreamPostprocessor(
                profile.postprocess, registry, log=logger, before_steps=[("clean_turn", _ContentOnly(markers))]
            )
        else:
            self._turns = TurnCleaner(markers)
            self._content = StreamPostprocessor(profile.postprocess, registry, log=logger)

    def feed(self, chunk: str) -> AnswerDelta:
        if self._harmony is not None:
            return AnswerDelta(*self._harmony.feed(chunk))
        content, reasoning = self._turns.feed(chunk)  # type: ignore[union-attr]
        return AnswerDelta(self._content.feed(content) if content else "", reasoning)

    def finish(self) -> AnswerDelta:
        if self._harmony is not None:
            return AnswerDelta(*self._harmony.finish())
        content, reasoning = self._turns.finish()  # type: ignore[union-attr]
        return AnswerDelta(self._content.feed(content) + self._content.finish(), reasoning)


def clean_answer(
    raw: str,
    profile: Profile,
    *,
    stops: Sequence[str] | None = None,
    registry: Mapping[str, Callable[[str], str]] | None = None,
    log: Any = None,
) -> AnswerParts:
    """The whole answer cleaned for ``profile`` (``stops``: the profile's and the request's,
    default the profile's; ``registry``: the built-in steps, or the plugin host's)."""
    stream = AnswerStream(profile, stops=stops, registry=registry, log=log)
    first, rest = stream.feed(raw), stream.finish()
    return AnswerParts(first.content + rest.content, (first.reasoning + rest.reasoning) or None)
