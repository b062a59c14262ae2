"""Stop sequences: the one rule for merging stop lists (profile layers, request stops).

How many an engine is sent is the engine's rule (``RequestRules.max_stop``); ltcai
enforces every stop itself on the output (``_turns``, through ``clean_answer`` /
``AnswerStream`` given the request's full stop list).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["merge_stops"]


def merge_stops(*lists: Iterable[str]) -> tuple[str, ...]:
    """Union of stop lists: first occurrence keeps its place, empty strings dropped."""
    return tuple(dict.fromkeys(s for stops in lists for s in stops if s))
