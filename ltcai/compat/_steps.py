"""The named post-processing steps (SPEC.md §3), whole text, and their registry.

Every step has a whole-text function, which is the definition, and may have a streaming
twin (``_stages``) that gives the same text for any split of the answer into chunks.
Marker removal runs to a fixpoint (removing ``<s>`` from ``<|im_<s>end|>`` makes a new
marker, which goes too), so no listed marker survives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import structlog

from ._marker_match import BAD_SET, USER_TURN_SET, remove_all
from ._markers import LEADING_ROLE_RE
from ._stages import StreamStage, StripRoleTokensStage, TrimAfterUserMarkerStage

__all__ = [
    "POSTPROCESSORS",
    "Postprocessor",
    "apply_postprocess",
    "run_step",
    "strip_role_tokens",
    "trim_after_user_marker",
]

_log = structlog.get_logger(__name__)


def strip_role_tokens(text: str) -> str:
    """Remove role/special tokens, then one leading ``user:``-style prefix, then trim.

    The answer a user sees must not carry the chat template's framing, whichever
    template the model was trained on.
    """
    text = remove_all(BAD_SET.pattern, text)
    text = LEADING_ROLE_RE.sub("", text, count=1)
    return text.strip()


def trim_after_user_marker(text: str) -> str:
    """Cut the answer where the model ran on into the next user turn, then trim.

    A marker at position 0 is not a run-on (nothing was answered before it); the first
    marker found after it is where the answer ends.
    """
    match = USER_TURN_SET.pattern.search(text, 1)
    if match is not None:
        text = text[: match.start()]
    return text.strip()


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


def run_step(name: str, step: Callable[[str], str], text: str, log: Any) -> str:
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
        text = run_step(name, step, text, logger)
    return text


POSTPROCESSORS: Mapping[str, Callable[[str], str]] = MappingProxyType(
    {
        "strip_role_tokens": Postprocessor(strip_role_tokens, StripRoleTokensStage),
        "trim_after_user_marker": Postprocessor(trim_after_user_marker, TrimAfterUserMarkerStage),
    }
)
