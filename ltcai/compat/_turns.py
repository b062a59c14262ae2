"""Cleaning one turn out of an answer (SPEC.md §3 Improve), whole and streamed.

A model that runs past its turn, or an engine that ignores stops, hands back chat
template framing around the answer. With the marker catalogue, the model's own special
tokens and the stop sequences, the answer is read as:

    header*  content  (end of turn | another turn's start | a stop)  ...dropped

- at the start, turn headers vanish with the role word they carry and the whitespace
  around them (``<|im_start|>assistant\\n``, ``<|start_header_id|>assistant<|end_header_id|>``);
- the answer is cut at the first end-of-turn marker, the first marker of another turn's
  header, or the first stop sequence (ltcai enforces every stop itself, whatever the
  engine did with them);
- reasoning blocks (``<think>…</think>``) go to the reasoning output, as they come,
  trimmed, one block per line;
- sequence starts (``<s>``) and the model's other control tokens are dropped;
- anything else, look-alikes included (``<div>``, ``std::vector<int>``), is untouched.

Stops are about the answer: they do not cut reasoning, nor the blanks between a dropped
header (or a reasoning block) and the answer. The text is tokenized
leftmost-longest over all markers at once; streamed, a tail that could still grow into a
marker (or a role word) is held back, and nothing else, so every split of the answer
into chunks gives the same output as the whole text (the whole-text function *is* the
stream fed once).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from ._marker_match import prefix_start
from ._markers import MARKER_CATALOGUE, REASONING_TAGS, TURN_WORDS
from ._metadata import ModelMetadata, is_marker_token

__all__ = ["TurnCleaner", "TurnMarkers", "TurnParts", "clean_turn", "model_tokens", "turn_markers"]

# What a marker does (ints: the per-marker dispatch is on the streaming hot path).
END, OPEN, HEADER, BEGIN, THINK_OPEN, THINK_CLOSE, DROP, STOP = range(8)
# Where the cleaner is: before the answer, reading an opener's role word, in the
# answer, in a reasoning block, past the end.
_HEAD, _ROLE, _BODY, _THINK, _DONE = range(5)

_CATALOGUE_KINDS: dict[str, int] = {}
for _entry in MARKER_CATALOGUE.values():
    for _kind, _markers in ((END, _entry.ends), (OPEN, _entry.opens), (HEADER, _entry.headers), (BEGIN, _entry.begins)):
        for _marker in _markers:
            if _CATALOGUE_KINDS.setdefault(_marker, _kind) != _kind:
                raise AssertionError(f"{_marker!r} has two meanings in MARKER_CATALOGUE")

_ROLE_WORD_RE = re.compile(r"[ \t]*([A-Za-z_]*)")
_TURN_WORDS = frozenset(TURN_WORDS)
_TURN_WORD_PREFIXES = frozenset(w[:i] for w in TURN_WORDS for i in range(1, len(w) + 1))


class ModelTokens(NamedTuple):
    """What a model's own vocabulary adds to the catalogue (profile layer 2)."""

    ends: tuple[str, ...] = ()
    begins: tuple[str, ...] = ()
    others: tuple[str, ...] = ()  # other control tokens: dropped


def model_tokens(metadata: ModelMetadata | None) -> ModelTokens:
    """The marker-shaped tokens ``metadata`` declares: its ends (EOS, EOT, extra stops),
    its BOS and its other special tokens."""
    if metadata is None:
        return ModelTokens()

    def shaped(tokens: Iterable[str | None]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for t in tokens if is_marker_token(t)))

    return ModelTokens(
        ends=shaped((metadata.eot_token, metadata.eos_token, *metadata.extra_stop_tokens)),
        begins=shaped((metadata.bos_token,)),
        others=shaped(metadata.special_tokens),
    )


@dataclass(frozen=True, slots=True)
class TurnMarkers:
    """Every marker one answer is cleaned with, precompiled for the hot path."""

    kinds: dict[str, int]
    pattern: re.Pattern[str]
    first: frozenset[str]  # first characters: text without them holds no marker
    prefixes: frozenset[str]  # proper prefixes: what a streamed tail could still grow into
    window: int  # the longest proper prefix


def _reasoning_pairs(tokens: ModelTokens) -> list[tuple[str, str]]:
    """The model's own reasoning tags: ``<X>``/``</X>`` (or ``[X]``/``[/X]``) special
    tokens whose name says think or reason."""
    declared = set(tokens.others)
    pairs = []
    for token in declared:
        closing = token[0] + "/" + token[1:]
        if closing in declared and re.search("think|reason", token, re.IGNORECASE):
            pairs.append((token, closing))
    return sorted(pairs)


@lru_cache(maxsize=256)  # pure: the same stops and tokens always compile the same
def turn_markers(
    stops: tuple[str, ...] = (), tokens: ModelTokens = ModelTokens(), reasoning: bool = True
) -> TurnMarkers:
    """The markers for one profile and request: the catalogue first, then reasoning tags,
    the model's tokens, and the stops; a string keeps the first meaning it gets."""
    kinds: dict[str, int] = dict(_CATALOGUE_KINDS)
    if reasoning:
        for opening, closing in (*REASONING_TAGS, *_reasoning_pairs(tokens)):
            kinds.setdefault(opening, THINK_OPEN)
            kinds.setdefault(closing, THINK_CLOSE)
    for kind, group in ((END, tokens.ends), (BEGIN, tokens.begins), (DROP, tokens.others)):
        for token in group:
            kinds.setdefault(token, kind)
    for stop in stops:
        if stop:
            kinds.setdefault(stop, STOP)
    ordered = sorted(kinds, key=len, reverse=True)  # at one position, the longest wins
    return TurnMarkers(
        kinds=kinds,
        pattern=re.compile("|".join(map(re.escape, ordered))),
        first=frozenset(m[0] for m in ordered),
        prefixes=frozenset(m[:i] for m in ordered for i in range(1, len(m))),
        window=len(ordered[0]) - 1,
    )


class TurnParts(NamedTuple):
    content: str
    reasoning: str


class TurnCleaner:
    """The streaming cleaner: ``feed`` returns the content and reasoning that are final
    now, ``finish`` the rest. Fed the whole text once, it is :func:`clean_turn`."""

    __slots__ = (
        "_markers", "_phase", "_pending", "_space", "_word", "_stripped", "_answered",
        "_thought", "_think_space", "_reasoned",
    )  # fmt: skip

    def __init__(self, markers: TurnMarkers) -> None:
        self._markers = markers
        self._phase = _HEAD
        self._pending = ""  # a tail that could still become a marker
        self._space = ""  # whitespace before the answer, kept until it is known to be part of it
        self._word = ""  # what followed an opener, while it could still be its role word
        self._stripped = False  # a marker was dropped before the answer began
        self._answered = False
        # Reasoning is trimmed per block (blanks at a block's ends are template, not thought)
        # and blocks are joined by a newline, as harmony's channels are.
        self._thought = False  # the current block has emitted text
        self._think_space = ""  # trailing blanks of the block, until more thought follows
        self._reasoned = False  # any block has

    def feed(self, text: str) -> TurnParts:
        if self._phase == _BODY and not self._pending and self._markers.first.isdisjoint(text):
            return TurnParts(text, "")  # the fast path: plain answer text
        if self._phase == _DONE:
            return TurnParts("", "")
        text, self._pending = self._pending + text, ""
        return self._run(text, final=False)

    def finish(self) -> TurnParts:
        text, self._pending = self._pending, ""
        if self._phase == _DONE:
            return TurnParts("", "")
        parts = self._run(text, final=True)
        if self._phase == _HEAD and self._space and not self._stripped:
            parts = TurnParts(parts.content + self._space, parts.reasoning)  # a blank answer stays blank
        self._phase, self._space, self._word = _DONE, "", ""
        return parts

    # ------------------------------------------------------------------ internals

    def _run(self, text: str, *, final: bool) -> TurnParts:
        markers = self._markers
        content: list[str] = []
        reasoning: list[str] = []
        pos, size = 0, len(text)
        while self._phase != _DONE:
            match = markers.pattern.search(text, pos)
            hold = size
            if not final:
                # A match counts only once no longer or earlier marker could still form.
                hold = prefix_start(text, max(pos, size - markers.window), markers)  # type: ignore[arg-type]
                if match is not None and hold <= match.start():
                    match = None
            if match is None:
                self._text(text[pos:hold], content, reasoning, open_end=not final)
                self._pending = text[hold:] if self._phase != _DONE else ""
                break
            self._text(text[pos : match.start()], content, reasoning, open_end=False)
            self._marker(markers.kinds[match.group()], match.group(), content, reasoning)
            pos = match.end()
        return TurnParts("".join(content), "".join(reasoning))

    def _text(self, text: str, content: list[str], reasoning: list[str], *, open_end: bool) -> None:
        """Text between markers; ``open_end``: more may follow it directly (streaming)."""
        phase = self._phase
        if phase == _BODY:
            if text:
                content.append(text)
        elif phase == _THINK:
            self._thinking(text, reasoning)
        elif phase == _ROLE:
            self._role_word(text, content, open_end=open_end)
        elif phase == _HEAD:
            self._head(text, content)

    def _thinking(self, text: str, reasoning: list[str]) -> None:
        if not self._thought:
            text = text.lstrip()
            if not text:
                return
            if self._reasoned:
                text = "\n" + text
        body = text.rstrip()
        if body:
            reasoning.append(self._think_space + body)
            self._think_space, self._thought, self._reasoned = "", True, True
        self._think_space += text[len(body) :]

    def _head(self, text: str, content: list[str]) -> None:
        body = text.lstrip()
        if not body:
            self._space += text
            return
        # Whitespace next to a dropped header goes with it; before plain text it is the answer's.
        lead = "" if self._stripped else self._space + text[: len(text) - len(body)]
        self._space = ""
        content.append(lead + body)
        self._phase, self._answered = _BODY, True

    def _role_word(self, text: str, content: list[str], *, open_end: bool) -> None:
        word = self._word + text
        match = _ROLE_WORD_RE.match(word)
        assert match is not None  # the pattern matches any text
        letters = match.group(1).lower()
        if open_end and match.end() == len(word) and (not letters or letters in _TURN_WORD_PREFIXES):
            self._word = word  # " assis" may still become " assistant"
            return
        self._word = ""
        self._phase = _HEAD
        if letters in _TURN_WORDS:
            word = word[match.end() :]  # the role word goes with its opener
        self._head(word, content)

    def _marker(self, kind: int, marker: str, content: list[str], reasoning: list[str]) -> None:
        phase = self._phase
        if phase == _THINK:
            if kind == THINK_CLOSE:
                self._phase = _BODY if self._answered else _HEAD
                self._thought, self._think_space = False, ""
            elif kind in (END, OPEN, HEADER):
                self._phase = _DONE
            elif kind == STOP:
                self._thinking(marker, reasoning)  # stops are about the answer, not the thinking
        elif phase == _BODY:
            if kind in (END, OPEN, HEADER, STOP):
                self._phase = _DONE
            elif kind == THINK_OPEN:
                self._phase = _THINK
        elif kind == STOP and self._stripped and marker.isspace():
            self._head(marker, content)  # blanks after a header or reasoning are not yet the answer
        else:  # _HEAD (a role word was settled by the text before this marker)
            self._space, self._stripped = "", True
            if kind in (END, STOP):
                self._phase = _DONE
            elif kind == OPEN:
                self._phase = _ROLE
            elif kind == THINK_OPEN:
                self._phase = _THINK


def clean_turn(text: str, markers: TurnMarkers) -> TurnParts:
    """The whole-text cleaner: the answer's content and its reasoning."""
    cleaner = TurnCleaner(markers)
    first, rest = cleaner.feed(text), cleaner.finish()
    return TurnParts(first.content + rest.content, first.reasoning + rest.reasoning)
