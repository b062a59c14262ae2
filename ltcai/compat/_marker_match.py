"""Finding markers fast, whole and streamed: one precompiled set per marker list, and the
two questions a streaming stage asks (how much of the tail could still become a marker).

The marker lists have no overlaps (no marker's suffix is another's prefix, none contains
another), so every removal order gives the same text and the streamed left-to-right
removal equals the whole-text one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ._markers import BAD_MARKERS, HARMONY_MARKERS, USER_TURN_MARKERS

__all__ = [
    "BAD_SET",
    "HARMONY_SET",
    "HARMONY_SPLIT_RE",
    "USER_TURN_SET",
    "MarkerSet",
    "chain_start",
    "marker_set",
    "prefix_start",
    "remove_all",
]


@dataclass(frozen=True, slots=True)
class MarkerSet:
    """One marker list, precompiled for the hot path."""

    pattern: re.Pattern[str]  # any marker
    first: frozenset[str]  # first characters: text without them cannot start a marker
    prefixes: frozenset[str]  # every non-empty proper prefix
    window: int  # length of the longest proper prefix: how far one held piece reaches back


def marker_set(markers: Iterable[str]) -> MarkerSet:
    ordered = sorted(set(markers), key=len, reverse=True)
    return MarkerSet(
        pattern=re.compile("|".join(map(re.escape, ordered))),
        first=frozenset(m[0] for m in ordered),
        prefixes=frozenset(m[:i] for m in ordered for i in range(1, len(m))),
        window=len(ordered[0]) - 1,
    )


BAD_SET = marker_set(BAD_MARKERS)
USER_TURN_SET = marker_set(USER_TURN_MARKERS)
HARMONY_SET = marker_set(HARMONY_MARKERS)
HARMONY_SPLIT_RE = re.compile(f"({HARMONY_SET.pattern.pattern})")


def remove_all(pattern: re.Pattern[str], text: str) -> str:
    """Remove markers until none is left, including ones a removal joined together."""
    while True:
        text, count = pattern.subn("", text)
        if not count:
            return text


def prefix_start(text: str, lo: int, markers: MarkerSet) -> int:
    """Where the longest tail of ``text`` (starting at ``lo`` or later) that could still
    grow into a marker starts; ``len(text)`` if none could."""
    first, prefixes = markers.first, markers.prefixes
    for i in range(lo, len(text)):
        if text[i] in first and text[i:] in prefixes:
            return i
    return len(text)


def chain_start(text: str, markers: MarkerSet) -> int:
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
