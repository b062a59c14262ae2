"""Answer post-processing, whole and streamed (SPEC.md §3): pure, synchronous, no I/O.

Every step has a whole-text function, which is the definition, and a streaming stage,
which must give the same text for any split of the answer into chunks. A stage emits
all it can at once and holds back only what the rest of the stream could still change:
the tail that could become a marker, trailing whitespace that may turn out to be the
end, the start of the answer while it could still be a ``user:`` prefix.

Marker removal runs to a fixpoint (removing ``<s>`` from ``<|im_<s>end|>`` makes a new
marker, which goes too), so no listed marker survives. The marker lists have no overlaps
(no marker's suffix is another's prefix, none contains another), so every removal order
gives the same text and the streamed left-to-right removal equals the whole-text one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

import structlog

from ._markers import BAD_MARKERS, HARMONY_MARKERS, LEADING_ROLE_RE, ROLE_WORDS, USER_TURN_MARKERS

__all__ = [
    "POSTPROCESSORS",
    "HarmonyDelta",
    "HarmonyParts",
    "HarmonyStreamPostprocessor",
    "Postprocessor",
    "StreamPostprocessor",
    "StreamStage",
    "apply_postprocess",
    "postprocess_harmony",
    "split_harmony",
    "strip_role_tokens",
    "trim_after_user_marker",
]

_log = structlog.get_logger(__name__)


# --------------------------------------------------------------------------- markers


@dataclass(frozen=True, slots=True)
class _MarkerSet:
    """One marker list, precompiled for the hot path."""

    pattern: re.Pattern[str]  # any marker
    first: frozenset[str]  # first characters: text without them cannot start a marker
    prefixes: frozenset[str]  # every non-empty proper prefix
    window: int  # length of the longest proper prefix: how far one held piece reaches back


def _marker_set(markers: Iterable[str]) -> _MarkerSet:
    ordered = sorted(set(markers), key=len, reverse=True)
    return _MarkerSet(
        pattern=re.compile("|".join(map(re.escape, ordered))),
        first=frozenset(m[0] for m in ordered),
        prefixes=frozenset(m[:i] for m in ordered for i in range(1, len(m))),
        window=len(ordered[0]) - 1,
    )


_BAD = _marker_set(BAD_MARKERS)
_USER_TURN = _marker_set(USER_TURN_MARKERS)
_HARMONY = _marker_set(HARMONY_MARKERS)
_HARMONY_SPLIT_RE = re.compile(f"({_HARMONY.pattern.pattern})")


def _remove_all(pattern: re.Pattern[str], text: str) -> str:
    """Remove markers until none is left, including ones a removal joined together."""
    while True:
        text, count = pattern.subn("", text)
        if not count:
            return text


def _prefix_start(text: str, lo: int, markers: _MarkerSet) -> int:
    """Where the longest tail of ``text`` (starting at ``lo`` or later) that could still
    grow into a marker starts; ``len(text)`` if none could."""
    first, prefixes = markers.first, markers.prefixes
    for i in range(lo, len(text)):
        if text[i] in first and text[i:] in prefixes:
            return i
    return len(text)


def _chain_start(text: str, markers: _MarkerSet) -> int:
    """Where the held tail of a marker-free ``text`` starts, for fixpoint removal.

    Removing a future marker can join what was before it with what comes after, so a
    character is safe only if no run of marker prefixes reaches from it to the end
    (``<<|im_`` + ``end|>`` + ``s>`` removes the first ``<`` too). Positions from
    which the tail is such a run; the earliest one is where holding starts.
    """
    n = len(text)
    window = markers.window
    if markers.first.isdisjoint(text[-window:]):
        return n
    first, prefixes = markers.first, markers.prefixes
    ends = [n]  # descending: positions from which the rest is a run of prefixes
    start = n
    j = n - 1
    while j >= 0 and start - j <= window:
        if text[j] in first:
            for k in reversed(ends):
                if k - j > window:
                    break
                if text[j:k] in prefixes:
                    ends.append(j)
                    start = j
                    break
        j -= 1
    return start


# --------------------------------------------------------------------------- whole text


def strip_role_tokens(text: str) -> str:
    """Remove role/special tokens, then one leading ``user:``-style prefix, then trim.

    The answer a user sees must not carry the chat template's framing, whichever
    template the model was trained on.
    """
    text = _remove_all(_BAD.pattern, text)
    text = LEADING_ROLE_RE.sub("", text, count=1)
    return text.strip()


def trim_after_user_marker(text: str) -> str:
    """Cut the answer where the model ran on into the next user turn, then trim.

    A marker at position 0 is not a run-on (nothing was answered before it); the first
    marker found after it is where the answer ends.
    """
    match = _USER_TURN.pattern.search(text, 1)
    if match is not None:
        text = text[: match.start()]
    return text.strip()


# --------------------------------------------------------------------------- registry


class StreamStage(Protocol):
    """A streaming twin of a whole-text step.

    ``feed`` returns the text that is final now; ``finish`` returns the rest. For any
    split of a text into chunks, everything returned, in order, must equal the
    whole-text step applied to the text. ``feed("")`` must return ``""`` and change
    nothing.
    """

    def feed(self, text: str) -> str: ...

    def finish(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Postprocessor:
    """A step callable like any ``text -> text`` function, with an optional streaming twin.

    A plain function is a valid step too; streamed, it is applied once the whole answer
    is in (its output arrives at the end). Give ``stream`` (a factory of
    :class:`StreamStage`) to let the answer flow through it chunk by chunk.
    """

    apply: Callable[[str], str]
    stream: Callable[[], StreamStage] | None = None

    def __call__(self, text: str) -> str:
        return self.apply(text)


def _run_step(name: str, step: Callable[[str], str], text: str, log: Any) -> str:
    """Apply one step; on failure log it and hand the text on unchanged (SPEC §3)."""
    try:
        result = step(text)
    except Exception as exc:  # a plugin's bug must not cost the user the answer
        log.warning("postprocess_step_failed", step=name, error=repr(exc))
        return text
    if not isinstance(result, str):
        log.warning("postprocess_step_failed", step=name, error=f"returned {type(result).__name__}")
        return text
    return result


def apply_postprocess(
    text: str,
    steps: Sequence[str],
    *,
    registry: Mapping[str, Callable[[str], str]] | None = None,
    log: Any = None,
) -> str:
    """Apply the named steps in order; an unknown or failing step is skipped and logged.

    ``registry`` defaults to :data:`POSTPROCESSORS`; pass ``{**POSTPROCESSORS, **yours}``
    to add plugin steps. ``log`` is a structlog logger (bind model/engine to it).
    """
    table = POSTPROCESSORS if registry is None else registry
    logger = _log if log is None else log
    for name in steps:
        step = table.get(name)
        if step is None:
            logger.warning("postprocess_unknown_step", step=name)
            continue
        text = _run_step(name, step, text, logger)
    return text


# --------------------------------------------------------------------------- stages


class _MarkerRemover:
    """Fixpoint marker removal, streamed (see :func:`_chain_start` for what is held)."""

    __slots__ = ("_markers", "_pending")

    def __init__(self, markers: _MarkerSet) -> None:
        self._markers = markers
        self._pending = ""

    def feed(self, text: str) -> str:
        markers = self._markers
        if self._pending:
            text = self._pending + text
        elif markers.first.isdisjoint(text):
            return text
        text = _remove_all(markers.pattern, text)
        hold = _chain_start(text, markers)
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


class _StripRoleTokensStage(_Strip):
    """:func:`strip_role_tokens`, streamed: marker removal, then the start of the answer
    is held while it could still be ``user:``-style, then strip."""

    __slots__ = ("_remover", "_head")

    def __init__(self) -> None:
        super().__init__()
        self._remover = _MarkerRemover(_BAD)
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


class _TrimAfterUserMarkerStage(_Strip):
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
        elif not text or (not self._origin and _USER_TURN.first.isdisjoint(text)):
            return _Strip.feed(self, text)
        base = 1 if self._origin else 0
        match = _USER_TURN.pattern.search(text, base)
        if match is not None:
            self._cut = True
            self._pending = ""
            return _Strip.feed(self, text[: match.start()])
        hold = _prefix_start(text, max(base, len(text) - _USER_TURN.window), _USER_TURN)
        self._pending = text[hold:]
        self._origin = False  # hold >= base >= 1 when at the origin: position 0 is out
        return _Strip.feed(self, text[:hold])

    def finish(self) -> str:
        rest, self._pending = self._pending, ""
        return _Strip.feed(self, rest) + _Strip.finish(self)


class _WholeTextStage:
    """A step with no streaming twin: buffer, apply once at the end."""

    __slots__ = ("_name", "_step", "_log", "_parts")

    def __init__(self, name: str, step: Callable[[str], str], log: Any) -> None:
        self._name, self._step, self._log = name, step, log
        self._parts: list[str] = []

    def feed(self, text: str) -> str:
        self._parts.append(text)
        return ""

    def finish(self) -> str:
        text = "".join(self._parts)
        self._parts.clear()
        return _run_step(self._name, self._step, text, self._log)


class _PassThrough:
    """Stands in for a streaming stage that raised, so the rest of the answer still flows."""

    __slots__ = ()

    def feed(self, text: str) -> str:
        return text

    def finish(self) -> str:
        return ""


POSTPROCESSORS: Mapping[str, Callable[[str], str]] = MappingProxyType(
    {
        "strip_role_tokens": Postprocessor(strip_role_tokens, _StripRoleTokensStage),
        "trim_after_user_marker": Postprocessor(trim_after_user_marker, _TrimAfterUserMarkerStage),
    }
)


# --------------------------------------------------------------------------- streaming


def _stages_for(
    steps: Sequence[str], registry: Mapping[str, Callable[[str], str]] | None, log: Any
) -> list[tuple[str, StreamStage]]:
    table = POSTPROCESSORS if registry is None else registry
    stages: list[tuple[str, StreamStage]] = []
    for name in steps:
        step = table.get(name)
        if step is None:
            log.warning("postprocess_unknown_step", step=name)
        elif isinstance(step, Postprocessor) and step.stream is not None:
            stages.append((name, step.stream()))
        else:
            stages.append((name, _WholeTextStage(name, step, log)))
    return stages


class StreamPostprocessor:
    """Post-process an answer as it streams; emits exactly what :func:`apply_postprocess`
    would return for the whole answer, as early as that is known.

    Call :meth:`feed` per chunk and :meth:`finish` once at the end. A step with no
    streaming twin holds everything from it on until :meth:`finish`. A streaming stage
    that raises is logged and bypassed from then on (what it held is lost).
    """

    __slots__ = ("_names", "_stages", "_feeds", "_log")

    def __init__(
        self,
        steps: Sequence[str],
        registry: Mapping[str, Callable[[str], str]] | None = None,
        *,
        log: Any = None,
    ) -> None:
        self._log = _log if log is None else log
        self._set_stages(_stages_for(steps, registry, self._log))

    def _set_stages(self, stages: list[tuple[str, StreamStage]]) -> None:
        self._names = [name for name, _ in stages]
        self._stages = [stage for _, stage in stages]
        self._feeds = [stage.feed for stage in self._stages]

    def feed(self, chunk: str) -> str:
        """The post-processed text that is final now (often all of ``chunk``)."""
        for i, feed in enumerate(self._feeds):
            if not chunk:
                return ""
            try:
                chunk = feed(chunk)
            except Exception as exc:  # noqa: PERF203  (free in 3.11 unless raised)
                self._bypass(i, exc)
        return chunk

    def finish(self) -> str:
        """The rest of the post-processed text; the processor is spent afterwards."""
        text = ""
        for i, stage in enumerate(self._stages):
            try:
                text = (stage.feed(text) if text else "") + stage.finish()
            except Exception as exc:
                self._bypass(i, exc)
        return text

    def _bypass(self, index: int, exc: Exception) -> None:
        self._log.warning(
            "postprocess_step_failed", step=self._names[index], error=repr(exc), streaming=True
        )
        self._stages[index] = _PassThrough()
        self._feeds[index] = self._stages[index].feed


# --------------------------------------------------------------------------- harmony


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
    for i, piece in enumerate(_HARMONY_SPLIT_RE.split(text)):
        if i % 2:
            router.marker(piece)
        else:
            router.text(piece)
    content, reasoning = router.take()
    return HarmonyParts(
        _remove_all(_HARMONY.pattern, content), _remove_all(_HARMONY.pattern, reasoning) or None
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
    return HarmonyParts(_remove_all(_HARMONY.pattern, answer), parts.reasoning)


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
        for match in _HARMONY.pattern.finditer(text):
            router.text(text[pos : match.start()])
            router.marker(match.group())
            pos = match.end()
        hold = _prefix_start(text, max(pos, len(text) - _HARMONY.window), _HARMONY)
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
    ) -> None:
        logger = _log if log is None else log
        self._split = _HarmonySplitter()
        # The answer goes through the same pipeline as plain text, between the two channel
        # marker removals of postprocess_harmony.
        self._content = StreamPostprocessor((), log=logger)
        self._content._set_stages(
            [
                ("split_harmony", _MarkerRemover(_HARMONY)),
                *_stages_for(steps, registry, logger),
                ("postprocess_harmony", _MarkerRemover(_HARMONY)),
            ]
        )
        self._reasoning = _MarkerRemover(_HARMONY)

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
