"""gpt-oss "harmony" output (SPEC.md §3 Improve): the final channel is the answer, the
analysis and commentary channels are reasoning, and no channel marker reaches the user;
whole text and streamed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import structlog

from ._marker_match import HARMONY_SET, HARMONY_SPLIT_RE, prefix_start, remove_all
from ._stages import MarkerRemover, StreamStage
from ._steps import apply_postprocess
from ._streaming import StreamPostprocessor, stages_for

__all__ = [
    "HarmonyDelta",
    "HarmonyParts",
    "HarmonyStreamPostprocessor",
    "postprocess_harmony",
    "split_harmony",
]

_log = structlog.get_logger(__name__)


class HarmonyParts(NamedTuple):
    """A gpt-oss answer split by channel: what the user reads, and the model's thinking."""

    answer: str
    reasoning: str | None  # None when the model produced no analysis/commentary text


class HarmonyDelta(NamedTuple):
    """What one streamed chunk adds to the answer and to the reasoning."""

    content: str
    reasoning: str


_CONTENT, _REASONING, _DROP = 0, 1, 2


class _HarmonyRouter:
    """Sends the text between harmony markers to the answer, the reasoning or nowhere.

    Shared by the whole-text and streamed split; they differ only in how text is cut
    into marker and non-marker pieces. Rules:
    - text before any marker, and messages on the ``final`` channel or on no channel,
      are the answer; ``analysis``, ``commentary`` and any other channel are reasoning;
    - a message whose header names a role other than ``assistant`` (the model ran on
      into a user or tool turn) and text after an end marker (outside any message) go
      nowhere; header text (role, channel, ``<|constrain|>`` type) is never shown;
    - consecutive messages for the same field are joined with a newline.
    """

    __slots__ = ("out", "_in_header", "_dest", "_role", "_channel", "_field", "_seen", "_sep")

    def __init__(self) -> None:
        self.out: tuple[list[str], list[str]] = ([], [])
        self._in_header = False
        self._dest = _CONTENT
        self._role: list[str] | None = None
        self._channel: list[str] | None = None
        self._field: list[str] | None = None  # where header text is collected
        self._seen = [False, False]
        self._sep = False

    def text(self, text: str) -> None:
        if not text:
            return
        if self._in_header:
            if self._field is not None:
                self._field.append(text)
            return
        dest = self._dest
        if dest == _DROP:
            return
        out = self.out[dest]
        if self._sep:
            out.append("\n")
            self._sep = False
        out.append(text)
        self._seen[dest] = True

    def marker(self, marker: str) -> None:
        if marker == "<|start|>":
            self._in_header = True
            self._role, self._channel = [], None
            self._field = self._role
        elif marker == "<|channel|>":
            if not self._in_header:  # gpt-oss output opens with the channel; role is implied
                self._in_header = True
                self._role = None
            self._channel = []
            self._field = self._channel
        elif marker == "<|constrain|>":
            self._field = None
        elif marker == "<|message|>":
            if self._in_header:
                self._in_header = False
                self._dest = self._destination()
                self._sep = self._dest != _DROP and self._seen[self._dest]
        else:  # <|end|> <|return|> <|call|>
            self._in_header = False
            self._dest = _DROP

    def _destination(self) -> int:
        role = "".join(self._role).split() if self._role is not None else []
        if role and role[0].lower() != "assistant":
            return _DROP
        channel = "".join(self._channel).split() if self._channel is not None else []
        if not channel or channel[0].lower() == "final":
            return _CONTENT
        return _REASONING

    def route(self, text: str) -> tuple[str, str]:
        """Route one piece of text and take it (the splitter's fast path: no lists)."""
        if self._in_header or self._sep:
            self.text(text)
            return self.take()
        dest = self._dest
        if dest == _DROP or not text:
            return ("", "")
        self._seen[dest] = True
        return (text, "") if dest == _CONTENT else ("", text)

    def take(self) -> tuple[str, str]:
        content, reasoning = self.out
        result = ("".join(content), "".join(reasoning))
        content.clear()
        reasoning.clear()
        return result


def split_harmony(text: str) -> HarmonyParts:
    """Split gpt-oss harmony output into the answer and the reasoning.

    Plain text (no markers) is all answer. Markers that the split itself joins together
    (``<|<|end|>end|>``) are removed as well, so no channel marker is left in either part.
    """
    router = _HarmonyRouter()
    for i, piece in enumerate(HARMONY_SPLIT_RE.split(text)):
        if i % 2:
            router.marker(piece)
        else:
            router.text(piece)
    content, reasoning = router.take()
    return HarmonyParts(
        remove_all(HARMONY_SET.pattern, content), remove_all(HARMONY_SET.pattern, reasoning) or None
    )


def postprocess_harmony(
    text: str,
    steps: Sequence[str],
    *,
    registry: Mapping[str, Callable[[str], str]] | None = None,
    log: Any = None,
) -> HarmonyParts:
    """Split harmony output, then post-process the answer; the whole-text twin of
    :class:`HarmonyStreamPostprocessor`.

    Channel markers are removed once more after the steps: a step removing ``<s>`` from
    ``<|chan<s>nel|>`` would otherwise hand one to the user.
    """
    parts = split_harmony(text)
    answer = apply_postprocess(parts.answer, steps, registry=registry, log=log)
    return HarmonyParts(remove_all(HARMONY_SET.pattern, answer), parts.reasoning)


class _HarmonySplitter:
    """Cuts the stream into markers and text for the router, holding back only a tail
    that could still be the start of a marker."""

    __slots__ = ("_router", "_pending")

    def __init__(self) -> None:
        self._router = _HarmonyRouter()
        self._pending = ""

    def feed(self, text: str) -> tuple[str, str]:
        router = self._router
        if not self._pending and "<" not in text:
            return router.route(text)
        text = self._pending + text
        pos = 0
        for match in HARMONY_SET.pattern.finditer(text):
            router.text(text[pos : match.start()])
            router.marker(match.group())
            pos = match.end()
        hold = prefix_start(text, max(pos, len(text) - HARMONY_SET.window), HARMONY_SET)
        router.text(text[pos:hold])
        self._pending = text[hold:]
        return router.take()

    def finish(self) -> tuple[str, str]:
        self._router.text(self._pending)
        self._pending = ""
        return self._router.take()


class HarmonyStreamPostprocessor:
    """Streamed :func:`postprocess_harmony`: each :meth:`feed` returns the answer and
    reasoning text that is final now; joined, they equal the whole-text result (a
    ``None`` reasoning streams as nothing)."""

    __slots__ = ("_split", "_content", "_reasoning")

    def __init__(
        self,
        steps: Sequence[str],
        registry: Mapping[str, Callable[[str], str]] | None = None,
        *,
        log: Any = None,
        before_steps: Sequence[tuple[str, StreamStage]] = (),
    ) -> None:
        logger = _log if log is None else log
        self._split = _HarmonySplitter()
        # The answer goes through the same pipeline as plain text, between the two channel
        # marker removals of postprocess_harmony; ``before_steps`` (the turn cleaner) first.
        self._content = StreamPostprocessor((), log=logger)
        self._content._set_stages(
            [
                ("split_harmony", MarkerRemover(HARMONY_SET)),
                *before_steps,
                *stages_for(steps, registry, logger),
                ("postprocess_harmony", MarkerRemover(HARMONY_SET)),
            ]
        )
        self._reasoning = MarkerRemover(HARMONY_SET)

    def feed(self, chunk: str) -> HarmonyDelta:
        content, reasoning = self._split.feed(chunk)
        return HarmonyDelta(
            self._content.feed(content) if content else "",
            self._reasoning.feed(reasoning) if reasoning else "",
        )

    def finish(self) -> HarmonyDelta:
        content, reasoning = self._split.finish()
        return HarmonyDelta(
            self._content.feed(content) + self._content.finish(),
            self._reasoning.feed(reasoning) + self._reasoning.finish(),
        )
